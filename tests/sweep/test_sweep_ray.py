"""``explore sweep --backend ray`` on one local Ray instance (2 CPUs: two points at a time, one task each): the
local backend's rows, a point that raises recorded while the others finish, and a driver SIGKILLed mid-sweep
that resumes without making any finished point's model again."""

import json
import os
import time

import pytest
import yaml

from explore.errors import ExploreError
from explore.runs import read_jsonl
from explore.sweep.config import SweepConfig
from explore.sweep.run import FAILED, LATENCY, RESULTS, LocalRunner, read_results, run_sweep

ray = pytest.importorskip("ray")  # in the test extra; skipped only where someone installed explore without it

TIMINGS = ("seconds", "latency_b1_s", "latency_b2_s")  # wall-clock: differ between any two runs


def raw_config(folder, out) -> dict:
    return {
        "model": str(folder), "output_dir": str(out), "eval_batch_size": 2, "calibration_examples": 2,
        "tasks": [{"name": "world-vqa", "limit": 4}, {"name": "world-caption", "limit": 2}],
        "cost": {"latency_examples": 2, "batch_size": 2, "flops_examples": 1, "min_run_time": 0.01, "rounds": 2},
        "recovery": {"lora": {"method": "lora", "components": ["qformer"], "steps": 2, "batch_size": 2, "lr": 1e-3,
                              "warmup_steps": 0}},
        "points": [
            {"name": "q3", "compress": {"queries": {"keep": 3, "strategy": "merge"}}},
            {"name": "q3+lora", "compress": {"queries": {"keep": 3, "strategy": "merge"}}, "recover": "lora"},
            # the same model as q3+lora in int8: on Ray it waits for q3+lora to make the model, then loads it
            {"name": "q3-int8+lora", "compress": {"queries": {"keep": 3, "strategy": "merge"}, "precision": "int8"},
             "recover": "lora"},
            # the tiny model has 2 decoder blocks: this point raises when it runs (the config itself is valid)
            {"name": "too-deep", "compress": {"depth": [{"component": "lm_decoder", "drop": 2, "by": "last"}]}},
        ],
    }  # fmt: skip


def rows(out) -> dict:
    """Results by name without wall-clock timings or the absolute model folder."""

    def without_timings(value):
        if isinstance(value, dict):
            return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS and k != "model_dir"}
        if isinstance(value, list):
            return [without_timings(v) for v in value]
        return value

    return {name: without_timings(record) for name, record in read_results(out / RESULTS).items()}


@pytest.fixture(scope="module")
def ray_address():
    """One local Ray instance for the module (starting one takes seconds): 2 CPUs, so 2 points run at once.
    Without token authentication (a local ray.init() turns it on and writes a token to ~/.ray): the killed
    drivers of the kill test run in the `forked_explore` zygote, whose environment has no HOME to find it in."""
    before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    if before is None:
        os.environ.pop("RAY_AUTH_MODE")
    else:
        os.environ["RAY_AUTH_MODE"] = before


@pytest.fixture(scope="module")
def local_rows(tiny_folder, tmp_path_factory):
    """The local backend's results for :func:`raw_config` (too-deep fails; the rest finish)."""
    out = tmp_path_factory.mktemp("local") / "out"
    with pytest.raises(ExploreError, match=r"1 point\(s\) failed: too-deep: cannot drop 2 of the 2 lm_decoder"):
        run_sweep(SweepConfig.model_validate(raw_config(tiny_folder, out)), runner=LocalRunner(progress=False),
                  progress=False)  # fmt: skip
    return rows(out)


def wait_until_idle(seconds: float = 120) -> None:
    """Until a killed driver's tasks are gone (Ray frees their CPUs once it notices the driver died)."""
    deadline = time.monotonic() + seconds
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"]:
        assert time.monotonic() < deadline, "the killed driver's tasks are still running"
        time.sleep(0.5)


def test_ray_sweep_gives_the_local_rows_and_records_the_failing_point(ray_address, tiny_folder, tmp_path, local_rows):
    from explore.sweep.ray_backend import RayRunner

    assert set(local_rows) == {"original", "q3", "q3+lora", "q3-int8+lora"}
    out = tmp_path / "ray"
    with pytest.raises(ExploreError, match=r"1 point\(s\) failed: too-deep: cannot drop 2 of the 2 lm_decoder"):
        run_sweep(SweepConfig.model_validate(raw_config(tiny_folder, out)), runner=RayRunner(ray_address),
                  progress=False)  # fmt: skip
    assert rows(out) == local_rows
    failed = json.loads((out / FAILED).read_text())
    assert list(failed) == ["too-deep"] and "Traceback" in failed["too-deep"]["traceback"]
    report = (out / "report.md").read_text()
    assert "## Failed points" in report and "`too-deep`: cannot drop 2" in report and "| q3+lora |" in report
    assert "side by side in one pass" in report
    latency = json.loads((out / LATENCY).read_text())
    assert latency["points"] == ["original", "q3", "q3+lora", "q3-int8+lora"]
    assert len(list((out / "models").glob("*.json"))) == 3  # q3+lora and q3-int8+lora share one
    assert all(value["latency_b1_s"] > 0 and value["latency_b2_s"] > 0 for value in latency["latency"].values())


def test_ray_driver_killed_mid_sweep_resumes_without_redoing_finished_points(
    ray_address, forked_explore, tiny_folder, tmp_path, local_rows
):
    out = tmp_path / "out"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw_config(tiny_folder, out)))
    command = ("sweep", "--config", str(path), "--backend", "ray", "--address", ray_address)
    # killed in the middle of appending the second finished point to results.jsonl: one point is in, one cut
    killed = forked_explore(*command, event="append", kill_at=2)
    assert killed.killed, killed.log
    wait_until_idle()
    assert [r["name"] for r in read_jsonl(out / RESULTS)] != []  # the cut line is left for the resume to repair
    markers = {p.name: p.stat().st_mtime_ns for p in (out / "models").glob("*.json")}
    assert len(markers) >= 2  # the two points the driver heard of saved their models
    resumed = forked_explore(*command)
    assert resumed.code == 2 and "too-deep: cannot drop 2" in resumed.log, resumed.log
    assert "(1 done)" in resumed.log  # the point appended whole before the kill is not run again
    assert {p.name: p.stat().st_mtime_ns for p in (out / "models").glob("*.json") if p.name in markers} == markers
    assert rows(out) == local_rows
    assert [r["name"] for r in read_jsonl(out / RESULTS)].count("original") == 1
