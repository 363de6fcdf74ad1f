"""Resumable training checkpoints, written atomically; shared by ``pretrain`` and ``finetune``.

A checkpoint folder ``<root>/step-NNNNNNN/`` holds:

- the weights, written by the caller's ``write_weights(folder)``: ``model/`` via ``save_pretrained``
  (pretrain) or ``trainable.safetensors`` (finetune: the adapter or the tuned components);
- ``optimizer.pt``, ``scheduler.pt``: their state dicts (tensors and numbers only; read back with
  ``torch.load(weights_only=True)``, which refuses arbitrary pickled objects);
- ``rng.safetensors``: the torch CPU RNG state (and the CUDA ones when there is a GPU);
- ``run_config.json``: what kind of run wrote it and the config that decides its weights, so a
  resume with another config is refused instead of silently training something else, and the CPU thread
  count it ran with: a resume with another count is warned about (it continues, but float sums change
  order, so it is no longer bit-identical to an uninterrupted run);
- ``manifest.json``: the size and SHA-256 of every file above;
- ``trainer_state.json``: step, data position and the like; written last.

It is written to a hidden temporary folder, fsync-ed, and renamed into place when complete (the rename
fsync-ed too); an older checkpoint is removed only after the new one is in place, by renaming it out of
the way first, so a crash (SIGKILL, or a power cut where the disk honours fsync) at any moment leaves the
last complete checkpoint intact and never leaves a half-deleted folder that looks complete. A full or
read-only disk while saving is one :class:`~explore.runs.DiskError` line naming the checkpoint kept. A
resume from ``latest`` checks each checkpoint against its manifest and skips a damaged one (with a
warning) for the one before. Only the main process writes (transformers#27925).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from safetensors.torch import save as save_safetensors

from explore.errors import ExploreError
from explore.runs import DiskError, disk_errno, fsync_folder, fsync_tree

STATE_FILE = "trainer_state.json"
RUN_FILE = "run_config.json"
MANIFEST_FILE = "manifest.json"
logger = logging.getLogger(__name__)
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
    final = step_dir(root, step)
    tmp = root / f".tmp-{final.name}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        for stale in [*root.glob(".tmp-*"), *root.glob(".trash-*")]:  # left by a killed run; never complete
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
        write_weights(tmp)
        # states go through bytes, so a full disk surfaces as an OSError of the write, not torch's RuntimeError
        (tmp / "optimizer.pt").write_bytes(_torch_bytes(optimizer.state_dict()))
        (tmp / "scheduler.pt").write_bytes(_torch_bytes(scheduler.state_dict()))
        (tmp / "rng.safetensors").write_bytes(save_safetensors(_rng_states()))
        (tmp / RUN_FILE).write_text(json.dumps({**run, "cpu_threads": torch.get_num_threads()}, indent=2,
                                               sort_keys=True))  # fmt: skip
        (tmp / MANIFEST_FILE).write_text(json.dumps(_manifest(tmp), indent=2, sort_keys=True))
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        fsync_tree(tmp)  # on disk before the rename makes it the checkpoint a resume picks
        if final.exists():  # a checkpoint of the same step from an earlier, interrupted run
            _discard(final)
        os.replace(tmp, final)
        fsync_folder(root)
    except Exception as error:  # safetensors reports a full disk as SafetensorError, not OSError
        shutil.rmtree(tmp, ignore_errors=True)
        code = disk_errno(error)
        if code is None:
            raise
        previous = complete_checkpoints(root)
        kept = (f"the previous checkpoint {previous[-1]} is kept (--resume latest continues from it)" if previous
                else "no earlier checkpoint exists")  # fmt: skip
        raise DiskError(f"cannot write checkpoint {final.name} in {root}: {os.strerror(code)}; {kept}; "
                        "free space or choose a writable output folder") from error  # fmt: skip
    earlier = [p for p in complete_checkpoints(root) if step_of(p) <= step]
    for old in earlier[: max(0, len(earlier) - keep)]:  # (a negative slice end would delete kept ones)
        _discard(old)
    return final


def _torch_bytes(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _manifest(folder: Path) -> dict[str, dict]:
    """Size and SHA-256 of every file of a checkpoint being written: a resume checks them."""
    return {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed (a missing, cut or changed file; state that is not JSON), or None.

    Checkpoints written before the manifest existed are checked for their JSON files only.
    """
    for name in (STATE_FILE, RUN_FILE):
        try:
            json.loads((checkpoint / name).read_text())
        except (OSError, ValueError) as error:
            return f"{name} unreadable ({type(error).__name__})"
    manifest_path = checkpoint / MANIFEST_FILE
    if not manifest_path.is_file():
        return None
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return f"{MANIFEST_FILE} unreadable"
    for name, expected in manifest.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} missing"
        if path.stat().st_size != expected["bytes"]:
            return f"{name} has {path.stat().st_size} bytes, {expected['bytes']} were written"
        if _sha256(path) != expected["sha256"]:
            return f"{name} changed since it was written (SHA-256 differs)"
    return None


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


def refuse_fresh_start(root: Path) -> None:
    """A run started without ``--resume`` where an earlier run left complete checkpoints would write its own beside
    them, and a later ``--resume latest`` could pick the earlier run's: refuse it before anything is touched.

    Raises ExploreError (one line) naming the newest checkpoint and the two ways on.
    """
    found = complete_checkpoints(root)
    if found:
        raise ExploreError(f"{root.parent} holds checkpoints of an earlier run (the last: {found[-1].name}); "
                           "continue it with --resume latest, or set output_dir to a new folder to start over")  # fmt: skip


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
        for checkpoint in reversed(found):  # newest first; a damaged one is skipped for the one before
            problem = checkpoint_problem(checkpoint)
            if problem is None:
                return checkpoint
            logger.warning("warning: skipping damaged checkpoint %s (%s); trying the one before", checkpoint, problem)
        raise ExploreError(f"--resume latest: every checkpoint in {root} is damaged (the newest: "
                           f"{checkpoint_problem(found[-1])}); start without --resume")  # fmt: skip
    path = Path(resume)
    if path.is_file():
        raise ExploreError(f"--resume {resume}: is a file; pass 'latest' or a checkpoint folder ({root}/step-*)")
    if not path.is_dir():
        raise ExploreError(f"--resume {resume}: no such folder; pass 'latest' or a checkpoint folder ({root}/step-*)")
    if not (path / STATE_FILE).is_file():
        raise ExploreError(f"--resume {resume}: not a complete checkpoint (no {STATE_FILE}); "
                           "pass 'latest' to use the newest complete one")  # fmt: skip
    problem = checkpoint_problem(path)
    if problem is not None:
        raise ExploreError(f"--resume {resume}: the checkpoint is damaged ({problem}); pass 'latest' to use the "
                           "newest good one")  # fmt: skip
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
    threads, now_threads = saved.get("cpu_threads"), torch.get_num_threads()
    if threads is not None and threads != now_threads:  # (older checkpoints did not record it)
        logger.warning("warning: checkpoint %s was written by a run with %d CPU threads, this one has %d: it resumes, "
                       "but not bit-identical to an uninterrupted run (float sums change order); for that, resume "
                       "with OMP_NUM_THREADS=%d", checkpoint, threads, now_threads, threads)  # fmt: skip


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
