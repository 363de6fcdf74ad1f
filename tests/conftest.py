"""Settings shared by every test."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


# One torch thread for the whole session, set at import so that module- and session-scoped
# fixtures (which run before function-scoped ones) use it too: tiny models gain nothing from
# threads; on 2 shared busy cores OpenMP threads that wait for each other made 20 tiny training
# steps take 34 s instead of 0.3 s (measured); and bit-identical comparisons need the same thread
# count on both sides (a 2-thread fixture run vs a 1-thread test run differed in 67 tensors).
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")  # the same for `explore` subprocesses


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Keep one thread even if a test changed it."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


# `explore ...` in a fresh process that SIGKILLs itself when its N-th optimizer update starts (after the
# forward and backward passes of that step): nothing gets to clean up, as when a job is killed.
_KILLED_CHILD = """
import os, signal, sys
import torch

kill_at, calls = int(sys.argv[1]), [0]
real_step = torch.optim.AdamW.step

def step(self, *args, **kwargs):
    calls[0] += 1
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real_step(self, *args, **kwargs)

torch.optim.AdamW.step = step
from explore.cli import main
sys.argv = ["explore", *sys.argv[2:]]
main()
"""


@pytest.fixture
def run_killed():
    """``run_killed(n, *args)``: run ``explore *args`` in a subprocess that is SIGKILLed at its n-th optimizer
    step; returns the CompletedProcess (``returncode == -signal.SIGKILL`` when the kill happened)."""
    import subprocess
    import sys

    def run(kill_at: int, *args: str) -> subprocess.CompletedProcess:
        env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        return subprocess.run([sys.executable, "-c", _KILLED_CHILD, str(kill_at), *args], check=False,
                              capture_output=True, text=True, env=env, timeout=600)  # fmt: skip

    return run


@pytest.fixture
def explore_cli(monkeypatch, capfd):
    """Run ``explore *args`` in this process (a subprocess spends seconds importing torch per call):
    returns (exit status, stdout, stderr)."""
    import sys

    from explore.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["explore", *args])
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = int(stop.code)
        out, err = capfd.readouterr()
        return code, out, err

    return run
