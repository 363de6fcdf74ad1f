"""The one image loader: every image in explore goes through :func:`load_image`.

It accepts a path, raw bytes, a Hugging Face ``datasets`` image struct (``{"bytes", "path"}``)
or a ``PIL.Image``, and returns an 8-bit RGB ``PIL.Image``. Before anything is decoded it
reads width × height from the header (``Image.open`` is lazy) and refuses decompression
bombs; it turns Pillow's own errors (truncated data, unknown format) into a one-line
:class:`~explore.errors.ImageError` that names the file and says what to do.

Mode handling (all end as RGB):
    RGBA / LA / PA / P or L with transparency → composited on white (not a black background);
    I;16 / I (16-bit grayscale) → scaled 0..65535 → 0..255 with rounding (Pillow's own
    ``convert("L")`` clips everything above 255 to white); F → 0..1 or 0..255 range;
    CMYK / YCbCr / LAB / HSV / 1 / L → Pillow's conversion.

Pillow's warnings raised while decoding are logged (one line, naming the image) instead of
printed; this uses ``warnings.catch_warnings``, which is process-wide, so decode from worker
processes rather than threads if other threads rely on their own warning filters.
"""

from __future__ import annotations

import io
import logging
import struct
import warnings
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image

from explore.errors import ImageError

logger = logging.getLogger(__name__)

# Pillow raises DecompressionBombError above 2 × Image.MAX_IMAGE_PIXELS (2 × 89,478,485);
# we use the same number as our default so both checks agree.
DEFAULT_MAX_PIXELS = 2 * 89_478_485

ImageSource = Union[str, Path, bytes, bytearray, memoryview, Mapping, Image.Image]

# Errors Pillow's decoders raise for bad data (truncated streams, unknown formats, bad headers).
_PILLOW_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)

_BACKGROUND = (255, 255, 255)  # transparent pixels are composited on white


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
) -> Image.Image:
    """Decode ``source`` safely and return it as an 8-bit RGB image.

    Args:
        source: a file path (str / Path), encoded bytes, a ``{"bytes": ..., "path": ...}`` dict
            (Hugging Face ``datasets`` image struct; bytes win over path), or a PIL image.
        max_pixels: refuse images whose header says width × height is above this. Pillow's
            own limit (``2 * Image.MAX_IMAGE_PIXELS``) still applies above it.
        name: how to name the image in error messages (defaults to the path, or "<bytes>").

    Returns:
        a decoded ``PIL.Image`` in mode "RGB" (same size as the source).

    Raises:
        ImageError: missing or empty file, not an image, truncated, zero-sized, too large,
            or an unsupported source type. Always one line that names the image.
    """
    if not isinstance(max_pixels, int) or max_pixels < 1:
        raise ImageError(f"max_pixels must be a positive int, got {max_pixels!r}")
    if isinstance(source, Image.Image):
        label = name or _pil_label(source)
        return _finish(source, label, max_pixels)
    data, label = _read_source(source, name)
    image = _open(data, label)
    return _finish(image, label, max_pixels)


