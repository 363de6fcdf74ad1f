"""Atomic folder writes: build a folder beside its final place and swap it in when complete.

Every saved model, adapter and pipeline goes through :func:`atomic_folder`, so a crash or a kill
mid-write leaves the previous folder (or nothing), never a half-written one that loads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``folder`` to write into; when the block succeeds it replaces
    ``folder`` (an existing one is removed only after the new one is in place). On an error the
    temporary folder is deleted and ``folder`` is left as it was."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        yield staging
        if folder.exists():
            previous = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, previous / folder.name)
            os.replace(staging, folder)
            shutil.rmtree(previous)
        else:
            os.replace(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
