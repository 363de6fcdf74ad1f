import hashlib
import json
import os
import random
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from explore.cli import main
from explore.errors import ConfigError, ExploreError
from explore.train import checkpoint, loop
from explore.train.config import TrainConfig, load_train_config

ROOT = Path(__file__).resolve().parents[2]

# A few dozen steps in two stages, a checkpoint every 4 steps, validation only at the end of a stage.
LONG = {"stages": [{"name": "pretrain", "steps": 16, "batch_size": 4, "lr": 1e-3, "warmup_steps": 2,
                    "trainable": ["vision", "qformer", "query_tokens", "projection", "lm"],
                    "tasks": {"vqa": 0.6, "caption": 0.2, "judge": 0.2}},
                   {"name": "instruction-tuning", "steps": 12, "batch_size": 4, "lr": 5e-4, "warmup_steps": 1,
                    "schedule": "linear", "trainable": ["qformer", "query_tokens", "projection"],
                    "tasks": {"vqa": 0.6, "caption": 0.2, "judge": 0.2}}],
        "eval": {"every": 1000, "vqa": 2, "judge": 2, "caption": 1, "batch_size": 4},
        "checkpoint_every": 4}  # fmt: skip
LONG_STEPS, EVERY = 28, 4


def tiny_config(tmp_path: Path, **changes) -> TrainConfig:
    data = yaml.safe_load((ROOT / "configs/pretrain/tiny-t5.yaml").read_text())
    data["output_dir"] = str(tmp_path / "run")
    data.update(changes)
    return TrainConfig.model_validate(data)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def assert_bit_identical(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert expected.keys() == actual.keys()
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def run_cli(monkeypatch, *args: str) -> int:
    """``explore *args`` in this process; the exit code."""
    monkeypatch.setattr(sys, "argv", ["explore", *args])
    try:
        main()
    except SystemExit as exit:
        return int(exit.code)
    return 0


def files_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """The LONG config as a YAML file and the final weights of its uninterrupted run."""
    folder = tmp_path_factory.mktemp("long")
    data = yaml.safe_load((ROOT / "configs/pretrain/tiny-t5.yaml").read_text())
    data.update(LONG, output_dir=str(folder / "reference"))
    path = folder / "long.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, _weights(loop.pretrain(load_train_config(path), progress=False))


def test_shipped_configs_validate():
    for path in (ROOT / "configs/pretrain").glob("*.yaml"):
        load_train_config(path)


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"checkpoint_evry": 3}, "unknown key 'checkpoint_evry'; allowed keys here: checkpoint_every, data, eval"),
        ({"model": {"preset": "tiny-t5", "sed": 1}}, "unknown key 'model.sed'; allowed keys here: init_components, init_from, preset, seed"),
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


def test_sigkill_at_a_random_step_then_resume_latest_is_bit_identical(long_run, tmp_path, monkeypatch, run_killed):
    path, reference = long_run
    kill_at = random.Random(6).randint(EVERY + 1, LONG_STEPS - 1)  # a seeded random step with a checkpoint before it
    out = tmp_path / "run"
    killed = run_killed(kill_at, "pretrain", "--config", str(path), "--output-dir", str(out))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (out / "model").exists()
    done = kill_at - 1  # steps finished before the kill
    latest = checkpoint.complete_checkpoints(out / "checkpoints")[-1]
    assert latest.name == f"step-{done - done % EVERY:07d}"
    assert run_cli(monkeypatch, "pretrain", "--config", str(path), "--output-dir", str(out), "--resume", "latest") == 0
    assert_bit_identical(reference, _weights(out / "model"))


