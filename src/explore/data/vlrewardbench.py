"""VL-RewardBench (arXiv 2411.17451): load it as judge :class:`Example` values, or write it.

Sources: the Hugging Face dataset ``MMInstruction/VL-RewardBench`` (needs internet or a
cached copy), one local parquet file, or a folder of parquet files (the hub layout,
``data/test-00000-of-00001.parquet``). Every file is validated before any image is decoded.

Two schemas exist on the hub (dataset card ``dataset_info``):
    current (1,247 rows on main): id, query, response, image, human_ranking, models, judge,
        rationale, query_source, ground_truth
    old (revision 60630ac..., 1,250 rows, train + test splits): the same plus ``meta`` (str)
        and ``human_error_analysis`` (list[str])
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from explore.data._validate import check_limit
from explore.data.example import Example
from explore.data.images import DEFAULT_MAX_PIXELS, load_image
from explore.data.vlrewardbench_schema import (
    CATEGORIES,
    CURRENT_COLUMNS,
    OLD_COLUMNS,
    category_from_id,
    check_columns,
    check_keys,
    check_row,
    row_label,
    subset_from_id,
)
from explore.errors import ExploreError, SchemaError

__all__ = [
    "CATEGORIES", "CURRENT_COLUMNS", "HUB_ID", "OLD_COLUMNS", "OLD_SCHEMA_REVISION",
    "PINNED_REVISION", "category_from_id", "load_vlrewardbench", "subset_from_id",
    "write_vlrewardbench_parquet",
]

HUB_ID = "MMInstruction/VL-RewardBench"
# A full commit sha of the current (1,247-row) revision could not be resolved offline: public
# mirrors of the dataset card show only short shas (README blame on main: 49b8e26, 0e6e627;
# the 1,250-row current-schema upload: cdb956c). Replace "main" with the full sha from
# https://huggingface.co/datasets/MMInstruction/VL-RewardBench/commits/main when online.
PINNED_REVISION = "main"
# Full sha of the old-schema revision (README "Upload dataset" 60630ac, seen on a hub mirror).
OLD_SCHEMA_REVISION = "60630ac36ca93c0ca30249bd1ab3706170836cea"

_HUB_ID_PATTERN = re.compile(r"^[\w.-]+/[\w.-]+$")
_HUB_SHARD_PATTERN = re.compile(r"^(\w+)-\d{5}-of-\d{5}\.parquet$")


def load_vlrewardbench(
    source: str | Path = HUB_ID,
    revision: str = PINNED_REVISION,
    split: str = "test",
    limit: int | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Example]:
    """Load VL-RewardBench as ``task="judge"`` examples with decoded RGB images.

    Args:
        source: a hub id (loaded with ``datasets.load_dataset(source, revision, split)``), a
            parquet file, or a folder of parquet files (``<split>-NNNNN-of-NNNNN.parquet``
            shards are filtered by ``split``; other names are all read).
        revision: hub revision (ignored for local files).
        split: hub split, or the shard prefix to pick inside a folder.
        limit: keep only the first ``limit`` rows (None: all).
        max_pixels: per-image pixel limit passed to :func:`load_image`.

    Returns:
        one Example per row, in file order: prompt = query, responses = the two answers in
        stored order, preferred = index of the human-preferred answer, category from the id.

    Raises:
        SchemaError: empty/unreadable file, missing or unexpected columns, or a bad row (the
            message names the row id and column). ExploreError: source not found / not
            reachable. ImageError: an image that cannot be decoded.
    """
    check_limit(limit)
    tables = _read_tables(source, revision, split)
    rows: list[tuple[str, int, dict[str, Any], pa.Table]] = []
    for label, table in tables:
        schema = check_columns(table.column_names, label)
        if table.num_rows == 0:
            raise SchemaError(f"{label}: has no rows; re-export the file")
        images_missing = table.column("image").is_null().to_pylist()
        for index, row in enumerate(table.drop_columns(["image"]).to_pylist()):
            where = row_label(label, index, row)
            check_row(row, where)
            if images_missing[index]:
                raise SchemaError(f"{where}: column 'image' is empty; every row needs an image")
            row["schema"] = schema
            rows.append((label, index, row, table))
    if limit is not None:
        rows = rows[:limit]
    return [_to_example(label, index, row, table, max_pixels) for label, index, row, table in rows]


def write_vlrewardbench_parquet(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows in the current VL-RewardBench schema as a Hugging Face parquet file.

    Each row is a mapping with exactly :data:`CURRENT_COLUMNS`; ``image`` is a PIL image
    (stored as PNG) or encoded image bytes (stored as given). The file is written through
    ``datasets`` (``Dataset.from_dict(...).cast_column("image", datasets.Image())``) so it has
    the hub's layout, and appears atomically (temporary file, then rename).

    Raises:
        SchemaError: no rows, missing / unexpected keys, or a bad value (names row and column).
        ImageError: an image that does not decode.
    """
    import datasets  # heavy import, only needed here and for hub loading

    columns: dict[str, list[Any]] = {name: [] for name in CURRENT_COLUMNS}
    count = 0
    for index, row in enumerate(rows):
        where = row_label("row to write", index, row)
        check_keys(row, where)
        check_row(row, where)
        for name in CURRENT_COLUMNS:
            value = row[name]
            if name == "image":
                value = _encode_image(value, where)
            elif name == "human_ranking":
                value = [int(rank) for rank in value]
            elif name in ("response", "models") and value is not None:
                value = list(value)
            columns[name].append(value)
        count += 1
    if count == 0:
        raise SchemaError("write_vlrewardbench_parquet: no rows to write")
    # datasets >= 4 spells list features List; 3.x only has Sequence (same parquet type).
    list_of = datasets.List if hasattr(datasets, "List") else datasets.Sequence
    string, strings = datasets.Value("string"), list_of(datasets.Value("string"))
    features = datasets.Features(
        {
            "id": string, "query": string, "response": strings, "image": datasets.Value("binary"),
            "human_ranking": list_of(datasets.Value("int64")), "models": strings,
            "judge": string, "rationale": string, "query_source": string, "ground_truth": string,
        }
    )
    dataset = datasets.Dataset.from_dict(columns, features=features)
    dataset = dataset.cast_column("image", datasets.Image())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    dataset.to_parquet(str(partial))
    os.replace(partial, path)
    return path


