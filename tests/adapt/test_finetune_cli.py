"""``explore finetune`` on a tiny model folder: adapter or merged model, run info, one-line errors."""

import json
import random
import signal
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file

from explore.adapt.adapters import ADAPTER_FILES, load_adapter
from explore.cli import main
from explore.models.loading import load_model, save_model

CONFIG = {"method": "lora", "components": ["qformer"], "steps": 3, "batch_size": 2, "warmup_steps": 1,
          "tasks": {"vqa": 1.0}, "max_length": 32}  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from explore.models.build import build_model, build_processor
    from explore.models.tokenizer import build_word_tokenizer
    from explore.world.vocabulary import vocabulary

    words = vocabulary()
    tokenizer, qformer_tokenizer = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    folder = tmp_path_factory.mktemp("model") / "tiny"
    processor = build_processor("tiny-t5", tokenizer, qformer_tokenizer)
    return save_model(build_model("tiny-t5", tokenizer, seed=0), processor, folder)


def run(monkeypatch, *args) -> int:
    """Run the CLI in this process (a subprocess would spend seconds importing torch); return the exit code."""
    monkeypatch.setattr(sys, "argv", ["explore", *args])
    try:
        main()
    except SystemExit as exit:
        return int(exit.code)
    return 0


def write_config(tmp_path, **changes):
    path = tmp_path / "ft.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, **changes}))
    return path


def test_finetune_writes_a_self_describing_adapter_folder(model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "adapter"
    assert run(monkeypatch, "finetune", "--model", str(model_dir), "--config", str(write_config(tmp_path)),
               "--output", str(out)) == 0  # fmt: skip
    names = {p.name for p in out.iterdir()}
    assert set(ADAPTER_FILES) | {"processor_config.json", "config.yaml", "run.json", "finetune_log.json"} <= names
    assert "model.safetensors" not in names and "config.json" not in names  # no base weights
    log = json.loads((out / "finetune_log.json").read_text())
    assert log["steps"] == 3 and len(log["losses"]) == 3 and log["method"] == "lora"
    assert yaml.safe_load((out / "config.yaml").read_text())["finetune"]["steps"] == 3
    assert "wrote the adapter" in capsys.readouterr().out
    base, _ = load_model(model_dir)
    assert load_adapter(base, out) is not None


def test_finetune_merge_writes_a_plain_model_folder(model_dir, tmp_path, monkeypatch):
    out = tmp_path / "merged"
    assert run(monkeypatch, "finetune", "--model", str(model_dir), "--config", str(write_config(tmp_path)),
               "--output", str(out), "--merge") == 0  # fmt: skip
    merged, processor = load_model(out)
    base, _ = load_model(model_dir)
    assert processor.num_query_tokens == 4 and not any("lora" in name for name, _ in merged.named_parameters())
    diffs = [
        not torch.equal(a, b) for (_, a), (_, b) in zip(merged.named_parameters(), base.named_parameters(), strict=True)
    ]
    assert any(diffs)  # the adapter was folded into the weights


def test_finetune_distills_from_a_teacher_folder(model_dir, tmp_path, monkeypatch):
    out = tmp_path / "distilled"
    config = write_config(tmp_path, distill_weight=0.5, steps=2)
    assert run(monkeypatch, "finetune", "--model", str(model_dir), "--config", str(config), "--output", str(out),
               "--distill-from", str(model_dir)) == 0  # fmt: skip
    assert json.loads((out / "finetune_log.json").read_text())["distill_loss_start"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(
    "changes, extra, message",
    [
        ({"lora_rnk": 4}, [], "unknown key 'lora_rnk'; allowed keys here:"),
        ({"distill_weight": 0.5}, [], "pass the teacher with --distill-from"),
        ({}, ["--distill-from", "embedded"], "--distill-from needs distill_weight > 0"),
        ({"method": "qlora", "components": ["lm"]}, ["--merge"], "--merge cannot fold a QLoRA adapter"),
    ],
)
def test_finetune_errors_are_one_line(model_dir, tmp_path, monkeypatch, capsys, changes, extra, message):
    code = run(monkeypatch, "finetune", "--model", str(model_dir), "--config", str(write_config(tmp_path, **changes)),
               "--output", str(tmp_path / "out"), *extra)  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "out").exists()


def test_sigkill_at_a_random_step_then_resume_latest_is_bit_identical(model_dir, tmp_path, monkeypatch, run_killed):
    """A few dozen steps of LoRA with dropout on two components, a checkpoint every 3 steps, killed with SIGKILL."""
    config = write_config(tmp_path, components=["qformer", "lm"], steps=24, warmup_steps=2, lora_dropout=0.1,
                          tasks={"vqa": 0.6, "caption": 0.4}, checkpoint_every=3)  # fmt: skip
    args = ["finetune", "--model", str(model_dir), "--config", str(config)]
    assert run(monkeypatch, *args, "--output", str(tmp_path / "reference")) == 0

    kill_at = random.Random(6).randint(4, 23)  # a seeded random step with a checkpoint before it
    out = tmp_path / "killed"
    killed = run_killed(kill_at, *args, "--output", str(out))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not out.exists()
    done = kill_at - 1
    assert [p.name for p in (tmp_path / "killed-checkpoints").iterdir()] == [f"step-{done - done % 3:07d}"]
    assert run(monkeypatch, *args, "--output", str(out), "--resume", "latest") == 0

    expected, resumed = (load_file(folder / "adapter_model.safetensors") for folder in (tmp_path / "reference", out))
    assert expected.keys() == resumed.keys() and all(torch.equal(expected[k], resumed[k]) for k in expected)
    logs = [json.loads((folder / "finetune_log.json").read_text()) for folder in (tmp_path / "reference", out)]
    assert logs[0]["losses"] == logs[1]["losses"] and len(logs[1]["losses"]) == 24


@pytest.mark.parametrize(
    "resume, message",
    [("latest", "nothing to resume in"), ("nowhere", "--resume nowhere: no such folder")],
    ids=["latest-without-checkpoints", "wrong-path"],
)
def test_finetune_resume_errors_are_one_line(model_dir, tmp_path, monkeypatch, capsys, resume, message):
    code = run(monkeypatch, "finetune", "--model", str(model_dir), "--config", str(write_config(tmp_path)),
               "--output", str(tmp_path / "out"), "--resume", resume)  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.strip().count("\n") == 0, err
    assert not (tmp_path / "out").exists()
