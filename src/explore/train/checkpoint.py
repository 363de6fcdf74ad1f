"""Resumable training checkpoints, written atomically; shared by ``pretrain`` and ``finetune``.

A checkpoint folder ``<root>/step-NNNNNNN/`` holds:

- the weights, written by the caller's ``write_weights(folder)``: ``model/`` via ``save_pretrained``
  (pretrain) or ``trainable.safetensors`` (finetune: the adapter or the tuned components);
- ``optimizer.pt``, ``scheduler.pt``: their state dicts (tensors and numbers only; read back with
  ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects);
- ``rng.safetensors``: the torch CPU RNG state (and the CUDA ones when there is a GPU);
- ``run_config.json``: what kind of run wrote it and the config that decides its weights, so a
  resume with another config is refused instead of silently training something else;
- ``trainer_state.json``: step, data position and the like; written last.

It is written to a hidden temporary folder and renamed into place when complete; an older
checkpoint is removed only after the new one is in place, by renaming it out of the way first, so
a crash (even SIGKILL) at any moment leaves the last complete checkpoint intact and never leaves a
half-deleted folder that looks complete. Only the main process writes (transformers#27925).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from explore.errors import ExploreError

STATE_FILE = "trainer_state.json"
RUN_FILE = "run_config.json"
PREFIX = "step-"


def step_dir(root: Path, step: int) -> Path:
    """The folder of the checkpoint at ``step`` under ``root``."""
    return root / f"{PREFIX}{step:07d}"


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name[len(PREFIX) :])


def save_checkpoint(
    root: Path,
    step: int,
    *,
    write_weights: Callable[[Path], None],
    optimizer: torch.optim.Optimizer,
    scheduler,
    state: dict,
    run: dict,
    keep: int = 1,
) -> Path:
    """Write the checkpoint of ``step`` under ``root`` atomically; return its folder.

    Args:
        root: the checkpoints folder (created if needed).
        step: optimizer steps done; names the folder.
        write_weights: writes the weights into the folder it is given (safetensors only).
        optimizer, scheduler: saved as state dicts.
        state: JSON-ready trainer state (step, data position, ...), read back by :func:`read_state`.
        run: JSON-ready ``{"kind": ..., "config": ...}`` checked on resume by :func:`check_run`.
        keep: how many of the newest checkpoints up to ``step`` to keep (later ones are left alone).
    """
    root.mkdir(parents=True, exist_ok=True)
    final = step_dir(root, step)
    for stale in [*root.glob(".tmp-*"), *root.glob(".trash-*")]:  # left by a killed run; never complete
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-{final.name}"
    tmp.mkdir()
    write_weights(tmp)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    save_file(_rng_states(), tmp / "rng.safetensors")
    (tmp / RUN_FILE).write_text(json.dumps(run, indent=2, sort_keys=True))
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
    if final.exists():  # a checkpoint of the same step from an earlier, interrupted run
        _discard(final)
    os.replace(tmp, final)
    earlier = [p for p in complete_checkpoints(root) if step_of(p) <= step]
    for old in earlier[: len(earlier) - keep]:
        _discard(old)
    return final


def _discard(folder: Path) -> None:
    """Remove a checkpoint folder: rename it out of the ``step-*`` namespace first, then delete it."""
    trash = folder.parent / f".trash-{folder.name}-{os.getpid()}"
    os.replace(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _rng_states() -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return states


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first (temporary and partial folders skipped)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=step_of)


def find_checkpoint(resume: str, root: Path) -> Path:
    """Resolve ``--resume``: ``latest`` (the newest complete checkpoint under ``root``) or a checkpoint folder.

    Raises ExploreError (one line) when there is no checkpoint to resume from.
    """
    if resume == "latest":
        found = complete_checkpoints(root)
        if not found:
            what = "no such folder" if not root.exists() else "no complete checkpoint in it"
            raise ExploreError(f"--resume latest: nothing to resume in {root} ({what}); "
                               "start without --resume or point --resume at a checkpoint folder")  # fmt: skip
        return found[-1]
    path = Path(resume)
    if path.is_file():
        raise ExploreError(f"--resume {resume}: is a file; pass 'latest' or a checkpoint folder ({root}/step-*)")
    if not path.is_dir():
        raise ExploreError(f"--resume {resume}: no such folder; pass 'latest' or a checkpoint folder ({root}/step-*)")
    if not (path / STATE_FILE).is_file():
        raise ExploreError(f"--resume {resume}: not a complete checkpoint (no {STATE_FILE}); "
                           "pass 'latest' to use the newest complete one")  # fmt: skip
    return path


def read_state(checkpoint: Path) -> dict:
    """The trainer state saved with ``checkpoint``."""
    return json.loads((checkpoint / STATE_FILE).read_text())


def check_run(checkpoint: Path, run: dict) -> None:
    """Raise ExploreError unless ``checkpoint`` was written by a run of the same kind and config as ``run``."""
    path = checkpoint / RUN_FILE
    if not path.is_file():
        raise ExploreError(f"checkpoint {checkpoint} has no {RUN_FILE} (written by an older explore?), so it cannot "
                           "be checked against this config; start a new run without --resume")  # fmt: skip
    saved = json.loads(path.read_text())
    if saved.get("kind") != run["kind"]:
        raise ExploreError(f"checkpoint {checkpoint} is from `explore {saved.get('kind')}`, not `explore {run['kind']}`; "
                           "resume it with the command that wrote it")  # fmt: skip
    now = json.loads(json.dumps(run["config"]))  # tuples → lists, as they were saved
    difference = first_difference(saved.get("config"), now)
    if difference is not None:
        key, before, after = difference
        raise ExploreError(f"checkpoint {checkpoint} was written with {key} = {before!r}, but the config now says "
                           f"{after!r}; resume with the config it was written with, or start a new run "
                           "(another output folder, no --resume)")  # fmt: skip


def first_difference(saved, now, key: str = "config") -> tuple[str, object, object] | None:
    """The first ``(dotted key, saved value, new value)`` where two JSON values differ, or None."""
    if isinstance(saved, dict) and isinstance(now, dict):
        for name in sorted(set(saved) | set(now)):
            found = first_difference(saved.get(name, "<absent>"), now.get(name, "<absent>"), f"{key}.{name}")
            if found:
                return found
        return None
    if isinstance(saved, list) and isinstance(now, list) and len(saved) == len(now):
        for index, (a, b) in enumerate(zip(saved, now, strict=True)):
            found = first_difference(a, b, f"{key}[{index}]")
            if found:
                return found
        return None
    return None if saved == now else (key.removeprefix("config."), saved, now)


def load_optimizer_states(checkpoint: Path, optimizer: torch.optim.Optimizer, scheduler) -> None:
    """Restore the optimizer and scheduler states saved with ``checkpoint``.

    Raises ExploreError for a missing file or one that holds anything but tensors, numbers and
    containers (``torch.load(weights_only=True)`` refuses to build other objects, so nothing runs).
    """
    optimizer.load_state_dict(_load_state_dict(checkpoint / "optimizer.pt"))
    scheduler.load_state_dict(_load_state_dict(checkpoint / "scheduler.pt"))


def _load_state_dict(path: Path) -> dict:
    if not path.is_file():
        raise ExploreError(f"checkpoint {path.parent} has no {path.name}; it is incomplete, resume from another one")
    try:
        return torch.load(path, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"WeightsUnpickler error: ([^\n]*)", str(error))  # torch names the refused object
        reason = found.group(1).strip()[:160] if found else "not a plain state dict"
        raise ExploreError(f"{path}: holds more than tensors and numbers ({reason}); explore reads checkpoint states "
                           "with torch.load(weights_only=True) and runs no pickled code; use a checkpoint written "
                           "by explore")  # fmt: skip


def restore_rng(checkpoint: Path) -> None:
    """Set the torch RNG states to those saved with ``checkpoint`` (CUDA ones only where there is a GPU)."""
    states = load_file(checkpoint / "rng.safetensors")
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(list(states["cuda"]))
