"""explore.data.images.load_image: every source kind, every mode, every bad file."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explore.data.images import DEFAULT_MAX_PIXELS, load_image
from explore.errors import ImageError


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image)


# ---- sources ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["str", "path", "bytes", "bytearray", "dict-bytes", "dict-path", "pil"])
def test_every_source_kind_gives_the_same_rgb_pixels(tmp_path: Path, kind: str, make) -> None:
    data = make.solid_png((10, 200, 30), size=(5, 3))
    file = tmp_path / "img.png"
    file.write_bytes(data)
    sources = {
        "str": str(file),
        "path": file,
        "bytes": data,
        "bytearray": bytearray(data),
        "dict-bytes": {"bytes": data, "path": "ignored-when-bytes-present.png"},
        "dict-path": {"bytes": None, "path": str(file)},
        "pil": Image.open(file),
    }
    image = load_image(sources[kind])
    assert image.size == (5, 3)
    assert (pixels(image) == [10, 200, 30]).all()


# ---- modes -----------------------------------------------------------------------------


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.array([[[255, 0, 0, 0], [0, 0, 255, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    file = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(file)
    out = pixels(load_image(file))
    assert out[0, 0].tolist() == [255, 255, 255]  # fully transparent red → white, not red/black
    assert out[0, 1].tolist() == [0, 0, 255]
    assert abs(int(out[0, 2, 0]) - 127) <= 1  # half-transparent black over white → mid gray


def test_la_is_composited_on_white(tmp_path: Path) -> None:
    la = Image.fromarray(np.array([[[0, 0], [0, 255]]], dtype=np.uint8), mode="LA")
    file = tmp_path / "la.png"
    la.save(file)
    out = pixels(load_image(file))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [0, 0, 0]


def test_palette_with_transparency_uses_white_for_the_transparent_index(tmp_path: Path) -> None:
    palette_image = Image.new("P", (2, 1))
    palette_image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)  # index 0 red, 1 green
    palette_image.putpixel((1, 0), 1)
    file = tmp_path / "palette.png"
    palette_image.save(file, transparency=0)
    assert Image.open(file).mode == "P"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's "palette with transparency" warning must not fire
        out = pixels(load_image(file))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [0, 255, 0]


def test_palette_without_transparency_keeps_colours(tmp_path: Path) -> None:
    palette_image = Image.new("RGB", (2, 1), (0, 0, 255)).convert("P")
    file = tmp_path / "palette.gif"
    palette_image.save(file)
    assert (pixels(load_image(file)) == [0, 0, 255]).all()


def test_grayscale_is_replicated_to_three_channels(tmp_path: Path) -> None:
    file = tmp_path / "gray.png"
    Image.new("L", (3, 2), 100).save(file)
    assert (pixels(load_image(file)) == 100).all()


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    levels = np.array([[0, 257 * 100, 65535, 32768, 255]], dtype=np.uint16)
    file = tmp_path / "gray16.png"
    Image.fromarray(levels).save(file)
    assert Image.open(file).mode.startswith("I;16")  # the path under test
    out = pixels(load_image(file))
    # Pillow's convert("L") would give [0, 255, 255, 255, 255]; 255 / 65535 must be ~black.
    assert out[0, :, 0].tolist() == [0, 100, 255, 128, 1]
    assert (out[..., 0] == out[..., 2]).all()


def test_32bit_integer_image_in_16bit_range_is_scaled() -> None:
    image = Image.fromarray(np.array([[0, 65535, 257 * 7]], dtype=np.int32))
    assert image.mode == "I"
    assert pixels(load_image(image))[0, :, 1].tolist() == [0, 255, 7]


def test_32bit_integer_image_out_of_16bit_range_is_refused() -> None:
    image = Image.fromarray(np.array([[0, 70000]], dtype=np.int32))
    with pytest.raises(ImageError, match="outside 16-bit"):
        load_image(image, name="deep.tif")


@pytest.mark.parametrize(
    ("values", "expected"),
    [([[0.0, 0.5, 1.0]], [0, 128, 255]), ([[0.0, 100.0, 255.0]], [0, 100, 255])],
)
def test_float_images_are_scaled_from_their_range(values: list, expected: list) -> None:
    image = Image.fromarray(np.array(values, dtype=np.float32))
    assert image.mode == "F"
    assert pixels(load_image(image))[0, :, 0].tolist() == expected


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    file = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(file, quality=95)  # pure red in CMYK
    assert Image.open(file).mode == "CMYK"
    out = pixels(load_image(file)).astype(int)
    assert np.abs(out - [255, 0, 0]).max() <= 8


@pytest.mark.parametrize(("mode", "tolerance"), [("YCbCr", 4), ("HSV", 4), ("LAB", 10)])
def test_other_colour_spaces_convert_to_rgb(mode: str, tolerance: int) -> None:
    original = Image.new("RGB", (4, 4), (40, 160, 90))
    converted = original.convert(mode)
    assert converted.mode == mode
    out = pixels(load_image(converted)).astype(int)
    assert np.abs(out - [40, 160, 90]).max() <= tolerance  # Pillow's LAB round trip is coarse


def test_one_bit_image(tmp_path: Path) -> None:
    file = tmp_path / "bits.png"
    Image.new("1", (4, 4), 1).save(file)
    assert (pixels(load_image(file)) == 255).all()


# ---- bad files ---------------------------------------------------------------------------


def assert_one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    assert error.value.__cause__ is None  # Pillow's traceback is not chained in
    return message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_names_the_file(tmp_path: Path, fmt: str) -> None:
    noise = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format=fmt)
    file = tmp_path / f"cut.{fmt.lower()}"
    file.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(ImageError) as error:
        load_image(file)
    message = assert_one_line(error)
    assert str(file) in message and "truncated" in message


def test_html_saved_as_jpg_is_recognised(tmp_path: Path) -> None:
    file = tmp_path / "photo.jpg"
    file.write_bytes(b"<!DOCTYPE html>\n<html><body>403 Forbidden</body></html>")
    with pytest.raises(ImageError) as error:
        load_image(file)
    message = assert_one_line(error)
    assert "photo.jpg" in message and "HTML" in message and "re-download" in message


def test_random_bytes_are_not_an_image() -> None:
    with pytest.raises(ImageError, match=r"row 7: is not an image"):
        load_image(b"\x00\x01garbage" * 10, name="row 7")


def test_bomb_above_pillows_limit_is_refused_with_its_size(tmp_path: Path, make) -> None:
    file = tmp_path / "bomb.png"
    file.write_bytes(make.png_header_only(100_000, 100_000))
    with pytest.raises(ImageError) as error:
        load_image(file)
    message = assert_one_line(error)
    assert "bomb.png" in message and "10000000000 pixels" in message


def test_size_is_checked_from_the_header_before_decoding(tmp_path: Path, make) -> None:
    # 12000×12000 is above Pillow's warning threshold; the pixel data is garbage, so any
    # decoding attempt would fail with a different message (and allocate 432 MB first).
    file = tmp_path / "big.png"
    file.write_bytes(make.png_header_only(12_000, 12_000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not leak
        with pytest.raises(ImageError) as error:
            load_image(file, max_pixels=100_000_000)
    message = assert_one_line(error)
    assert "12000×12000" in message and "100,000,000" in message


@pytest.mark.parametrize(("max_pixels", "ok"), [(100, True), (99, False)])
def test_max_pixels_boundary(max_pixels: int, ok: bool, make) -> None:
    data = make.solid_png(size=(10, 10))
    if ok:
        assert load_image(data, max_pixels=max_pixels).size == (10, 10)
    else:
        with pytest.raises(ImageError, match="10×10"):
            load_image(data, max_pixels=max_pixels)


def test_default_limit_matches_pillow() -> None:
    assert DEFAULT_MAX_PIXELS == 2 * Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize(
    ("make_source", "expected"),
    [
        (lambda tmp: tmp / "missing.png", "not found"),
        (lambda tmp: tmp, "not a file"),
        (lambda tmp: b"", "empty"),
        (lambda tmp: {"bytes": None, "path": None}, "no image"),
        (lambda tmp: {"bytes": b"x", "pixels": 1}, "unexpected keys"),
        (lambda tmp: {"bytes": "not bytes"}, "expected bytes"),
        (lambda tmp: Image.new("RGB", (0, 5)), "zero size"),
        (lambda tmp: 42, "cannot load an image from int"),
    ],
)
def test_bad_sources_raise_one_line_image_errors(tmp_path: Path, make_source, expected: str) -> None:
    with pytest.raises(ImageError) as error:
        load_image(make_source(tmp_path))
    assert expected in assert_one_line(error)


def test_empty_file_error_names_the_file(tmp_path: Path) -> None:
    file = tmp_path / "empty.jpg"
    file.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.jpg: image file is empty"):
        load_image(file)


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_invalid_max_pixels_is_refused(bad, make) -> None:
    with pytest.raises(ImageError, match="max_pixels"):
        load_image(make.solid_png(), max_pixels=bad)


def test_lazy_truncated_pil_image_is_caught(tmp_path: Path, make) -> None:
    data = make.png_bytes(Image.fromarray(np.random.default_rng(1).integers(0, 255, (16, 16, 3), dtype=np.uint8)))
    lazy = Image.open(io.BytesIO(data[: len(data) // 2]))  # header fine, pixels missing
    with pytest.raises(ImageError, match="truncated"):
        load_image(lazy, name="frame-3")
