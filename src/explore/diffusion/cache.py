"""A pre-rendered, seeded cache of training pairs, so rendering leaves the training step.

Pair ``i`` of the cache is exactly pair ``i`` of :func:`explore.diffusion.data.training_batch` (scene ``i``
of the train split, its prompt and its layout map); training reads pair ``position % size``, so a cache
of N scenes is N distinct images shown again every N pairs.

Folder: ``images.npy`` (N, R, R, 3) uint8 and ``layouts.npy`` (N, C, G, G) uint8, both memory-mapped;
``prompts.jsonl`` (one JSON string per line); ``meta.json`` (what was rendered and how far). Building
writes chunks and records progress after each, so an interrupted build resumes where it stopped; a
folder built with other settings is an error, never silently reused. One build at a time: two runs that start
beside each other on an unfinished cache take turns on a file lock (``filelock``, as the Hugging Face hub cache
does); the second then finds the cache complete and only reads it.

Latent diffusion also encodes every image once (:mod:`explore.diffusion.latents`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock, Timeout

from explore.diffusion.config import DataSection
from explore.diffusion.data import layout_maps, training_batch
from explore.errors import ExploreError
from explore.runs import read_jsonl, write_json, write_text
from explore.world.layout import LAYOUT_CHANNELS
from explore.world.scene import GRID

CHUNK = 1000  # pairs rendered between progress records


@dataclass(frozen=True)
class CacheSpec:
    """What a cache holds: ``size`` train-split pairs of ``world_seed`` rendered at ``resolution``."""

    size: int
    world_seed: int
    max_objects: int
    resolution: int
    relation_prompts: float


def _read_meta(folder: Path) -> dict | None:
    path = folder / "meta.json"
    return json.loads(path.read_text()) if path.is_file() else None


def build_cache(folder: str | Path, spec: CacheSpec, progress: bool = True) -> Path:
    """Render the pairs of ``spec`` into ``folder`` (resumes a partial build). Returns ``folder``.

    Raises:
        ExploreError: ``folder`` holds a cache built with other settings.
    """
    folder = Path(folder)
    if _recorded(folder, spec) == spec.size:  # complete: only read (runs may be reading it)
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / ".build.lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"training cache {folder}: another run is building it; waiting for it", flush=True)
        lock.acquire()
    try:
        return _build(folder, spec, progress)
    finally:
        lock.release()


def _recorded(folder: Path, spec: CacheSpec) -> int:
    """How many pairs of ``spec`` ``folder`` records as rendered (0 for a new folder).

    Raises:
        ExploreError: ``folder`` holds a cache built with other settings.
    """
    meta = _read_meta(folder)
    if meta is not None and meta["spec"] != asdict(spec):
        raise ExploreError(f"{folder} holds a training cache built with {meta['spec']}, not {asdict(spec)}; "
                           "point data.cache_dir at a new folder")  # fmt: skip
    return 0 if meta is None else int(meta["done"])


def _build(folder: Path, spec: CacheSpec, progress: bool) -> Path:
    """:func:`build_cache` holding the folder's lock: the record is read again, as another run may have built the
    cache meanwhile."""
    done = _recorded(folder, spec)
    if done == spec.size:
        return folder
    r = spec.resolution
    mode = "r+" if done else "w+"
    images = np.lib.format.open_memmap(folder / "images.npy", mode=mode, dtype=np.uint8, shape=(spec.size, r, r, 3))
    layouts = np.lib.format.open_memmap(folder / "layouts.npy", mode=mode, dtype=np.uint8,
                                        shape=(spec.size, LAYOUT_CHANNELS, GRID, GRID))  # fmt: skip
    prompts_path = folder / "prompts.jsonl"
    kept = prompts_path.read_text().splitlines()[:done] if done else []
    # drop the lines of an unfinished chunk; atomically, so that a kill here leaves the recorded ones whole
    write_text(prompts_path, "".join(line + "\n" for line in kept))
    while done < spec.size:
        n = min(CHUNK, spec.size - done)
        batch, prompts, scenes = training_batch(done, n, world_seed=spec.world_seed, max_objects=spec.max_objects,
                                                resolution=r, relation_prompts=spec.relation_prompts)  # fmt: skip
        images[done : done + n] = ((batch.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        layouts[done : done + n] = layout_maps(scenes).to(torch.uint8).numpy()
        images.flush()
        layouts.flush()
        with prompts_path.open("a", encoding="utf-8") as sink:
            sink.writelines(json.dumps(p) + "\n" for p in prompts)
        done += n
        write_json(folder / "meta.json", {"spec": asdict(spec), "done": done})
        if progress:
            print(f"training cache {folder}: {done}/{spec.size} pairs", flush=True)
    return folder


class TrainingCache:
    """A built cache, read by position: :meth:`batch` wraps around its ``size`` pairs."""

    def __init__(self, folder: str | Path, spec: CacheSpec):
        folder = Path(folder)
        meta = _read_meta(folder)
        if meta is None or meta["spec"] != asdict(spec) or int(meta["done"]) != spec.size:
            raise ExploreError(f"{folder}: no complete training cache for {asdict(spec)}; build it first")
        self.size = spec.size
        self.images = np.load(folder / "images.npy", mmap_mode="r")  # (N, R, R, 3) uint8
        self.layouts = np.load(folder / "layouts.npy", mmap_mode="r")  # (N, C, G, G) uint8
        path = folder / "prompts.jsonl"
        self.prompts = read_jsonl(path)  # a last line cut by a kill is left out, so the count below catches it
        if len(self.prompts) != self.size:
            raise ExploreError(f"{path} has {len(self.prompts)} whole lines, expected {self.size}; delete {folder} to "
                               "rebuild the cache, or point data.cache_dir at a new folder")  # fmt: skip

    def batch(self, start: int, size: int) -> tuple[torch.Tensor, list[str], torch.Tensor]:
        """Images (B, 3, R, R) in [-1, 1], prompts and layout maps (B, C, G, G) of pairs ``start …``."""
        index = (np.arange(start, start + size) % self.size).tolist()
        images = torch.from_numpy(np.stack([self.images[i] for i in index])).permute(0, 3, 1, 2).float() / 127.5 - 1
        layouts = torch.from_numpy(np.stack([self.layouts[i] for i in index])).float()
        return images, [self.prompts[i] for i in index], layouts


def training_cache(data: DataSection, progress: bool = True) -> TrainingCache | None:
    """The cache of ``data.cache_dir`` (built or resumed here), or None without one."""
    d = data
    if d.cache_dir is None:
        return None
    spec = CacheSpec(size=d.cache_size, world_seed=d.world_seed, max_objects=d.max_objects,
                     resolution=d.resolution, relation_prompts=d.relation_prompts)  # fmt: skip
    return TrainingCache(build_cache(d.cache_dir, spec, progress=progress), spec)


def training_data(data: DataSection, progress: bool = True):
    """``batch(start, size) -> (images, prompts, layout maps)``: from the cache (built or resumed here) when
    ``data.cache_dir`` is set, else rendered on the fly (the same pairs either way, up to the cache's wrap)."""
    d = data
    cache = training_cache(d, progress)
    if cache is not None:
        return cache.batch

    def render_batch(start: int, size: int):
        images, prompts, scenes = training_batch(start, size, world_seed=d.world_seed, max_objects=d.max_objects,
                                                 resolution=d.resolution,
                                                 relation_prompts=d.relation_prompts)  # fmt: skip
        return images, prompts, layout_maps(scenes)

    return render_batch