def _read_source(source: ImageSource, name: str | None) -> tuple[bytes, str]:
    """Return the encoded bytes of ``source`` and a label for messages."""
    if isinstance(source, (str, Path)):
        return _read_file(Path(source), name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _nonempty(bytes(source), name or "<bytes>")
    if isinstance(source, Mapping):
        unknown = sorted(set(source) - {"bytes", "path"})
        if unknown:
            raise ImageError(
                f"{name or 'image dict'}: unexpected keys {unknown}; an image dict has only "
                "'bytes' and 'path' (the Hugging Face datasets Image struct)"
            )
        data = source["bytes"] if "bytes" in source else None
        path = source["path"] if "path" in source else None
        if data is not None:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise ImageError(
                    f"{name or path or 'image dict'}: 'bytes' is {type(data).__name__}, "
                    "expected bytes"
                )
            return _nonempty(bytes(data), name or path or "<bytes>")
        if path:
            return _read_file(Path(path), name)
        raise ImageError(
            f"{name or 'image dict'}: both 'bytes' and 'path' are empty; the row has no image"
        )
    raise ImageError(
        f"{name or 'image'}: cannot load an image from {type(source).__name__}; pass a path, "
        "bytes, a {'bytes', 'path'} dict or a PIL image"
    )


def _read_file(path: Path, name: str | None) -> tuple[bytes, str]:
    label = name or str(path)
    if not path.exists():
        raise ImageError(f"{label}: image file not found; check the path and image folder")
    if not path.is_file():
        raise ImageError(f"{label}: is not a file (a folder?); pass the image file itself")
    return _nonempty(path.read_bytes(), label)


def _nonempty(data: bytes, label: str) -> tuple[bytes, str]:
    if not data:
        raise ImageError(f"{label}: image file is empty (0 bytes); re-download or re-export it")
    return data, label


def _open(data: bytes, label: str) -> Image.Image:
    """Identify the format and read the header only (no pixel decoding)."""
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below replaces Pillow's warning.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"{label}: refusing to decode a possible decompression bomb: {exc} "
            "Use a smaller image; only trusted files may exceed Pillow's limit"
        ) from None
    except Image.UnidentifiedImageError:
        raise ImageError(f"{label}: {_describe_non_image(data)}") from None
    except _PILLOW_ERRORS as exc:
        raise ImageError(f"{label}: unreadable image header ({_one_line(exc)}); re-export it") from None


def _describe_non_image(data: bytes) -> str:
    head = data[:64].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")):
        return (
            "is an HTML/XML page, not an image (a failed download saved under an image name?); "
            "re-download the file"
        )
    return (
        f"is not an image Pillow can read (first bytes {data[:8]!r}); check the file is a "
        "PNG/JPEG/... and not corrupted"
    )


def _finish(image: Image.Image, label: str, max_pixels: int) -> Image.Image:
    """Check size, decode pixels and convert to RGB."""
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageError(f"{label}: image has zero size ({width}×{height}); re-export it")
    if width * height > max_pixels:
        raise ImageError(
            f"{label}: image is {width}×{height} = {width * height:,} pixels, above the limit "
            f"of {max_pixels:,} (possible decompression bomb); downscale it or raise max_pixels"
        )
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            image.load()
            rgb = _to_rgb(image, label)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{label}: refusing to decode a possible decompression bomb: {exc}") from None
    except _PILLOW_ERRORS as exc:
        raise ImageError(
            f"{label}: cannot decode image ({_one_line(exc)}); the file is truncated or "
            "corrupted, re-download or re-export it"
        ) from None
    for warning in caught:
        logger.warning("%s: %s", label, _one_line(warning.message))
    return rgb


def _to_rgb(image: Image.Image, label: str) -> Image.Image:
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        return _gray_to_rgb(_scale_16bit(np.asarray(image), label))
    if mode == "F":
        return _gray_to_rgb(_scale_float(np.asarray(image), label))
    if mode == "La":  # premultiplied alpha: Pillow converts it to LA only
        image, mode = image.convert("LA"), "LA"
    has_alpha = mode in ("RGBA", "RGBa", "LA", "PA") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _scale_16bit(values: np.ndarray, label: str) -> np.ndarray:
    """Map 16-bit gray levels 0..65535 to 0..255, rounding to nearest (65535 → 255, 257·k → k)."""
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 65535:
        raise ImageError(
            f"{label}: 32-bit integer image with values {low}..{high}, outside 16-bit 0..65535; "
            "save it as 8- or 16-bit"
        )
    wide = values.astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _scale_float(values: np.ndarray, label: str) -> np.ndarray:
    """Map float gray levels in 0..1 (or already 0..255) to 0..255."""
    if not np.isfinite(values).all():
        raise ImageError(f"{label}: float image contains NaN or infinity; re-export it")
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        return np.rint(values * 255.0).astype(np.uint8)
    if low >= 0.0 and high <= 255.0:
        return np.rint(values).astype(np.uint8)
    raise ImageError(
        f"{label}: float image with values {low:g}..{high:g}, expected 0..1 or 0..255; "
        "save it as an 8-bit image"
    )


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(gray)).convert("RGB")


def _pil_label(image: Image.Image) -> str:
    filename = getattr(image, "filename", "")
    return str(filename) if filename else f"<PIL image {image.mode} {image.size[0]}×{image.size[1]}>"


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
