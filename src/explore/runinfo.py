"""Self-describing run folders: every run stores its resolved config, command line, package
version and git commit (minGPT does the same with ``config.json`` and ``args.txt``)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

import explore


def git_commit() -> str | None:
    """The commit of the source tree explore runs from, or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(explore.__file__).parent, capture_output=True,
                             text=True, timeout=5, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def write_run_info(run_dir: Path, config: dict) -> None:
    """Write ``config.yaml`` (resolved config) and ``run.json`` (argv, version, commit, time)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    info = {
        "argv": sys.argv,
        "explore_version": explore.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (run_dir / "run.json").write_text(json.dumps(info, indent=2))
