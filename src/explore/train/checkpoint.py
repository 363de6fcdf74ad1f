"""Resumable training checkpoints, written atomically.

A checkpoint folder ``checkpoints/step-NNNNNNN/`` holds:

- ``model/``: the model and processor via ``save_pretrained`` (safetensors);
- ``optimizer.pt``, ``scheduler.pt``: their state dicts (tensors and numbers only; read back with
  ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects);
- ``rng.safetensors``: the torch RNG state;
- ``trainer_state.json``: global step, stage, step within the stage, data position; written last.

It is written to a hidden temporary folder and renamed into place when complete, and older
checkpoints are deleted only after the new one is in place, so a crash at any moment leaves the
last complete checkpoint intact. Only the main process writes (transformers#27925).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from explore.errors import ExploreError

STATE_FILE = "trainer_state.json"


@dataclass
class TrainerState:
    """Where training stands: enough to continue exactly where it stopped."""

    global_step: int = 0  # optimizer steps done in all stages
    stage: int = 0  # index of the current stage
    stage_step: int = 0  # optimizer steps done in the current stage
    data_position: int = 0  # index of the next training example in the world stream


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:07d}"


def save_checkpoint(root: Path, model, processor, optimizer, scheduler, state: TrainerState, keep: int = 1) -> Path:
    """Write a checkpoint under ``root`` atomically and keep only the newest ``keep`` of them."""
    root.mkdir(parents=True, exist_ok=True)
    final = _step_dir(root, state.global_step)
    tmp = root / f".tmp-{final.name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    model.save_pretrained(tmp / "model")  # transformers >= 5 always writes safetensors
    processor.save_pretrained(tmp / "model")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    save_file({"torch": torch.get_rng_state()}, tmp / "rng.safetensors")
    (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=2))
    if final.exists():  # a checkpoint of the same step from an earlier, interrupted run
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in complete_checkpoints(root)[:-keep]:
        shutil.rmtree(old)
    return final


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temporary and partial folders skipped)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith("step-") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def find_checkpoint(resume: str, run_dir: Path) -> Path:
    """Resolve ``--resume``: ``latest`` (newest complete checkpoint of ``run_dir``) or a folder."""
    if resume == "latest":
        found = complete_checkpoints(run_dir / "checkpoints")
        if not found:
            raise ExploreError(f"--resume latest: no complete checkpoint under {run_dir / 'checkpoints'}; "
                               "start without --resume or point --resume at a checkpoint folder")  # fmt: skip
        return found[-1]
    path = Path(resume)
    if not path.is_dir():
        raise ExploreError(f"--resume {resume}: no such folder; pass 'latest' or a checkpoints/step-* folder")
    if not (path / STATE_FILE).is_file():
        raise ExploreError(f"--resume {resume}: not a complete checkpoint (no {STATE_FILE}); "
                           "pass 'latest' to use the newest complete one")  # fmt: skip
    return path


def load_trainer_state(path: Path) -> TrainerState:
    return TrainerState(**json.loads((path / STATE_FILE).read_text()))


def load_optimizer_states(path: Path, optimizer, scheduler) -> None:
    """Restore optimizer, scheduler and RNG states from checkpoint ``path``."""
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    torch.set_rng_state(load_file(path / "rng.safetensors")["torch"])
