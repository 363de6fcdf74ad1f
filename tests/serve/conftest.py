"""One running `explore serve` app for the serve tests (gradio_client and the browser), and a real tiny sweep."""

import socket

import pytest

from explore.serve.app import build_app, launch  # needs the serve extra (gradio), which `make install` installs
from explore.serve.models import ModelCache
from explore.sweep.config import SweepConfig
from explore.sweep.run import run_sweep


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_sweep(tmp_path_factory):
    """A real sweep of the embedded model: the original and one point with 8 of its 16 query tokens, on a few
    examples per task (about 5 s), models kept."""
    out = tmp_path_factory.mktemp("sweep") / "sweep"
    config = SweepConfig.model_validate({
        "model": "embedded", "output_dir": str(out), "eval_batch_size": 8, "calibration_examples": 4,
        "tasks": [{"name": "world-vqa", "limit": 4}, {"name": "world-judge", "limit": 4},
                  {"name": "world-caption", "limit": 2}],
        "cost": {"latency_examples": 2, "batch_size": 2, "flops_examples": 1, "min_run_time": 0.01, "rounds": 1},
        "points": [{"name": "q8", "compress": {"queries": {"keep": 8, "strategy": "even"}}}],
    })  # fmt: skip
    run_sweep(config, progress=False)
    return out


@pytest.fixture(scope="session")
def served():
    """The app on a free localhost port, in this process: ``(url, cache)``; closed after the session."""
    cache = ModelCache()
    app = build_app(cache)
    url = launch(app, port=free_port(), block=False, quiet=True)
    yield url, cache
    app.close()


@pytest.fixture(scope="session")
def client(served):
    from gradio_client import Client

    return Client(served[0], verbose=False)
