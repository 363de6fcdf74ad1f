from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from explore.errors import ConfigError, ExploreError
from explore.train import loop
from explore.train.config import TrainConfig, load_train_config

ROOT = Path(__file__).resolve().parents[2]


def tiny_config(tmp_path: Path, **changes) -> TrainConfig:
    data = yaml.safe_load((ROOT / "configs/pretrain/tiny-t5.yaml").read_text())
    data["output_dir"] = str(tmp_path / "run")
    data.update(changes)
    return TrainConfig.model_validate(data)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def test_shipped_configs_validate():
    for path in (ROOT / "configs/pretrain").glob("*.yaml"):
        load_train_config(path)


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"checkpoint_evry": 3}, "unknown key 'checkpoint_evry'; allowed keys here: checkpoint_every, data, eval"),
        ({"model": {"preset": "tiny-t5", "sed": 1}}, "unknown key 'model.sed'; allowed keys here: preset, seed"),
        ({"eval": {"every": -1}}, "invalid value for 'eval.every'"),
    ],
)
def test_config_errors_are_one_line(tmp_path, patch, message):
    data = yaml.safe_load((ROOT / "configs/pretrain/tiny-t5.yaml").read_text())
    data.update(patch)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_stage_errors(tmp_path):
    data = yaml.safe_load((ROOT / "configs/pretrain/tiny-t5.yaml").read_text())
    data["stages"][0]["trainable"] = ["vision", "decoder"]
    with pytest.raises(Exception, match="unknown components"):
        TrainConfig.model_validate(data)
    with pytest.raises(ConfigError, match="config file not found"):
        load_train_config(tmp_path / "missing.yaml")


def test_pretrain_runs_validates_and_saves(tmp_path):
    config = tiny_config(tmp_path)
    final = loop.pretrain(config, progress=False)
    assert (final / "model.safetensors").is_file() and (final / "processor_config.json").is_file()
    run = Path(config.output_dir)
    assert (run / "config.yaml").is_file() and (run / "run.json").is_file()
    log = (run / "train_log.jsonl").read_text()
    assert '"validation"' in log and '"stage": "instruction-tuning"' in log
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-0000010"]


def test_instruction_tuning_freezes_vision_and_lm(tmp_path):
    config = tiny_config(tmp_path)
    first = config.model_copy(update={"stages": config.stages[:1], "output_dir": str(tmp_path / "a")})
    after_first = _weights(loop.pretrain(first, progress=False))
    after_both = _weights(loop.pretrain(config, progress=False))
    changed = {k for k in after_both if not torch.equal(after_first[k], after_both[k])}
    assert changed, "stage 2 trained nothing"
    assert all(k.startswith(("qformer.", "query_tokens", "language_projection.")) for k in changed), changed


def test_resume_after_interruption_is_exact(tmp_path, monkeypatch):
    reference = _weights(loop.pretrain(tiny_config(tmp_path / "ref"), progress=False))

    config = tiny_config(tmp_path / "killed")
    real_save = loop.save_checkpoint

    def save_then_die(root, *args, **kwargs):
        path = real_save(root, *args, **kwargs)
        if path.name == "step-0000006":
            raise KeyboardInterrupt  # killed right after the checkpoint at step 6 (end of stage 1)
        return path

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        loop.pretrain(config, progress=False)
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    resumed = _weights(loop.pretrain(config, resume="latest", progress=False))
    assert reference.keys() == resumed.keys()
    for name in reference:
        assert torch.equal(reference[name], resumed[name]), name


def test_resume_errors(tmp_path):
    config = tiny_config(tmp_path)
    with pytest.raises(ExploreError, match="no complete checkpoint"):
        loop.pretrain(config, resume="latest", progress=False)
    with pytest.raises(ExploreError, match="no such folder"):
        loop.pretrain(config, resume=str(tmp_path / "nope"), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExploreError, match="not a complete checkpoint"):
        loop.pretrain(config, resume=str(tmp_path / "empty"), progress=False)
