"""The objects stage: vision pretraining of the ViT alone with per-object heads (explore.train.objects)."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from explore.train import loop
from explore.train.config import TrainConfig
from explore.train.objects import ATTRIBUTES, object_targets
from explore.world.scene import Obj, Scene

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = {"name": "vision", "objective": "objects", "steps": 8, "batch_size": 8, "lr": 3e-3, "warmup_steps": 1,
           "schedule": "constant", "trainable": ["vision"]}  # fmt: skip


def config_with(tmp_path: Path, stages: list[dict], **changes) -> TrainConfig:
    data = yaml.safe_load((ROOT / "configs/pretrain/tiny-t5.yaml").read_text())
    data.update(stages=stages, output_dir=str(tmp_path / "run"), checkpoint_every=4, **changes)
    data["eval"] = {**data["eval"], "objects": 16, "every": 1000}
    return TrainConfig.model_validate(data)


def test_targets_name_the_token_under_each_object():
    scene = Scene(objects=(Obj("star", "red", "large", x=0.9, y=0.1), Obj("circle", "blue", "small", x=0.1, y=0.6)))
    rows, tokens, labels = object_targets([scene], grid=2)
    assert rows.tolist() == [0, 0]
    assert tokens.tolist() == [1 + 0 * 2 + 1, 1 + 1 * 2 + 0]  # top right patch, bottom left patch (+ class token)
    assert [ATTRIBUTES["shape"][i] for i in labels["shape"]] == ["star", "circle"]
    assert [ATTRIBUTES["position"][i] for i in labels["position"]] == ["top right", "left"]


@pytest.mark.parametrize(
    "change, message",
    [({"trainable": ["vision", "lm"]}, "trains the vision encoder alone"),
     ({"tasks": {"vqa": 1.0}}, "trains the vision encoder alone"),
     ({"objective": "language"}, "needs tasks")],
)  # fmt: skip
def test_stage_objective_is_validated(tmp_path, change, message):
    with pytest.raises(Exception, match=message):
        config_with(tmp_path, [{**OBJECTS, **change}])


def test_objects_stage_trains_only_the_vit_and_learns(tmp_path):
    config = config_with(tmp_path, [{**OBJECTS, "steps": 30}])
    fresh, _ = loop.build_fresh(config)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    final = loop.pretrain(config, progress=False)
    after = load_file(final / "model.safetensors")
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("vision_model.") for k in changed), changed
    assert not any("head" in k for k in after)  # the heads are not part of the model
    log = [json.loads(line) for line in (Path(config.output_dir) / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert sum(losses[-3:]) / 3 < 0.8 * losses[0]
    (validation,) = [r["validation"]["objects"] for r in log if "validation" in r]
    assert set(validation) == {*ATTRIBUTES, "overall"} and validation["colour"] > 1 / len(ATTRIBUTES["colour"])


def test_objects_then_language_resumes_mid_objects_stage_exactly(tmp_path, monkeypatch):
    language = yaml.safe_load((ROOT / "configs/pretrain/tiny-t5.yaml").read_text())["stages"][0]
    stages = [OBJECTS, {**language, "steps": 4}]
    reference = load_file(loop.pretrain(config_with(tmp_path / "ref", stages), progress=False) / "model.safetensors")

    config = config_with(tmp_path / "killed", stages)
    real_save = loop.save_checkpoint

    def save_then_die(root, *args, **kwargs):
        path = real_save(root, *args, **kwargs)
        if path.name == "step-0000004":
            raise KeyboardInterrupt  # killed in the middle of the objects stage
        return path

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        loop.pretrain(config, progress=False)
    assert (Path(config.output_dir) / "checkpoints/step-0000004/object_heads.safetensors").is_file()
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    resumed = load_file(loop.pretrain(config, resume="latest", progress=False) / "model.safetensors")
    different = [k for k in reference if not torch.equal(reference[k], resumed[k])]
    assert not different, different[:3]
