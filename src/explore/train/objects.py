"""Vision pretraining on the world's objects: the analogue of InstructBLIP's pretrained ViT.

InstructBLIP never trains its vision encoder: it starts from EVA-CLIP's ViT-g, pretrained on
billions of images. Ours starts from random weights, and the language-model loss is a weak teacher
for it: a batch of 32 examples holds about two shape questions, and the gradient reaches the ViT
through the LM, the projection and the Q-Former. Measured on the shipped model
(``benchmarks/vision_probe.py``): after 7,400 steps a linear probe reads an object's shape from the
ViT token under it no better than from a random ViT (34% vs 37%, six shapes).

An ``objective: objects`` stage trains the ViT directly instead, like a ViT pretrained on labelled
images: for every object of a scene, linear heads on the token of the patch under the object's
centre predict its shape, colour, size and grid position (summed cross-entropies). The heads only
exist during the stage (and in its checkpoints); the model keeps the ViT. Written here because no
library offers a dense per-object objective for an HF ViT.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from explore.world.render import render
from explore.world.scene import CELL_NAMES, COLOURS, SHAPES, SIZES, Scene, SceneSpec
from explore.world.splits import split_scene

POSITIONS: tuple[str, ...] = tuple(name for row in CELL_NAMES for name in row)
ATTRIBUTES: dict[str, tuple[str, ...]] = {"shape": tuple(SHAPES), "colour": tuple(COLOURS), "size": tuple(SIZES),
                                          "position": POSITIONS}  # fmt: skip


class ObjectHeads(nn.Module):
    """One linear classifier per attribute over a ViT token of width ``hidden_size``."""

    file = "object_heads.safetensors"  # beside a checkpoint's model, for a resume

    def __init__(self, hidden_size: int):
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Linear(hidden_size, len(values)) for name, values in ATTRIBUTES.items()})

    def forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: head(tokens) for name, head in self.heads.items()}


def object_targets(scenes: list[Scene], grid: int) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """(image index, token index, labels per attribute) of every object; token 0 is the class token."""
    rows, tokens, labels = [], [], {name: [] for name in ATTRIBUTES}
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            rows.append(i)
            tokens.append(1 + min(int(obj.y * grid), grid - 1) * grid + min(int(obj.x * grid), grid - 1))
            for name, values in ATTRIBUTES.items():
                labels[name].append(values.index(obj.position if name == "position" else getattr(obj, name)))
    return torch.tensor(rows), torch.tensor(tokens), {k: torch.tensor(v) for k, v in labels.items()}


def objects_loss(vision_model, heads: ObjectHeads, pixel_values: torch.Tensor, scenes: list[Scene]):
    """(loss, accuracy per attribute) of ``scenes`` rendered as ``pixel_values``."""
    config = vision_model.config
    rows, tokens, labels = object_targets(scenes, config.image_size // config.patch_size)
    hidden = vision_model(pixel_values=pixel_values).last_hidden_state
    logits = heads(hidden[rows.to(hidden.device), tokens.to(hidden.device)])
    loss = sum(F.cross_entropy(logits[k], labels[k].to(hidden.device)) for k in ATTRIBUTES)
    accuracy = {k: float((logits[k].argmax(-1).cpu() == labels[k]).float().mean()) for k in ATTRIBUTES}
    return loss, accuracy


def object_scenes(split: str, start: int, n: int, *, world_seed: int, spec: SceneSpec) -> list[Scene]:
    """Scenes ``start … start + n - 1`` of ``split`` (the same indexing as the training stream)."""
    return [split_scene(split, i, world_seed, spec) for i in range(start, start + n)]


def pixels(scenes: list[Scene], processor, resolution: int) -> torch.Tensor:
    """The processor's pixel values for ``scenes`` rendered at ``resolution``."""
    images = [render(scene, resolution) for scene in scenes]
    return processor.image_processor(images, return_tensors="pt")["pixel_values"]


@torch.no_grad()
def validate_objects(vision_model, heads: ObjectHeads, processor, *, n: int, world_seed: int, resolution: int,
                     batch_size: int, spec: SceneSpec) -> dict[str, float]:  # fmt: skip
    """Head accuracy per attribute over the objects of ``n`` validation scenes, and their mean."""
    was_training = vision_model.training
    vision_model.eval()
    device = next(vision_model.parameters()).device
    correct = {k: 0.0 for k in ATTRIBUTES}
    count = 0
    for start in range(0, n, batch_size):
        scenes = object_scenes("val", start, min(batch_size, n - start), world_seed=world_seed, spec=spec)
        objects = sum(len(s.objects) for s in scenes)
        _, accuracy = objects_loss(vision_model, heads, pixels(scenes, processor, resolution).to(device), scenes)
        for k in ATTRIBUTES:
            correct[k] += accuracy[k] * objects
        count += objects
    vision_model.train(was_training)
    scores = {k: correct[k] / max(count, 1) for k in ATTRIBUTES}
    scores["overall"] = sum(scores.values()) / len(ATTRIBUTES)
    return scores
