"""Splits of the shapes world, by seed, and the held-out compositional split.

Scene ``i`` of split ``s`` is sampled from a seed derived with ``numpy.random.SeedSequence``
from ``(base seed, split, i)``, so splits are independent random streams and any single scene
can be regenerated on its own.

- ``train`` / ``val`` / ``test``: scenes that never contain a held-out colour–shape pair;
- ``compositional``: every scene contains at least one held-out pair (e.g. a "red square"),
  whose colour and shape were each seen in training, but never together.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from explore.world.scene import HELD_OUT_PAIRS, Scene, SceneSpec, sample_scene

SPLITS: tuple[str, ...] = ("train", "val", "test", "compositional")


def _check_split(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return SPLITS.index(split)


def split_spec(split: str, spec: SceneSpec = SceneSpec()) -> SceneSpec:
    """The sampling spec of ``split``: held-out pairs excluded, or required for ``compositional``."""
    if _check_split(split) == SPLITS.index("compositional"):
        return replace(spec, exclude_pairs=frozenset(), require_pairs=HELD_OUT_PAIRS)
    return replace(spec, exclude_pairs=HELD_OUT_PAIRS, require_pairs=frozenset())


def scene_seed(split: str, index: int, seed: int = 0) -> int:
    """The seed of scene ``index`` in ``split`` for base ``seed`` (a 32-bit integer)."""
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be non-negative, got index={index}, seed={seed}")
    state = np.random.SeedSequence([seed, _check_split(split), index]).generate_state(1)
    return int(state[0])


def split_scene(split: str, index: int, seed: int = 0, spec: SceneSpec = SceneSpec()) -> Scene:
    """Scene ``index`` of ``split``."""
    return sample_scene(scene_seed(split, index, seed), split_spec(split, spec))


def split_scenes(split: str, n: int, seed: int = 0, spec: SceneSpec = SceneSpec(), start: int = 0) -> list[Scene]:
    """Scenes ``start … start + n - 1`` of ``split``."""
    return [split_scene(split, i, seed, spec) for i in range(start, start + n)]


def held_out_objects(n: int) -> list[Scene]:
    """The first ``n`` objects of the compositional split whose (colour, shape) pair is held out of training, each
    drawn alone in its scene's place (a scene of its own), in split order."""
    scenes, index = [], 0
    while len(scenes) < n:
        scene = split_scene("compositional", index)
        scenes += [replace(scene, objects=(o,)) for o in scene.objects if (o.colour, o.shape) in HELD_OUT_PAIRS]
        index += 1
    return scenes[:n]