def _read_tables(source: str | Path, revision: str, split: str) -> list[tuple[str, pa.Table]]:
    path = Path(source)
    if path.is_file():
        return [(str(path), _read_parquet(path))]
    if path.is_dir():
        return [(str(file), _read_parquet(file)) for file in _parquet_files(path, split)]
    text = str(source)
    if _HUB_ID_PATTERN.match(text) and not text.endswith(".parquet"):
        return [(f"{text}@{revision}[{split}]", _load_from_hub(text, revision, split))]
    raise ExploreError(
        f"{source}: not found; pass a parquet file, a folder of parquet files or a hub id "
        f"such as {HUB_ID!r}"
    )


def _parquet_files(folder: Path, split: str) -> list[Path]:
    files = sorted(file for file in folder.rglob("*.parquet") if file.is_file())
    if not files:
        raise ExploreError(f"{folder}: no .parquet files in this folder; pass the dataset's data folder")
    splits = {match.group(1) for file in files if (match := _HUB_SHARD_PATTERN.match(file.name))}
    chosen = [
        file for file in files
        if file.stem == split or ((m := _HUB_SHARD_PATTERN.match(file.name)) and m.group(1) == split)
    ]
    if chosen:
        return chosen
    if splits:
        raise ExploreError(
            f"{folder}: no parquet shards for split {split!r}; found splits {sorted(splits)}"
        )
    return files


def _read_parquet(path: Path) -> pa.Table:
    if path.stat().st_size == 0:
        raise SchemaError(f"{path}: file is empty (0 bytes); re-download or re-export it")
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(
            f"{path}: not a readable parquet file ({_one_line(exc)}); re-download it"
        ) from None


def _load_from_hub(source: str, revision: str, split: str) -> pa.Table:
    import datasets

    try:
        dataset = datasets.load_dataset(source, revision=revision, split=split)
    except (ConnectionError, FileNotFoundError) as exc:
        if datasets.config.HF_HUB_OFFLINE:
            raise ExploreError(
                f"{source}@{revision}: no such local file or folder, and the hub dataset is not in "
                "the Hugging Face cache while HF_HUB_OFFLINE=1; pass a local parquet file or folder "
                "(the dataset's data/test-*.parquet)"
            ) from None
        raise ExploreError(
            f"{source}@{revision}: no such local file or folder, and could not load from the Hugging "
            f"Face Hub ({_one_line(exc)}); check the id and your connection, or pass a local parquet "
            "file or folder"
        ) from None
    except ValueError as exc:  # datasets raises ValueError for an unknown split
        raise ExploreError(f"{source}@{revision}: {_one_line(exc)}") from None
    if "image" in dataset.column_names:
        dataset = dataset.cast_column("image", datasets.Image(decode=False))
    return dataset.with_format("arrow")[:]


def _to_example(
    label: str, index: int, row: dict[str, Any], table: pa.Table, max_pixels: int
) -> Example:
    example_id = row["id"]
    image_value = table.column("image")[index].as_py()
    image = load_image(image_value, max_pixels=max_pixels, name=row_label(label, index, row))
    meta = {name: row[name] for name in row if name not in ("id", "query", "response")}
    meta["subset"] = subset_from_id(example_id)
    return Example(
        id=example_id,
        task="judge",
        image=image,
        prompt=row["query"],
        responses=list(row["response"]),
        preferred=list(row["human_ranking"]).index(0),
        category=category_from_id(example_id),
        source="vl-rewardbench",
        meta=meta,
    )


def _encode_image(value: Any, where: str) -> bytes:
    """PIL image → PNG bytes; encoded bytes are checked to decode and kept as they are."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        load_image(bytes(value), name=f"{where} image")
        return bytes(value)
    if isinstance(value, Image.Image):
        rgb = load_image(value, name=f"{where} image")
        buffer = io.BytesIO()
        rgb.save(buffer, format="PNG")
        return buffer.getvalue()
    raise SchemaError(
        f"{where}: column 'image' must be a PIL image or PNG bytes, got {type(value).__name__}"
    )


def _one_line(value: object) -> str:
    return " ".join(str(value).split())
