"""Models the app loads once and keeps: VLMs by name, diffusion pipelines by folder."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from explore.diffusion.pipeline import WorldDiffusionPipeline, load_pipeline
from explore.models.loading import EMBEDDED, load_model

PACKAGED_PIPELINE = "packaged"  # what the Generate tab calls the shipped diffusion model


@dataclass
class Loaded:
    """A model held by the cache, and how long its first load took (seconds)."""

    value: object
    load_seconds: float


def model_key(name: str) -> str:
    """The cache key of a VLM name: "embedded", a Hub id as given, or a folder as an absolute path
    (so ``out/m`` and ``./out/m/`` are one model)."""
    name = name.strip()
    if name == EMBEDDED:
        return name
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


def _pipeline_key(folder: str | None) -> str:
    folder = (folder or "").strip()
    if folder in ("", PACKAGED_PIPELINE):
        return PACKAGED_PIPELINE
    return str(Path(folder).expanduser().resolve())


class ModelCache:
    """Loads each model on first use and returns the same object afterwards (thread-safe).

    ``device``: where models go ("cpu" by default, as everywhere in explore). Loading errors
    (:class:`~explore.errors.ExploreError`: a missing folder, pickle weights, NaN weights) propagate and
    nothing is cached for that name, so a fixed folder can be tried again. Nothing is evicted: every model
    asked for stays in memory until the server stops (explore's models are small; a Hub model is not).
    """

    def __init__(self, device: str = "cpu"):
        self.device = device
        self._items: dict[tuple[str, str], Loaded] = {}
        self._lock = threading.Lock()

    def _get(self, kind: str, key: str, load):
        with self._lock:  # one load at a time: two tabs asking for one model load it once
            if (kind, key) not in self._items:
                started = time.perf_counter()
                value = load()
                self._items[(kind, key)] = Loaded(value, time.perf_counter() - started)
            return self._items[(kind, key)].value

    def vlm(self, name: str):
        """``(model, processor)`` for "embedded", a model folder or a Hub id, loaded on first use."""
        key = model_key(name)
        return self._get("vlm", key, lambda: load_model(key, device=self.device))

    def pipeline(self, folder: str | None) -> WorldDiffusionPipeline:
        """The diffusion pipeline in ``folder`` (None, "" or "packaged": the shipped one), loaded on first use."""
        kind, key = "pipeline", _pipeline_key(folder)
        return self._get(kind, key, lambda: load_pipeline(None if key == PACKAGED_PIPELINE else Path(key), self.device))

    def vlm_load_seconds(self, name: str) -> float | None:
        """How long loading VLM ``name`` took (None: not loaded)."""
        return self._seconds("vlm", model_key(name))

    def pipeline_load_seconds(self, folder: str | None) -> float | None:
        """How long loading the pipeline in ``folder`` took (None: not loaded)."""
        return self._seconds("pipeline", _pipeline_key(folder))

    def _seconds(self, kind: str, key: str) -> float | None:
        with self._lock:
            loaded = self._items.get((kind, key))
            return None if loaded is None else loaded.load_seconds

    def loaded(self) -> list[str]:
        """What is held, as "kind: key" lines."""
        with self._lock:
            return [f"{kind}: {key}" for kind, key in self._items]
