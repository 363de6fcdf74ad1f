"""Atomic folder writes; the implementation lives in :mod:`explore.runs`, which owns run folders."""

from explore.runs import atomic_folder

__all__ = ["atomic_folder"]
