"""Render a :class:`~explore.world.scene.Scene` to a PIL image.

Shapes are drawn with PIL at ``SUPERSAMPLE`` times the target resolution and downsampled with a
box filter, which anti-aliases edges. Noise comes from a generator seeded by the scene, so the
same scene always gives the same pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from explore.world.scene import COLOURS, Obj, Scene

SUPERSAMPLE = 4
DEFAULT_RESOLUTION = 64


def _rotate(points: list[tuple[float, float]], cx: float, cy: float, degrees: float):
    a = math.radians(degrees)
    cos, sin = math.cos(a), math.sin(a)
    return [(cx + (x - cx) * cos - (y - cy) * sin, cy + (x - cx) * sin + (y - cy) * cos) for x, y in points]


def _polygon(obj: Obj, side: int) -> list[tuple[float, float]] | None:
    """Vertices of the object's outline in pixels (None for a circle)."""
    cx, cy, r = obj.x * side, obj.y * side, obj.radius * side
    if obj.shape == "circle":
        return None
    if obj.shape == "square":
        h = r / math.sqrt(2) * 1.15  # a little larger than inscribed, so it reads as a square
        pts = [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    elif obj.shape == "diamond":
        pts = [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    elif obj.shape == "triangle":
        pts = [(cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a))) for a in (-90, 30, 150)]
    elif obj.shape == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.45
            a = math.radians(-90 + 36 * k)
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
    elif obj.shape == "cross":
        t = r * 0.36  # half the arm thickness
        pts = [
            (cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t),
            (cx + r, cy + t), (cx + t, cy + t), (cx + t, cy + r), (cx - t, cy + r),
            (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t),
        ]  # fmt: skip
    else:
        raise ValueError(f"unknown shape {obj.shape!r}")
    return _rotate(pts, cx, cy, obj.rotation)


def render(scene: Scene, resolution: int = DEFAULT_RESOLUTION,
           colours: Sequence[tuple[int, int, int]] | None = None) -> Image.Image:  # fmt: skip
    """Draw ``scene`` as an RGB image of ``resolution × resolution`` pixels.

    ``colours``: one RGB per object, drawn instead of its named colour (the recoloured shapes of
    :func:`explore.world.examples.recoloured_shape_example`); None draws the named colours.

    Raises:
        ValueError: if ``resolution`` is smaller than 16 pixels, or ``colours`` does not give one RGB per object.
    """
    if resolution < 16:
        raise ValueError(f"resolution must be at least 16 pixels, got {resolution}")
    if colours is not None and len(colours) != len(scene.objects):
        raise ValueError(f"colours gives {len(colours)} RGB values for {len(scene.objects)} objects")
    side = resolution * SUPERSAMPLE
    canvas = Image.new("RGB", (side, side), tuple(scene.background))
    draw = ImageDraw.Draw(canvas)
    for i, obj in enumerate(scene.objects):
        colour = COLOURS[obj.colour] if colours is None else tuple(colours[i])
        points = _polygon(obj, side)
        if points is None:
            cx, cy, r = obj.x * side, obj.y * side, obj.radius * side
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
        else:
            draw.polygon(points, fill=colour)
    image = canvas.resize((resolution, resolution), Image.Resampling.BOX)
    if scene.noise > 0:
        rng = np.random.default_rng(scene.seed)
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels + rng.normal(0.0, scene.noise, size=pixels.shape)
        image = Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")
    return image
