"""Fixtures of the training tests."""

from pathlib import Path

import pytest
import yaml

from explore.train.config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def tiny_config():
    """``make(folder, stages, **top)``: configs/pretrain/tiny-t5.yaml with ``stages``, ``top``-level changes and
    ``folder/run`` as its output."""
    data = yaml.safe_load((ROOT / "configs/pretrain/tiny-t5.yaml").read_text())

    def make(folder: Path, stages: list[dict], **top) -> TrainConfig:
        return TrainConfig.model_validate({**data, "stages": stages, "output_dir": str(folder / "run"), **top})

    return make
