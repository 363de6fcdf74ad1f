"""Settings shared by every test."""

import os
from pathlib import Path

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


# A process that imports explore, torch and transformers once, then forks one child per `explore` command it
# is sent (fork costs milliseconds where a fresh interpreter spends seconds importing). A child can be told
# to SIGKILL itself at the N-th event of a kind: "fsync" (every durable write of explore.runs and of a
# checkpoint: after the data is written, before it is committed), "step" (an AdamW update starts) or
# "append" (a JSON-lines append of explore.runs, killed after half its bytes are written: a cut line). Each
# child runs `explore.cli.main` with its stdout and stderr in a log file and, when it ends by itself, writes
# how many events of each kind it saw. Nothing in a child can clean up after a kill.
_ZYGOTE = r"""
import importlib, json, os, signal, sys
from explore.cli import main  # first: it sets up the process as `explore` does, before torch starts
import torch

for name in ["explore.cli.use", "explore.eval.runner", "explore.eval.scoring", "explore.eval.t2i", "explore.sweep.run",
             "explore.sweep.report", "explore.adapt.finetune", "explore.compress.depth", "explore.compress.precision",
             "explore.compress.queries", "explore.compress.resolution", "explore.diffusion.train",
             "explore.diffusion.pipeline", "explore.models.loading", "torchmetrics.image.fid", "matplotlib.pyplot"]:
    try:  # only a speed-up: a child imports what it needs
        importlib.import_module(name)
    except ImportError:
        pass
try:  # the shape classifier that world-t2i checks and diffusion validation calibrate at 32 px (cached)
    from explore.world.detect import calibrated_classifier
    calibrated_classifier(32)
except ImportError:
    pass

sys.stdout.write("ready\n"); sys.stdout.flush()
for line in sys.stdin:
    job = json.loads(line)
    pid = os.fork()
    if pid == 0:
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1); os.dup2(log, 2)
        counts = {"fsync": 0, "step": 0, "append": 0}

        def event(kind):
            counts[kind] += 1
            if kind == job.get("event") and counts[kind] == job.get("kill_at"):
                os.kill(os.getpid(), signal.SIGKILL)

        real_step = torch.optim.AdamW.step
        def fsync(fd):  # counted as a commit point, not synced: after SIGKILL the kernel still writes the page
            event("fsync")  # cache, so a sync changes nothing these tests can see, and costs seconds on a busy disk
        def step(self, *args, **kwargs):
            event("step")
            return real_step(self, *args, **kwargs)
        import explore.runs
        real_append = explore.runs._append_lines
        def append(path, records, **kwargs):
            if job.get("event") == "append" and counts["append"] + 1 == job.get("kill_at"):
                data = "".join(json.dumps(record) + "\n" for record in records).encode()
                cut = len(data) // 2
                cut -= data[cut - 1 : cut] == b"\n"  # always inside a line
                with open(path, "ab") as f:  # half the lines reach the file, then the kill
                    f.write(data[:cut])
            event("append")
            return real_append(path, records, **kwargs)
        os.fsync, torch.optim.AdamW.step, explore.runs._append_lines = fsync, step, append
        sys.argv = ["explore", *job["argv"]]
        try:
            main()
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        except BaseException:
            import traceback; traceback.print_exc(); code = 99
        sys.stdout.flush(); sys.stderr.flush()
        with open(job["log"] + ".events", "w") as f:
            json.dump(counts, f)
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
    sys.stdout.write(json.dumps({"killed": killed, "code": code}) + "\n")
    sys.stdout.flush()
"""


class ForkedRun:
    """The end of one forked ``explore`` command: killed or its exit status, its output, its event counts."""

    def __init__(self, killed: bool, code: int | None, log: str, events: dict | None) -> None:
        self.killed, self.code, self.log, self.events = killed, code, log, events


@pytest.fixture(scope="session")
def forked_explore(tmp_path_factory):
    """``forked_explore(*args, event=None, kill_at=None)``: run ``explore *args`` in a forked child, SIGKILLed
    at its ``kill_at``-th ``event`` ("fsync", "step" or "append") if given; returns a :class:`ForkedRun`."""
    import itertools
    import json
    import subprocess
    import sys

    env = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {})}  # fmt: skip
    zygote = subprocess.Popen([sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)  # fmt: skip
    assert zygote.stdout.readline() == "ready\n"
    logs, numbers = tmp_path_factory.mktemp("forked-logs"), itertools.count()

    def run(*args: str, event: str | None = None, kill_at: int | None = None) -> ForkedRun:
        log = str(logs / f"run-{next(numbers)}.log")
        zygote.stdin.write(json.dumps({"argv": list(args), "event": event, "kill_at": kill_at, "log": log}) + "\n")
        zygote.stdin.flush()
        reply = json.loads(zygote.stdout.readline())
        events = Path(log + ".events")
        return ForkedRun(reply["killed"], reply["code"], Path(log).read_text(),
                         json.loads(events.read_text()) if events.is_file() else None)  # fmt: skip

    run.kill_points = kill_points
    yield run
    zygote.stdin.close()
    zygote.wait(timeout=60)


def kill_points(total: int, count: int = 5) -> list[int]:
    """``count`` distinct event numbers spread over 1..``total`` (first, last and evenly between): the
    kill points of a test, chosen from the events an uninterrupted run counted."""
    if total < count:
        raise AssertionError(f"only {total} events to kill at; the test needs {count}")
    return sorted({round(1 + i * (total - 1) / (count - 1)) for i in range(count)})
