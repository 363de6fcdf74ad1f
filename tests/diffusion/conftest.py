"""Tiny diffusion models built from config, offline."""

from pathlib import Path

import pytest
import torch

from explore.diffusion.build import build_pipeline
from explore.diffusion.config import load_diffusion_config

TINY = Path(__file__).resolve().parents[2] / "configs" / "diffusion" / "tiny.yaml"


@pytest.fixture
def tiny_config(tmp_path):
    config = load_diffusion_config(TINY)
    return config.model_copy(update={"output_dir": str(tmp_path / "run")})


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """An untrained tiny pipeline saved with save_pretrained (what --checkpoint points at)."""
    folder = tmp_path_factory.mktemp("tiny-pipeline")
    torch.manual_seed(0)
    build_pipeline(load_diffusion_config(TINY)).save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_features():
    """VisionFeatures over a tiny random InstructBLIP vision encoder (64 px, 2 layers)."""
    from transformers import InstructBlipVisionConfig, InstructBlipVisionModel

    from explore.diffusion.features import VisionFeatures

    torch.manual_seed(0)
    config = InstructBlipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                      image_size=64, patch_size=8)  # fmt: skip
    return VisionFeatures(InstructBlipVisionModel(config), image_size=64, layers=(1, 2))
