"""What the page hands the models: uploaded images (checked), world scenes, and images made for showing.

Every upload goes through :func:`explore.data.images.load_image` with a pixel limit far below Pillow's:
the models read 64–224 px images, so a 4096 × 4096 upload is already generous, and a small file that
claims a huge size (a decompression bomb) is refused from its header before any pixel is decoded.
The byte limit (:data:`MAX_FILE_SIZE`) is the one Gradio enforces at upload (``launch(max_file_size=...)``);
:func:`read_upload` checks it again for callers that bypass Gradio.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from explore.data.images import load_image
from explore.errors import ExploreError, ImageError
from explore.world.detect import Detection
from explore.world.render import DEFAULT_RESOLUTION, render
from explore.world.scene import Scene
from explore.world.splits import SPLITS, split_scene
from explore.world.text import caption

MAX_FILE_SIZE = "10mb"  # Gradio's upload limit (launch(max_file_size=...)), one for the whole app
MAX_FILE_BYTES = 10 * 1024 * 1024  # the same, in bytes (Gradio reads "mb" as 1024²)
MAX_UPLOAD_PIXELS = 4096 * 4096  # width × height above this is refused from the header
SHOW_SIDE = 256  # images are enlarged (nearest) to about this many pixels on the page


def read_upload(path: str | Path | None) -> Image.Image:
    """Decode an uploaded file to RGB, or raise one line that says what is wrong with it.

    Raises:
        ImageError: nothing uploaded, a file over :data:`MAX_FILE_BYTES`, not an image, truncated, or more
            than :data:`MAX_UPLOAD_PIXELS` pixels (a possible decompression bomb).
    """
    if path is None or str(path) == "":
        raise ImageError("no image: upload one, or choose 'world scene' as the image source")
    path = Path(path)
    name = path.name
    if path.is_file() and path.stat().st_size > MAX_FILE_BYTES:
        raise ImageError(f"{name}: {path.stat().st_size / 2**20:.1f} MB is above the upload limit of "
                         f"{MAX_FILE_SIZE}; use a smaller image")  # fmt: skip
    return load_image(path, max_pixels=MAX_UPLOAD_PIXELS, name=name)


def world_scene(split: str, index: float, seed: float) -> Scene:
    """Scene ``index`` of a world ``split`` (the scenes ``explore world export`` writes for that seed).

    Raises:
        ExploreError: an unknown split, or a negative or fractional index or seed.
    """
    if split not in SPLITS:
        raise ExploreError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    for label, value in (("scene index", index), ("seed", seed)):
        if value is None or float(value) != int(value) or int(value) < 0:
            raise ExploreError(f"the {label} must be a whole number >= 0, got {value!r}")
    return split_scene(split, int(index), int(seed))


def render_scene(scene: Scene, resolution: int = DEFAULT_RESOLUTION) -> Image.Image:
    """The scene rendered as the world renders its data (``resolution`` px: the model's own)."""
    return render(scene, resolution)


def scene_text(scene: Scene) -> str:
    """The scene's canonical caption: the truth to compare an answer with."""
    return caption(scene)


def enlarged(image: Image.Image, side: int = SHOW_SIDE) -> Image.Image:
    """``image`` scaled by a whole factor (nearest, so the world's pixels stay sharp) to about ``side`` px."""
    factor = max(1, side // max(image.size))
    return image.resize((image.size[0] * factor, image.size[1] * factor), Image.Resampling.NEAREST)


def draw_detections(image: Image.Image, detections: list[Detection], side: int = SHOW_SIDE) -> Image.Image:
    """``image`` enlarged with each detected object circled and labelled "size colour shape".

    A detection has a centre and an area, not a box: the circle has the area's radius.
    """
    shown = enlarged(image, side).convert("RGB")
    width, height = shown.size
    draw = ImageDraw.Draw(shown)
    font = ImageFont.load_default(size=12)
    scale = width / image.size[0]
    for found in detections:
        x, y = found.x * width, found.y * height
        radius = max(4.0, (found.area / 3.14159) ** 0.5 * scale)
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), outline=(0, 0, 0), width=2)
        label = f"{found.size} {found.colour} {found.shape}"
        text_width = draw.textlength(label, font=font)
        top = y + radius + 2 if y + radius + 16 < height else y - radius - 16
        left = min(max(0.0, x - text_width / 2), width - text_width - 2)
        draw.rectangle((left, top, left + text_width + 2, top + 14), fill=(255, 255, 255))
        draw.text((left + 1, top), label, fill=(0, 0, 0), font=font)
    return shown
