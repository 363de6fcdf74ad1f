"""Faults beyond kills while training: a disk that fills up while a checkpoint is saved, and a damaged
checkpoint on resume. Each ends in one line, and what was saved before stays loadable."""

import errno
import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from explore.errors import ExploreError
from explore.models.loading import load_model
from explore.train import checkpoint
from explore.train.checkpoint import MANIFEST_FILE, find_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[2]


def test_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch, explore_cli):
    data = yaml.safe_load((ROOT / "configs/pretrain/tiny-t5.yaml").read_text())
    data["eval"]["every"] = 1000
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "run"
    real_fsync = os.fsync

    def disk_fills_at_step_6(fd):
        if ".tmp-step-0000006" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_fills_at_step_6)
    code, _, err = explore_cli("pretrain", "--config", str(path), "--output-dir", str(out))
    monkeypatch.setattr(os, "fsync", real_fsync)
    root = out / "checkpoints"
    assert code == 2, err
    assert err.strip().splitlines()[-1] == (
        f"error: cannot write checkpoint step-0000006 in {root}: No space left on device; the previous checkpoint "
        f"{root / 'step-0000003'} is kept (--resume latest continues from it); free space or choose a writable "
        "output folder"
    )
    assert "Traceback" not in err
    assert sorted(p.name for p in root.iterdir()) == ["step-0000003"]  # nothing half-written left
    assert find_checkpoint("latest", root).name == "step-0000003"
    load_model(root / "step-0000003" / "model")  # loadable: safetensors, finite weights
    code, _, err = explore_cli("pretrain", "--config", str(path), "--output-dir", str(out), "--resume",
                        "latest")  # fmt: skip
    assert code == 0, err
    assert (out / "model" / "model.safetensors").is_file()


def _save(root: Path, step: int, layer: torch.nn.Linear, keep: int = 3) -> Path:
    optimizer = torch.optim.AdamW(layer.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)

    def write_weights(folder: Path) -> None:
        save_file(layer.state_dict(), folder / "w.safetensors")

    return save_checkpoint(root, step, write_weights=write_weights, optimizer=optimizer, scheduler=scheduler,
                           state={"global_step": step}, run={"kind": "test", "config": {}}, keep=keep)  # fmt: skip


@pytest.mark.parametrize("damage", ["truncated weights", "flipped byte", "missing optimizer", "state not JSON"])
def test_a_damaged_checkpoint_is_skipped_for_the_one_before_with_a_warning(tmp_path, caplog, damage):
    layer = torch.nn.Linear(4, 4)
    root = tmp_path / "checkpoints"
    good = _save(root, 2, layer)
    newest = _save(root, 4, layer)
    weights = newest / "w.safetensors"
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:-10])
    elif damage == "flipped byte":
        data = bytearray(weights.read_bytes())
        data[-1] ^= 0xFF
        weights.write_bytes(bytes(data))
    elif damage == "missing optimizer":
        (newest / "optimizer.pt").unlink()
    else:
        (newest / checkpoint.STATE_FILE).write_text('{"global_step": 4, "da')
    with caplog.at_level("WARNING"):
        assert find_checkpoint("latest", root) == good
    (record,) = caplog.records
    assert record.getMessage().startswith(f"warning: skipping damaged checkpoint {newest} (")
    assert load_file(good / "w.safetensors").keys() == layer.state_dict().keys()
    with pytest.raises(ExploreError, match=r"--resume .*step-0000004: the checkpoint is damaged \("):
        find_checkpoint(str(newest), root)


def test_a_resume_with_another_cpu_thread_count_is_warned_about(tmp_path, caplog):
    """Session 36: a run killed at step 800 and resumed with two threads instead of one drifted from the
    uninterrupted run from the next logged step on; the checkpoint records its thread count, a resume with another
    is warned about (and still allowed), one with the same is silent."""
    threads = torch.get_num_threads()
    saved = _save(tmp_path / "checkpoints", 2, torch.nn.Linear(2, 2))
    assert json.loads((saved / checkpoint.RUN_FILE).read_text())["cpu_threads"] == threads
    with caplog.at_level("WARNING"):
        checkpoint.check_run(saved, {"kind": "test", "config": {}})
    assert not caplog.records
    torch.set_num_threads(threads + 1)
    try:
        with caplog.at_level("WARNING"):
            checkpoint.check_run(saved, {"kind": "test", "config": {}})
    finally:
        torch.set_num_threads(threads)
    (record,) = caplog.records
    assert record.getMessage() == (
        f"warning: checkpoint {saved} was written by a run with {threads} CPU threads, this one has {threads + 1}: it "
        "resumes, but not bit-identical to an uninterrupted run (float sums change order); for that, resume with "
        f"OMP_NUM_THREADS={threads}"
    )


def test_every_checkpoint_damaged_is_one_error(tmp_path):
    layer = torch.nn.Linear(2, 2)
    root = tmp_path / "checkpoints"
    for step in (1, 2):
        (_save(root, step, layer) / "w.safetensors").write_bytes(b"")
    with pytest.raises(ExploreError, match="every checkpoint in .* is damaged .*start without --resume"):
        find_checkpoint("latest", root)


def test_a_checkpoint_lists_every_file_in_its_manifest(tmp_path):
    folder = _save(tmp_path / "checkpoints", 1, torch.nn.Linear(2, 2))
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    files = {p.name for p in folder.iterdir()} - {MANIFEST_FILE, checkpoint.STATE_FILE}
    assert set(manifest) == files and all(entry["bytes"] > 0 for entry in manifest.values())


def _tmpfs(folder: Path, size: str) -> bool:
    """Mount a tmpfs of ``size`` on ``folder``: a real disk that fills up (needs root; False where refused)."""
    import subprocess

    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True,
                          check=False)  # fmt: skip
    return done.returncode == 0


@pytest.mark.parametrize("size", ["400k", "550k"])
def test_a_real_full_disk_is_one_line_and_leaves_only_loadable_checkpoints(tmp_path, monkeypatch, explore_cli, size):
    """On a real small disk (a tmpfs) the run fills it wherever it does (a checkpoint, a log line, the model):
    one line saying so, exit 2, and every checkpoint left is complete and loads."""
    import subprocess

    data = yaml.safe_load((ROOT / "configs/pretrain/tiny-t5.yaml").read_text())
    data["eval"]["every"] = 1000
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    disk = tmp_path / "disk"
    if not _tmpfs(disk, size):
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        code, _, err = explore_cli("pretrain", "--config", str(path), "--output-dir", str(disk / "run"))
        assert code == 2, err
        (line,) = err.strip().splitlines()
        assert line.startswith("error: cannot write ") and "No space left on device" in line, line
        root = disk / "run" / "checkpoints"
        left = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        assert all(name.startswith("step-") for name in left), left  # nothing half-written
        for name in left:
            assert checkpoint.checkpoint_problem(root / name) is None
            load_model(root / name / "model")
    finally:
        subprocess.run(["umount", str(disk)], check=False)
