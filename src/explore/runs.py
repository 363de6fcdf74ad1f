"""Run folders: the one place that writes what a run leaves on disk.

Everything a command writes into its output folder goes through here, so that a kill (even SIGKILL) or a
power cut at any moment leaves each file either as it was or complete, never half written:

- :func:`write_file`, :func:`write_json`, :func:`write_text` and :func:`atomic_path`: one file, written to a
  temporary file in the same folder, flushed and ``fsync``-ed, renamed over the old one with ``os.replace``,
  then the folder is ``fsync``-ed so the rename itself is on disk;
- :func:`atomic_folder`: a whole folder (a saved model, an adapter, a pipeline) built beside its final place
  and swapped in when complete; the old one is removed only after the new one is in place;
- :class:`JsonlLog`: an append-only JSON-lines file (predictions, results, training logs). Each append is
  one ``write`` followed by ``fsync``; opening the file repairs a last line cut off by a kill (the partial
  line is truncated away and will be redone);
- :func:`check_header`: a run header (``header.json``: what identifies the run: the model's fingerprint, the
  task, the judge, the seed, a config hash) written on the first run and compared on every resume, so a
  folder written by another model or judge is refused with one line instead of mixing two runs;
- :func:`write_run_info`: the resolved config, the command line, the package version and the git commit.

A disk that is full, read-only or not writable is reported as one :class:`~explore.errors.ExploreError`
line naming the file (and the earlier file, which is kept).
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from typing import NoReturn
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import yaml

import explore
from explore.errors import ExploreError

HEADER = "header.json"
# Errors of the disk, not of explore: the user can fix them (free space, permissions, another folder).
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
# A path the user gave that cannot hold what is written there: a file where a folder is needed, or the reverse.
PATH_ERRORS = {errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENAMETOOLONG}


class DiskError(ExploreError):
    """A file could not be written because of the disk: full, read-only or not writable."""


def disk_errno(error: BaseException) -> int | None:
    """The errno of a full or read-only disk behind ``error``, or None: an OSError's, or the one a library
    reports only in its message (safetensors: ``SafetensorError: ... No space left on device (os error 28)``)."""
    for cause in (error, error.__cause__):
        if isinstance(cause, OSError):
            if cause.errno in DISK_ERRORS:
                return cause.errno
        elif cause is not None:
            found = re.search(r"\(os error (\d+)\)", str(cause))
            if found and int(found.group(1)) in DISK_ERRORS:
                return int(found.group(1))
    return None


def disk_error(path: Path, error: BaseException, kept: str | None = None) -> DiskError:
    """The one-line error for ``error`` (see :func:`disk_errno`) while writing ``path``; ``kept`` says what
    survived."""
    code = disk_errno(error)
    reason = os.strerror(code) if code else str(error)
    survived = f"; {kept}" if kept else (f"; the previous {path.name} is kept" if path.exists() else "")
    return DiskError(f"cannot write {path}: {reason}{survived}; free space or choose a writable folder")


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename is as durable as they allow
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder (same suffix, so writers that pick a format by it work);
    when the block succeeds the file is fsync-ed and renamed over ``path``. On an error ``path`` is left as
    it was and the temporary file removed; a full or read-only disk raises :class:`DiskError`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.tmp-", suffix=path.suffix, dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make every output private to its writer
        os.close(fd)
    except OSError as error:
        _reraise(path, error)
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_folder(path.parent)
    except Exception as error:  # the block's own errors pass unchanged, unless the disk or the path is behind them
        _reraise(path, error)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it
    os.umask(mask)
    return mask


def _reraise(path: Path, error: Exception) -> NoReturn:
    """Raise the one-line error for a full or read-only disk, or a path that cannot hold ``path``, behind
    ``error``; re-raise ``error`` itself otherwise."""
    if disk_errno(error) is not None:
        raise disk_error(path, error) from error
    if isinstance(error, OSError) and error.errno in PATH_ERRORS:
        raise path_error(error, path) from error
    raise error


def path_error(error: OSError, path: Path | None = None) -> ExploreError:
    """The one-line error for a path that cannot be used as given (a file where a folder is needed, ...)."""
    problem = _PATH_PROBLEM.get(error.errno, os.strerror(error.errno))
    target = path if path is not None else error.filename
    if error.errno in (errno.ENOTDIR, errno.EISDIR) or error.filename is None or str(error.filename) == str(target):
        return ExploreError(f"cannot write {target}: {problem}; choose another path")
    return ExploreError(f"cannot write {target}: {error.filename} {problem}; choose another path")


_PATH_PROBLEM = {errno.ENOTDIR: "a part of the path is a file, not a folder", errno.EEXIST: "is a file, not a folder",
                 errno.EISDIR: "it is a folder, not a file", errno.ENAMETOOLONG: "the name is too long"}  # fmt: skip


def write_file(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably (see :func:`atomic_path`); return ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically and durably."""
    return write_file(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, value, *, indent: int | None = 2, sort_keys: bool = False) -> Path:
    """Write ``value`` as JSON (ending with a newline) to ``path`` atomically and durably."""
    return write_text(path, json.dumps(value, indent=indent, sort_keys=sort_keys) + "\n")


def fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (before a rename makes it visible as complete)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            with open(path, "rb+") as f:
                os.fsync(f.fileno())
    for sub in [folder, *(p for p in folder.rglob("*") if p.is_dir())]:
        fsync_folder(sub)


@contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``folder`` to write into; when the block succeeds its files are fsync-ed
    and it replaces ``folder`` (an existing one is removed only after the new one is in place). On an error
    the temporary folder is deleted and ``folder`` is left as it was; a full or read-only disk raises
    :class:`DiskError` naming ``folder``. What a killed earlier call left beside ``folder`` is cleaned up
    first (a previous folder moved aside is put back)."""
    folder = Path(folder)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        _recover_folder(folder)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
        staging.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make every saved model private to its writer
    except OSError as error:
        _reraise(folder, error)
    try:
        yield staging
        fsync_tree(staging)
        if folder.exists():
            previous = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, previous / folder.name)
            os.replace(staging, folder)
            fsync_folder(folder.parent)
            shutil.rmtree(previous)
        else:
            os.replace(staging, folder)
            fsync_folder(folder.parent)
    except Exception as error:  # the block's own errors pass unchanged, unless the disk or the path is behind them
        _reraise(folder, error)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _recover_folder(folder: Path) -> None:
    """Clean up after an :func:`atomic_folder` that was killed: a staging folder is never complete (deleted);
    a previous folder moved aside by a kill between the two renames is put back."""
    for aside in folder.parent.glob(f".{glob.escape(folder.name)}.old-*"):
        if (aside / folder.name).is_dir() and not folder.exists():
            os.replace(aside / folder.name, folder)
        shutil.rmtree(aside, ignore_errors=True)
    for staging in folder.parent.glob(f".{glob.escape(folder.name)}.tmp-*"):
        shutil.rmtree(staging, ignore_errors=True)


class JsonlLog:
    """An append-only JSON-lines file, one record per line.

    Opening it reads the records already there and repairs a last line cut off by a kill: the partial line
    is truncated away (its record will be redone). A broken line anywhere else is not a kill's doing and
    raises ExploreError. :meth:`append` writes its lines with one ``write`` and ``fsync``-s them.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.records: list[dict] = read_jsonl(self.path, repair=True)

    def append(self, records: Iterable[dict]) -> None:
        """Append ``records`` (JSON-ready dicts) durably."""
        records = list(records)
        _append_lines(self.path, records, kept=f"the {len(self.records)} records before are kept")
        self.records.extend(records)


def append_jsonl(path: str | os.PathLike, records: Iterable[dict]) -> None:
    """Append ``records`` to a JSON-lines log durably without reading it (a training log): a last line cut
    off by a kill is truncated first, so the new records start on a line of their own."""
    path = Path(path)
    _truncate_cut_line(path)
    _append_lines(path, list(records), kept="the lines before are kept")


def rewind_jsonl(path: str | os.PathLike, last_step: int) -> None:
    """Drop the records of a training log (``{"step": ...}`` lines) after ``last_step``, atomically: a run
    resumed from the checkpoint of ``last_step`` redoes those steps and logs them again, once."""
    path = Path(path)
    if path.is_file():
        kept = [record for record in read_jsonl(path) if record.get("step", 0) <= last_step]
        write_text(path, "".join(json.dumps(record) + "\n" for record in kept))


def _append_lines(path: Path, records: list[dict], *, kept: str) -> None:
    if not records:
        return
    data = "".join(json.dumps(record) + "\n" for record in records).encode("utf-8")
    new = not path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as error:
        if error.errno in DISK_ERRORS:
            _truncate_cut_line(path)  # a full disk may have taken part of the lines
            raise disk_error(path, error, kept=kept) from error
        raise
    if new:
        fsync_folder(path.parent)


def _truncate_cut_line(path: Path) -> None:
    """Truncate the bytes after the last newline of ``path`` (a line cut off by a kill), if any."""
    try:
        with open(path, "rb+") as f:
            end = f.seek(0, os.SEEK_END)
            position = end
            while position > 0:
                start = max(0, position - 65536)
                f.seek(start)
                block = f.read(position - start)
                newline = block.rfind(b"\n")
                if newline >= 0:
                    position = start + newline + 1
                    break
                position = start
            if position < end:
                f.truncate(position)
                f.flush()
                os.fsync(f.fileno())
    except FileNotFoundError:
        return


