"""Run a sweep's points as Ray tasks (``explore sweep --backend ray``): one task per point, on a local Ray
instance (``ray.init()``) or an existing cluster (``--address``).

Each task asks the cluster for the config's ``resources`` (CPU cores, GPUs), loads the original model and the
sweep's data once per worker process, and runs :func:`explore.sweep.run.run_point` exactly as the local
backend does, writing the point's model and evaluation under ``output_dir``. So ``output_dir`` (and a model
or data given as a path) must be on a file system every node sees; paths are made absolute before the tasks
leave. The driver appends each finished point to ``results.jsonl`` as it arrives, so a killed driver resumes
like a local sweep: finished points are skipped, a point whose model was saved is not compressed and tuned
again. A point that raises comes back as a failure (its error and traceback), and the other tasks go on.
The latency pass at the end is one task too, so every point is timed on one machine, side by side.

Ray is optional: ``pip install 'explore-vlm[ray]'``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch

from explore.errors import ExploreError
from explore.models.loading import load_model
from explore.runs import config_hash
from explore.sweep.config import PointSection, SweepConfig
from explore.sweep.run import SweepData, build_data, failure_of, measure_latency, run_point

_WORKER_STATE: dict[str, tuple] = {}  # in a Ray worker: config hash → (original model and processor, SweepData)


def _original_and_data(config: SweepConfig) -> tuple[tuple, SweepData]:
    """The original model and the sweep's data, built once per worker process (a worker runs many points)."""
    key = config_hash(config.model_dump())
    if key not in _WORKER_STATE:
        _WORKER_STATE.clear()  # another sweep's: free its memory
        torch.manual_seed(config.seed)
        original = load_model(config.model, device=config.device, dtype=config.dtype)
        _WORKER_STATE[key] = (original, build_data(config, int(original[1].image_processor.size["height"])))
    return _WORKER_STATE[key]


def _point_task(raw_config: dict, name: str) -> dict:
    """A Ray task: run one point; ``{"record": ...}`` or ``{"failure": {"error", "traceback"}}``."""
    config = SweepConfig.model_validate(raw_config)
    torch.set_num_threads(config.resources.cpus)
    point = next(p for p in config.all_points() if p.name == name)
    try:
        original, data = _original_and_data(config)
        return {"record": run_point(point, config, original, data, Path(config.output_dir), progress=False)}
    except Exception as error:  # noqa: BLE001  (sent back to the driver, which records it; the rest go on)
        return {"failure": failure_of(point, error)}


def _latency_task(raw_config: dict, names: list[str]) -> dict:
    """A Ray task: the side-by-side latency pass over the finished points."""
    config = SweepConfig.model_validate(raw_config)
    torch.set_num_threads(config.resources.cpus)
    return measure_latency(config, Path(config.output_dir), names)


def absolute_paths(config: SweepConfig) -> SweepConfig:
    """``config`` with ``output_dir`` and every local path (model folder, task files) made absolute: a Ray
    worker does not run in the driver's working directory."""

    def absolute(value: str | None) -> str | None:
        return str(Path(value).resolve()) if value is not None and Path(value).exists() else value

    tasks = [task.model_copy(update={key: absolute(getattr(task, key)) for key in ("data", "annotations", "images")})
             for task in config.tasks]  # fmt: skip
    return config.model_copy(update={"output_dir": str(Path(config.output_dir).resolve()), "tasks": tasks,
                                     "model": absolute(config.model)})  # fmt: skip


class RayRunner:
    """Runs the points as Ray tasks (see the module docstring). ``address``: an existing cluster (``auto``
    or ``host:port``); None starts a local Ray instance, shut down again when the sweep ends."""

    def __init__(self, address: str | None = None) -> None:
        try:
            import ray
        except ImportError:
            raise ExploreError("--backend ray needs Ray: pip install 'explore-vlm[ray]'") from None
        self.ray, self.address, self.started = ray, address, False

    def _connect(self) -> None:
        if not self.ray.is_initialized():
            # a local instance: no dashboard, and workers at the driver's priority (Ray's default niceness of 15
            # lets any other busy process on a shared machine starve the points)
            local = {"include_dashboard": False, "_system_config": {"worker_niceness": 0}} if self.address is None else {}
            try:
                self.ray.init(address=self.address, logging_level="ERROR", log_to_driver=False, **local)
            except ConnectionError as error:
                raise ExploreError(f"--address {self.address}: cannot reach a Ray cluster there ({error}); "
                                   "start one with `ray start --head` or leave --address out") from None  # fmt: skip
            self.started = self.address is None

    def _options(self, config: SweepConfig) -> dict:
        if config.device == "cuda" and config.resources.gpus == 0:
            raise ExploreError("the sweep config asks for device: cuda but resources.gpus is 0, so Ray would run "
                               "the points where no GPU is reserved; set resources: {gpus: 1}")  # fmt: skip
        return {"num_cpus": config.resources.cpus, "num_gpus": config.resources.gpus, "max_retries": 1}

    def run_points(self, config: SweepConfig, out: Path, todo: list[PointSection]) -> Iterator[tuple]:
        """Submit one task per point; yield ``(point, record, None)`` or ``(point, None, failure)`` as each ends."""
        ray = self.ray
        config = absolute_paths(config)
        options = self._options(config)
        self._connect()
        task = ray.remote(_point_task).options(**options)
        raw = config.model_dump()
        # points that share a model (they differ only in precision) wait for the first of them, which makes it:
        # run side by side, each would compress and fine-tune the same model
        groups: dict[str, list[PointSection]] = {}
        for point in todo:
            groups.setdefault(point.model_key(config.recovery_for(point)), []).append(point)
        pending = {task.remote(raw, group[0].name): group[0] for group in groups.values()}
        waiting = {key: group[1:] for key, group in groups.items()}  # model key → the points after the first
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                point = pending.pop(ref)
                later = waiting.pop(point.model_key(config.recovery_for(point)), [])
                pending.update({task.remote(raw, other.name): other for other in later})
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as error:  # the worker died (out of memory, killed): not the code's
                    yield point, None, failure_of(point, error)
                    continue
                if "failure" in result:
                    yield point, None, result["failure"]
                else:
                    yield point, result["record"], None
        finally:
            for ref in pending:  # the driver stops early (an error, Ctrl-C): do not leave tasks running
                ray.cancel(ref, force=True)

    def measure_latency(self, config: SweepConfig, out: Path, names: list[str]) -> dict:
        """The latency pass as one task (every point timed on one machine)."""
        config = absolute_paths(config)
        options = self._options(config)
        self._connect()
        try:
            return self.ray.get(self.ray.remote(_latency_task).options(**options).remote(config.model_dump(), names))
        finally:
            if self.started:
                self.ray.shutdown()
                self.started = False
