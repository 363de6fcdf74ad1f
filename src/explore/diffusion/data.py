"""Training pairs for text-to-image: shapes-world scenes rendered small, with a prompt each.

Pair ``i`` comes from scene ``i`` of the train split and a generator seeded by that scene, so a
position in the stream (saved in checkpoints) gives back exactly the same batch after a resume.
Prompts use the world's caption styles; a two-object scene whose objects share a row or a column
is sometimes described by their relation instead ("a red circle above a blue square").
"""

from __future__ import annotations

import numpy as np
import torch

from explore.world.layout import layout_map
from explore.world.render import render
from explore.world.scene import Scene, SceneSpec
from explore.world.splits import scene_seed, split_scene
from explore.world.text import CAPTION_STYLES, RELATION_PHRASE, caption, direction


def relation_prompt(scene: Scene) -> str | None:
    """``"a red circle above a blue square"`` for a two-object scene in one row or column, else None."""
    if len(scene.objects) != 2:
        return None
    a, b = scene.objects
    rel = direction(a, b)
    if rel is None:
        return None
    return f"a {a.colour} {a.shape} {RELATION_PHRASE[rel]} a {b.colour} {b.shape}"


def scene_prompt(scene: Scene, rng: np.random.Generator, relation_prompts: float) -> str:
    """A caption of ``scene`` in a random style (or its relation, with probability ``relation_prompts``)."""
    relation = relation_prompt(scene)
    if relation is not None and rng.random() < relation_prompts:
        return relation
    return caption(scene, CAPTION_STYLES[int(rng.integers(len(CAPTION_STYLES)))])


def to_tensor(images) -> torch.Tensor:
    """PIL images → (B, 3, H, W) float32 in [-1, 1]."""
    array = np.stack([np.asarray(image, dtype=np.float32) for image in images])  # (B, H, W, 3)
    return torch.from_numpy(array).permute(0, 3, 1, 2) / 127.5 - 1


def layout_maps(scenes: list[Scene], given_channel: bool = False) -> torch.Tensor:
    """(B, LAYOUT_CHANNELS [+ 1], GRID, GRID) float32 maps of ``scenes`` (:func:`explore.world.layout.layout_map`)."""
    return torch.from_numpy(np.stack([layout_map(scene, given_channel) for scene in scenes]))


def with_given_channel(maps: torch.Tensor) -> torch.Tensor:
    """Append the "map given" channel of ones to (B, LAYOUT_CHANNELS, G, G) maps (see ``layout_map``)."""
    return torch.cat([maps, torch.ones_like(maps[:, :1])], dim=1)


def training_batch(
    start: int,
    size: int,
    *,
    world_seed: int,
    max_objects: int,
    resolution: int,
    relation_prompts: float,
    split: str = "train",
) -> tuple[torch.Tensor, list[str], list[Scene]]:
    """Images (B, 3, R, R) in [-1, 1], prompts and scenes of pairs ``start … start + size - 1``
    (their layout maps: :func:`layout_maps`; a pre-rendered copy: :mod:`explore.diffusion.cache`)."""
    spec = SceneSpec(max_objects=max_objects)
    scenes, prompts = [], []
    for index in range(start, start + size):
        scene = split_scene(split, index, world_seed, spec)
        rng = np.random.default_rng([scene_seed(split, index, world_seed), 7])  # 7: the text-to-image stream
        scenes.append(scene)
        prompts.append(scene_prompt(scene, rng, relation_prompts))
    return to_tensor([render(scene, resolution) for scene in scenes]), prompts, scenes
