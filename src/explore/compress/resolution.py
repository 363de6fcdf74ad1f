"""Lower input resolution: a smaller image, with the ViT's position embeddings interpolated.

With patch size p, an image of side s gives (s / p)² patches; the ViT's cost grows with their
number (quadratically in attention). The position table is resized with transformers' own
``InstructBlipVisionEmbeddings.interpolate_pos_encoding`` (bicubic, as DINO / DINOv2 do) and stored,
so the result is a normal model of the new size: config, embeddings and image processor agree.
"""

from __future__ import annotations

import copy

import torch
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

from explore.errors import ExploreError


def change_resolution(
    model: InstructBlipForConditionalGeneration, processor: InstructBlipProcessor, image_size: int
) -> tuple[InstructBlipForConditionalGeneration, InstructBlipProcessor]:
    """A copy of ``model`` and ``processor`` that take ``image_size × image_size`` images.

    Raises ExploreError unless ``image_size`` is a positive multiple of the patch size.
    """
    embeddings = model.vision_model.embeddings
    patch = embeddings.patch_size
    if image_size <= 0 or image_size % patch:
        raise ExploreError(f"image size {image_size} must be a positive multiple of the patch size {patch}")
    model, processor = copy.deepcopy(model), copy.deepcopy(processor)
    embeddings = model.vision_model.embeddings
    grid = image_size // patch
    # A stand-in batch with the new number of tokens makes HF interpolate its table for that grid.
    stand_in = torch.zeros(1, grid * grid + 1, embeddings.embed_dim)
    with torch.no_grad():
        table = embeddings.interpolate_pos_encoding(stand_in, image_size, image_size)  # (1, grid² + 1, D)
    embeddings.position_embedding = torch.nn.Parameter(table.clone())
    embeddings.image_size = image_size
    embeddings.num_patches = grid * grid
    embeddings.num_positions = grid * grid + 1
    model.config.vision_config.image_size = image_size
    processor.image_processor.size = {"height": image_size, "width": image_size}
    return model, processor