def test_a_crash_while_writing_a_checkpoint_resumes_from_the_previous_one(long_run, tmp_path, monkeypatch):
    path, reference = long_run
    config = load_train_config(path).model_copy(update={"output_dir": str(tmp_path / "run")})
    real_replace = os.replace

    def crash_before_renaming_step_12(src, dst):
        if Path(src).name == ".tmp-step-0000012":
            raise KeyboardInterrupt  # step 12's checkpoint is written to its temporary folder, not yet in place
        real_replace(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", crash_before_renaming_step_12)
    with pytest.raises(KeyboardInterrupt):
        loop.pretrain(config, progress=False)
    monkeypatch.setattr(checkpoint.os, "replace", real_replace)
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == [".tmp-step-0000012", "step-0000008"]
    assert checkpoint.find_checkpoint("latest", root).name == "step-0000008"
    assert_bit_identical(reference, _weights(loop.pretrain(config, resume="latest", progress=False)))
    assert sorted(p.name for p in root.iterdir()) == ["step-0000028"]  # the leftover is cleaned, old ones go


def test_resume_errors(tmp_path):
    config = tiny_config(tmp_path)
    with pytest.raises(ExploreError, match="nothing to resume .*no such folder"):
        loop.pretrain(config, resume="latest", progress=False)
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    with pytest.raises(ExploreError, match="nothing to resume .*no complete checkpoint"):
        loop.pretrain(config, resume="latest", progress=False)
    with pytest.raises(ExploreError, match="no such folder"):
        loop.pretrain(config, resume=str(tmp_path / "nope"), progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExploreError, match="not a complete checkpoint"):
        loop.pretrain(config, resume=str(tmp_path / "empty"), progress=False)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run (its checkpoint at step 10) and its config."""
    config = tiny_config(tmp_path_factory.mktemp("finished"))
    loop.pretrain(config, progress=False)
    return config


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda d: d["model"].update(preset="tiny-llama"), "model.preset = 'tiny-t5'"),
        (lambda d: d["stages"][1].update(lr=1e-4), "stages[1].lr = 0.0005"),
        (lambda d: d["stages"][0]["trainable"].remove("vision"), "stages[0].trainable"),
        (lambda d: d["data"].update(world_seed=1), "data.world_seed = 0"),
        (lambda d: d.update(seed=1), "seed = 0"),
    ],
    ids=["preset", "stage-lr", "stage-components", "world-seed", "seed"],
)
def test_resume_refuses_a_config_that_does_not_match_the_checkpoint(finished_run, change, key):
    data = finished_run.model_dump()
    change(data)
    with pytest.raises(ExploreError) as err:
        loop.pretrain(TrainConfig.model_validate(data), resume="latest", progress=False)
    message = str(err.value)
    assert key in message and "was written with" in message and "\n" not in message, message


def test_resume_accepts_other_eval_and_checkpoint_settings(finished_run):
    config = finished_run.model_copy(
        update={"checkpoint_every": 7, "eval": finished_run.eval.model_copy(update={"vqa": 3})}
    )
    assert loop.pretrain(config, resume="latest", progress=False).is_dir()  # nothing left to train: saves the model


@pytest.mark.parametrize("section", ["stage", "data"])
def test_resume_accepts_a_field_added_later_at_its_default_only(finished_run, tmp_path, section):
    """A checkpoint written before a config field existed resumes while the field holds its default (every new
    option keeps the old behaviour there); set otherwise, the run is another one and is refused."""
    step = checkpoint.complete_checkpoints(Path(finished_run.output_dir) / "checkpoints")[-1]
    older = shutil.copytree(step, tmp_path / step.name)
    saved = json.loads((older / checkpoint.RUN_FILE).read_text())
    field, changed = (("avoid_held_out_pairs", True), ("noise", 2.0))[section == "data"]
    where = saved["config"]["stages"][1] if section == "stage" else saved["config"]["data"]
    del where[field]
    (older / checkpoint.RUN_FILE).write_text(json.dumps(saved))
    checkpoint.check_run(older, loop.resume_identity(finished_run, older))  # the default: the same run
    data = finished_run.model_dump()
    (data["stages"][1] if section == "stage" else data["data"])[field] = changed
    config = TrainConfig.model_validate(data)
    with pytest.raises(ExploreError, match=f"{field} = '<absent>'"):
        checkpoint.check_run(older, loop.resume_identity(config, older))


def test_resume_refuses_a_finetune_checkpoint(finished_run, tmp_path):
    step = checkpoint.complete_checkpoints(Path(finished_run.output_dir) / "checkpoints")[-1]
    other = tmp_path / "step-0000010"
    other.mkdir()
    for name in ("trainer_state.json", "run_config.json"):
        (other / name).write_bytes((step / name).read_bytes())
    (other / "run_config.json").write_text('{"kind": "finetune", "config": {}}')
    with pytest.raises(ExploreError, match="is from `explore finetune`, not `explore pretrain`"):
        loop.pretrain(finished_run, resume=str(other), progress=False)


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_non_finite_values_stop_training_and_keep_the_last_good_checkpoint(tmp_path, monkeypatch, where):
    config = tiny_config(tmp_path).model_copy(update={"checkpoint_every": 2})
    bad_step, steps, saved = 5, [0], {}
    real_collate, real_save = loop.collate, loop.save_checkpoint

    def collate(*args, **kwargs):  # training batches only (validation has its own collate)
        steps[0] += 1
        batch = real_collate(*args, **kwargs)
        if where == "loss" and steps[0] == bad_step:
            batch["pixel_values"][0, 0, 0, 0] = float("nan")
        return batch

    def build_fresh(config):
        model, processor = real_build(config)
        model.query_tokens.register_hook(lambda grad: grad * float("inf") if steps[0] == bad_step else grad)
        return model, processor

    def save(root, step, **kwargs):
        path = real_save(root, step, **kwargs)
        saved[path.name] = files_digest(path)
        return path

    real_build = loop.build_fresh
    monkeypatch.setattr(loop, "collate", collate)
    monkeypatch.setattr(loop, "save_checkpoint", save)
    if where == "gradient":
        monkeypatch.setattr(loop, "build_fresh", build_fresh)
    with pytest.raises(ExploreError) as err:
        loop.pretrain(config, progress=False)
    message = str(err.value)
    assert f"non-finite {where}" in message and f"at step {bad_step} " in message and "\n" not in message, message
    root = Path(config.output_dir) / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step-0000004"] and not (Path(config.output_dir) / "model").exists()
    assert files_digest(root / "step-0000004") == saved["step-0000004"]  # byte for byte as written at step 4
    weights = load_file(root / "step-0000004" / "model" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values())


def test_same_seed_same_weights_other_seed_other_weights(finished_run, tmp_path):
    reference = _weights(Path(finished_run.output_dir) / "model")
    again = loop.pretrain(finished_run.model_copy(update={"output_dir": str(tmp_path / "a")}), progress=False)
    assert_bit_identical(reference, _weights(again))
    model = finished_run.model.model_copy(update={"seed": 1})
    other = loop.pretrain(finished_run.model_copy(update={"model": model, "output_dir": str(tmp_path / "b")}),
                          progress=False)  # fmt: skip
    assert not torch.equal(reference["query_tokens"], _weights(other)["query_tokens"])
