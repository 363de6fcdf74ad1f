"""Self-describing run folders; the implementation lives in :mod:`explore.runs`, which owns run folders."""

from explore.runs import git_commit, write_run_info

__all__ = ["git_commit", "write_run_info"]