def read_jsonl(path: str | os.PathLike, *, repair: bool = False) -> list[dict]:
    """The records of a JSON-lines file (none if it does not exist).

    Only lines ending with a newline count: each append writes its lines whole, so bytes after the last
    newline are a line cut off by a kill, and so is a last line that is not JSON (a power cut can leave
    zeros). Both are left out, and with ``repair`` truncated from the file. A broken line before the last
    was not cut by a kill: it raises ExploreError naming the line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    lines = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]
    records, keep = [], 0
    for number, line in enumerate(lines, start=1):
        try:
            if line.strip():
                records.append(json.loads(line))
        except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
            if number < len(lines):
                raise ExploreError(f"{path}: line {number} is not JSON and is not the last line, so no kill cut it "
                                   f"({str(error)[:80]}); fix or remove the file") from error  # fmt: skip
            break
        keep += len(line) + 1
    if repair and keep < len(data):
        with open(path, "rb+") as f:
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    return records


def config_hash(value) -> str:
    """A short, stable hash of a JSON-ready value (sorted keys): the identity of a config."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_fingerprint(model, samples: int = 4096) -> str:
    """A short hash of a module's weights: every parameter's and buffer's name, shape, dtype and the values at
    ``samples`` evenly spaced positions (all of them in a small tensor). Exact, the same whatever the thread
    count, and cheap even for billions of weights; two checkpoints of one architecture get different hashes
    unless they differ only between the sampled positions. Quantized tensor subclasses are hashed by their
    dequantized values."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        tensor = tensor.detach()
        if getattr(type(tensor), "dequantize", torch.Tensor.dequantize) is not torch.Tensor.dequantize:
            tensor = tensor.dequantize()  # torchao's int8 weights: their values, not their packing
        flat = tensor.reshape(-1)
        index = torch.linspace(0, flat.numel() - 1, min(samples, flat.numel()), dtype=torch.float64).long()
        picked = flat[index.to(flat.device)].cpu()
        values = picked.float() if picked.is_floating_point() else picked  # bf16 / fp16 → fp32 is exact
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode() + values.numpy().tobytes())
    return digest.hexdigest()[:16]


def remove_temporaries(folder: str | os.PathLike) -> None:
    """Delete the temporary files that killed atomic writes left in ``folder`` (never complete, never read)."""
    folder = Path(folder)
    if folder.is_dir():
        for path in folder.glob(".*.tmp-*"):
            if path.is_file():
                path.unlink(missing_ok=True)


def check_header(folder: str | os.PathLike, header: dict, *, has_outputs: bool, option: str = "--out") -> None:
    """Write ``folder/header.json`` on the first run; on a resume raise ExploreError (one line) naming the
    first key whose value differs, with both values. Temporary files of killed writes are removed.

    ``has_outputs``: whether the folder already holds this run's outputs; outputs without a header (an older
    explore, or another program) are refused too, since nothing says what wrote them. Without outputs the
    header is (re)written: a run that stopped before its first output may be started with other settings. ``option``: how the
    user names the folder (``--out``, ``output_dir``), for the message.
    """
    folder = Path(folder)
    path = folder / HEADER
    remove_temporaries(folder)
    now = json.loads(json.dumps(header, default=str))  # tuples → lists, as they are saved
    if not path.is_file() and has_outputs:
        raise ExploreError(f"{folder} holds outputs but no {HEADER}, so nothing says which model, task or judge "
                           f"wrote them; use a new {option} folder")  # fmt: skip
    if not has_outputs:  # a first run, or one that stopped before its first output: nothing to mix with
        write_json(path, now, sort_keys=True)
        return
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ExploreError(f"{path}: not JSON ({error.msg}); use a new {option} folder") from error
    for key in sorted(set(saved) | set(now)):
        before, after = saved.get(key, "<absent>"), now.get(key, "<absent>")
        if before != after:
            raise ExploreError(f"{folder} was written with {key} = {before!r}, but this run has {key} = {after!r}; "
                               f"resume with the same settings, or use a new {option} folder")  # fmt: skip


def git_commit() -> str | None:
    """The commit of the source tree explore runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(explore.__file__).parent, capture_output=True,
                             text=True, timeout=5, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_run_info(run_dir: str | os.PathLike, config: dict) -> None:
    """Write ``config.yaml`` (resolved config) and ``run.json`` (argv, version, commit, time), atomically."""
    run_dir = Path(run_dir)
    write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    info = {
        "argv": sys.argv,
        "explore_version": explore.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(run_dir / "run.json", info)
