"""Data layer: every source becomes a list of :class:`Example`; every image goes through
:func:`load_image`.

- :mod:`explore.data.images`: the one safe image loader (size checked before decoding).
- :mod:`explore.data.vlrewardbench`: VL-RewardBench loader, writer and official categories.
- :mod:`explore.data.vqav2`: VQAv2 questions + annotations + COCO images.
- :mod:`explore.data.coco`: COCO-style captions + images.
"""

from explore.data.coco import load_coco_captions
from explore.data.example import Example
from explore.data.images import load_image
from explore.data.vlrewardbench import (
    category_from_id,
    load_vlrewardbench,
    write_vlrewardbench_parquet,
)
from explore.data.vqav2 import load_vqav2

__all__ = [
    "Example",
    "category_from_id",
    "load_coco_captions",
    "load_image",
    "load_vlrewardbench",
    "load_vqav2",
    "write_vlrewardbench_parquet",
]
