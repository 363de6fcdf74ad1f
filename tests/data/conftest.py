"""Builders for tiny data files used by the data-layer tests, shared through the ``make``
fixture (tests call ``make.png_bytes(...)`` etc.; files always go into ``tmp_path``)."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def solid_png(color: tuple[int, int, int] = (255, 0, 0), size: tuple[int, int] = (6, 4)) -> bytes:
    return png_bytes(Image.new("RGB", size, color))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` × ``height`` but whose pixel data is a few bytes:
    cheap stand-in for a decompression bomb (decoding it would fail, not allocate)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def vlrb_row(example_id: str = "RLAIF-V-14", **overrides: Any) -> dict[str, Any]:
    """One VL-RewardBench row in the current schema, image as a PIL image."""
    row: dict[str, Any] = {
        "id": example_id,
        "query": f"What is shown? ({example_id})",
        "response": ["A red square.", "A blue circle."],
        "image": Image.new("RGB", (6, 4), (255, 0, 0)),
        "human_ranking": [0, 1],
        "models": ["model-a", "model-b"],
        "judge": "human",
        "rationale": None,
        "query_source": "COCO",
        "ground_truth": None,
    }
    row.update(overrides)
    return row


def write_raw_parquet(path: Path, columns: dict[str, list[Any]], types: dict[str, pa.DataType] | None = None) -> Path:
    """Write columns with pyarrow directly (no validation), to build broken files on purpose.

    ``image`` values may be bytes (stored as the HF struct) or None; other types are inferred
    unless given in ``types``.
    """
    types = types or {}
    arrays = {}
    for name, values in columns.items():
        if name == "image" and name not in types:
            values = [None if value is None else {"bytes": value, "path": None} for value in values]
            arrays[name] = pa.array(values, type=IMAGE_TYPE)
        else:
            arrays[name] = pa.array(values, type=types[name] if name in types else None)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(arrays), path)
    return path


def raw_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Turn vlrb_row() dicts into column lists with PNG bytes for images."""
    columns: dict[str, list[Any]] = {name: [] for name in rows[0]}
    for row in rows:
        for name, value in row.items():
            columns[name].append(png_bytes(value) if isinstance(value, Image.Image) else value)
    return columns


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


@pytest.fixture
def make() -> SimpleNamespace:
    """The builders above, as one namespace."""
    return SimpleNamespace(
        png_bytes=png_bytes,
        solid_png=solid_png,
        png_header_only=png_header_only,
        vlrb_row=vlrb_row,
        write_raw_parquet=write_raw_parquet,
        raw_columns=raw_columns,
        write_json=write_json,
    )


@pytest.fixture
def hf_cache(tmp_path: Path) -> str:
    """A private cache folder for datasets calls, so tests never touch ~/.cache."""
    folder = tmp_path / "hf-cache"
    folder.mkdir()
    return str(folder)
