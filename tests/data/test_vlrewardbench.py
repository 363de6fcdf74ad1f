"""explore.data.vlrewardbench: official categories, both schemas, writer, and every bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from explore.data import vlrewardbench
from explore.data.vlrewardbench import (
    CURRENT_COLUMNS,
    OLD_COLUMNS,
    category_from_id,
    load_vlrewardbench,
    subset_from_id,
    write_vlrewardbench_parquet,
)
from explore.errors import ConfigError, ExploreError, ImageError, SchemaError

# ---- categories (official cal.py rule) ----------------------------------------------------


@pytest.mark.parametrize(
    ("example_id", "subset", "category"),
    [
        # real id formats from the official data.jsonl
        ("RLAIF-V-14", "rlaif-v", "hallucination"),
        ("hallucination_pair-3921", "povid", "hallucination"),
        ("mathverse_2028", "reasoning_tasks", "reasoning"),
        ("mmmu_pro_test_Computer_Science_334", "reasoning_tasks", "reasoning"),
        ("wildvision-battle-3443", "wildvision-battle", "general"),
        ("LRVInstruction-000000007746", "vlfeedback", "general"),
        # other subsets / separators
        ("RLHF-V-1024", "rlhf-v", "hallucination"),
        ("VLFeedback_12", "vlfeedback", "general"),
        ("mathverse-7", "reasoning_tasks", "reasoning"),
        ("RLAIF_V-1", "rlaif-v", "hallucination"),  # "_" before "-": prefix "RLAIF"
        ("mmmu", "reasoning_tasks", "reasoning"),  # no separator: the whole id is the prefix
        ("hallucination", "povid", "hallucination"),
        # exact, case-sensitive matching: near misses fall through to vlfeedback → general
        ("rlaif-v-14", "vlfeedback", "general"),
        ("MathVerse_1", "vlfeedback", "general"),
        ("MMMU_pro_1", "vlfeedback", "general"),
        ("Hallucination_pair-1", "vlfeedback", "general"),
        ("povid_17", "vlfeedback", "general"),
        ("RLAIFV14", "vlfeedback", "general"),
        ("mathverses_1", "vlfeedback", "general"),
        ("_RLAIF", "vlfeedback", "general"),  # empty prefix
    ],
)
def test_category_from_id_follows_official_cal_py(example_id: str, subset: str, category: str) -> None:
    assert subset_from_id(example_id) == subset
    assert category_from_id(example_id) == category


# ---- round trips --------------------------------------------------------------------------


def test_current_schema_round_trip(tmp_path: Path, make) -> None:
    rows = [
        make.vlrb_row("RLAIF-V-14", human_ranking=[0, 1]),
        make.vlrb_row("mathverse_2028", human_ranking=[1, 0], ground_truth="720",
                      image=Image.new("RGB", (3, 5), (0, 0, 255)), rationale="Answer 2 is right."),
        make.vlrb_row("wildvision-battle-3443", response=("first", "second"), models=None),
    ]
    path = write_vlrewardbench_parquet(rows, tmp_path / "out" / "test.parquet")
    assert path == tmp_path / "out" / "test.parquet"
    examples = load_vlrewardbench(path)

    assert [e.id for e in examples] == ["RLAIF-V-14", "mathverse_2028", "wildvision-battle-3443"]
    assert [e.category for e in examples] == ["hallucination", "reasoning", "general"]
    assert [e.preferred for e in examples] == [0, 1, 0]  # human_ranking [0, 1] → first preferred
    first, second, third = examples
    assert first.task == "judge" and first.source == "vl-rewardbench"
    assert first.prompt == "What is shown? (RLAIF-V-14)"
    assert first.responses == ["A red square.", "A blue circle."]
    assert third.responses == ["first", "second"]
    assert first.image.mode == "RGB" and first.image.size == (6, 4)
    assert (np.asarray(second.image) == [0, 0, 255]).all()
    assert second.meta["ground_truth"] == "720" and second.meta["rationale"] == "Answer 2 is right."
    assert first.meta["models"] == ["model-a", "model-b"] and third.meta["models"] is None
    assert first.meta["subset"] == "rlaif-v" and first.meta["schema"] == "current"
    assert first.meta["human_ranking"] == [0, 1]


def test_written_file_has_the_hub_parquet_layout(tmp_path: Path, make, hf_cache: str) -> None:
    import datasets

    path = write_vlrewardbench_parquet([make.vlrb_row()], tmp_path / "test.parquet")
    schema = pq.read_schema(path)
    assert schema.names == list(CURRENT_COLUMNS)
    assert schema.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert schema.field("human_ranking").type.value_type == pa.int64()
    assert b"huggingface" in schema.metadata  # features stored like on the hub
    dataset = datasets.Dataset.from_parquet(str(path), cache_dir=hf_cache)
    assert isinstance(dataset.features["image"], datasets.Image)
    assert dataset[0]["image"].size == (6, 4)
    assert not list(tmp_path.glob("*.partial"))  # written atomically


def test_writer_keeps_encoded_bytes_as_given(tmp_path: Path, make) -> None:
    jpeg = tmp_path / "x.jpg"
    Image.new("RGB", (4, 4), (9, 9, 9)).save(jpeg)
    path = write_vlrewardbench_parquet([make.vlrb_row(image=jpeg.read_bytes())], tmp_path / "t.parquet")
    stored = pq.read_table(path).column("image")[0].as_py()["bytes"]
    assert stored == jpeg.read_bytes()


def old_schema_dataset_parquet(path: Path, make) -> Path:
    """Write the old hub schema (meta + human_error_analysis) the way the hub did, via datasets."""
    import datasets

    rows = [
        make.vlrb_row("RLAIF-V-276", human_ranking=[1, 0]),
        make.vlrb_row("hallucination_pair-401"),
    ]
    columns = {name: [row[name] for row in rows] for name in CURRENT_COLUMNS}
    columns["meta"] = ['{"original_dataset": "TextVQA"}', None]
    columns["human_error_analysis"] = [["recognition(text)"], None]
    dataset = datasets.Dataset.from_dict({name: columns[name] for name in OLD_COLUMNS})
    dataset = dataset.cast_column("image", datasets.Image())
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(path))
    return path


def test_old_schema_is_accepted_and_kept_in_meta(tmp_path: Path, make) -> None:
    path = old_schema_dataset_parquet(tmp_path / "old.parquet", make)
    first, second = load_vlrewardbench(path)
    assert first.preferred == 1 and second.preferred == 0
    assert first.meta["schema"] == "old"
    assert first.meta["human_error_analysis"] == ["recognition(text)"]
    assert first.meta["meta"] == '{"original_dataset": "TextVQA"}'
    assert second.meta["human_error_analysis"] is None
    assert second.category == "hallucination"


def test_folder_in_hub_layout_reads_only_the_requested_split(tmp_path: Path, make) -> None:
    data = tmp_path / "VL-RewardBench" / "data"
    write_vlrewardbench_parquet([make.vlrb_row("RLAIF-V-1")], data / "test-00000-of-00002.parquet")
    write_vlrewardbench_parquet([make.vlrb_row("mmmu_2")], data / "test-00001-of-00002.parquet")
    write_vlrewardbench_parquet([make.vlrb_row("wildvision-battle-9")], data / "train-00000-of-00001.parquet")
    assert [e.id for e in load_vlrewardbench(tmp_path / "VL-RewardBench")] == ["RLAIF-V-1", "mmmu_2"]
    assert [e.id for e in load_vlrewardbench(data, split="train")] == ["wildvision-battle-9"]
    with pytest.raises(ExploreError, match=r"no parquet shards for split 'validation'; found splits \['test', 'train'\]"):
        load_vlrewardbench(data, split="validation")


def test_folder_with_other_file_names_reads_them_all(tmp_path: Path, make) -> None:
    write_vlrewardbench_parquet([make.vlrb_row("a_1")], tmp_path / "part-a.parquet")
    write_vlrewardbench_parquet([make.vlrb_row("b_1")], tmp_path / "part-b.parquet")
    assert [e.id for e in load_vlrewardbench(tmp_path)] == ["a_1", "b_1"]


def test_limit_keeps_the_first_rows_and_skips_their_images(tmp_path: Path, make) -> None:
    rows = [make.vlrb_row(f"RLAIF-V-{i}") for i in range(3)]
    columns = make.raw_columns(rows)
    columns["image"][2] = b"\x89PNG\r\n\x1a\n broken"  # only decoded if row 2 is used
    path = make.write_raw_parquet(tmp_path / "t.parquet", columns)
    assert [e.id for e in load_vlrewardbench(path, limit=2)] == ["RLAIF-V-0", "RLAIF-V-1"]
    with pytest.raises(ImageError, match=r"row 2 \(id 'RLAIF-V-2'\)"):
        load_vlrewardbench(path)


@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
def test_invalid_limit_is_a_config_error(tmp_path: Path, bad) -> None:
    with pytest.raises(ConfigError, match="limit"):
        load_vlrewardbench(tmp_path / "never-read.parquet", limit=bad)


def test_rows_are_validated_before_any_image_is_decoded(tmp_path: Path, make) -> None:
    rows = [make.vlrb_row("RLAIF-V-0"), make.vlrb_row("RLAIF-V-1", human_ranking=[0, 0])]
    columns = make.raw_columns(rows)
    columns["image"][0] = b"not an image at all"
    path = make.write_raw_parquet(tmp_path / "t.parquet", columns)
    with pytest.raises(SchemaError, match="human_ranking"):  # not the ImageError of row 0
        load_vlrewardbench(path)


# ---- hub path ---------------------------------------------------------------------------


def test_hub_id_goes_through_datasets_load_dataset(tmp_path: Path, make, hf_cache: str, monkeypatch) -> None:
    import datasets

    path = write_vlrewardbench_parquet([make.vlrb_row("RLHF-V-5", human_ranking=[1, 0])], tmp_path / "t.parquet")
    calls = []

    def fake_load_dataset(source, revision, split):
        calls.append((source, revision, split))
        return datasets.Dataset.from_parquet(str(path), cache_dir=hf_cache)  # images decode=True

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    (example,) = load_vlrewardbench()
    assert calls == [("MMInstruction/VL-RewardBench", vlrewardbench.PINNED_REVISION, "test")]
    assert example.id == "RLHF-V-5" and example.preferred == 1 and example.category == "hallucination"
    assert example.image.size == (6, 4)


@pytest.mark.skipif(os.environ.get("HF_HUB_OFFLINE") != "1", reason="needs HF_HUB_OFFLINE=1")
def test_offline_without_cache_says_to_pass_a_local_file(monkeypatch, tmp_path: Path) -> None:
    with pytest.raises(ExploreError) as error:
        load_vlrewardbench("nobody-owns-this/vl-rewardbench-copy", revision="main")
    message = str(error.value)
    assert "HF_HUB_OFFLINE=1" in message and "local parquet" in message and "\n" not in message


def test_unreachable_hub_gives_a_clear_error(monkeypatch) -> None:
    import datasets

    def unreachable(source, revision, split):
        raise ConnectionError("Couldn't reach the Hub")

    monkeypatch.setattr(datasets, "load_dataset", unreachable)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    with pytest.raises(ExploreError, match=r"could not load from the Hugging Face Hub .*local parquet"):
        load_vlrewardbench("someone/somewhere")


# ---- bad inputs -------------------------------------------------------------------------


def broken_file(tmp_path: Path, make, case: str) -> Path:
    """Build the file for one bad-input case."""
    rows = [make.vlrb_row("RLAIF-V-0"), make.vlrb_row("RLAIF-V-1")]
    columns = make.raw_columns(rows)
    types: dict = {}
    path = tmp_path / f"{case}.parquet"
    if case == "missing-column":
        del columns["judge"]
    elif case == "unexpected-column":
        columns["score"] = [1, 2]
    elif case == "half-old-schema":
        columns["meta"] = ["{}", "{}"]
    elif case == "response-string":
        columns["response"] = ["one answer", "another"]
    elif case == "response-three":
        columns["response"][1] = ["a", "b", "c"]
    elif case == "ranking-strings":
        columns["human_ranking"] = [["0", "1"], ["1", "0"]]
    elif case == "ranking-tie":
        columns["human_ranking"][1] = [0, 0]
    elif case == "id-null":
        columns["id"][1] = None
    elif case == "image-null":
        columns["image"][1] = None
    elif case == "zero-rows":
        columns = {name: [] for name in columns}
        types = {name: pa.string() for name in columns if name != "image"}
        types["response"] = types["models"] = pa.list_(pa.string())
        types["human_ranking"] = pa.list_(pa.int64())
    elif case == "empty-file":
        path.write_bytes(b"")
        return path
    elif case == "not-parquet":
        path.write_text("id,query\n1,2\n")
        return path
    return make.write_raw_parquet(path, columns, types)


@pytest.mark.parametrize(
    ("case", "error", "pattern"),
    [
        ("missing-column", SchemaError, r"missing columns \['judge'\]; expected the VL-RewardBench columns \['id', "),
        ("unexpected-column", SchemaError, r"unexpected columns \['score'\]"),
        ("half-old-schema", SchemaError, r"missing columns \['human_error_analysis'\]"),
        ("response-string", SchemaError, r"row 0 \(id 'RLAIF-V-0'\): column 'response' must be a list of 2 strings"),
        ("response-three", SchemaError, r"row 1 \(id 'RLAIF-V-1'\): column 'response'"),
        ("ranking-strings", SchemaError, r"row 0 \(id 'RLAIF-V-0'\): column 'human_ranking' must be the ints"),
        ("ranking-tie", SchemaError, r"row 1 \(id 'RLAIF-V-1'\): column 'human_ranking'.*\[0, 0\]"),
        ("id-null", SchemaError, r"row 1: column 'id' must be a non-empty string"),
        ("image-null", SchemaError, r"row 1 \(id 'RLAIF-V-1'\): column 'image' is empty"),
        ("zero-rows", SchemaError, r"has no rows"),
        ("empty-file", SchemaError, r"file is empty \(0 bytes\)"),
        ("not-parquet", SchemaError, r"not a readable parquet file"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path: Path, make, case: str, error: type, pattern: str) -> None:
    path = broken_file(tmp_path, make, case)
    with pytest.raises(error, match=pattern) as raised:
        load_vlrewardbench(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_folder_without_parquet_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("no data here")
    with pytest.raises(ExploreError, match="no .parquet files"):
        load_vlrewardbench(tmp_path)


@pytest.mark.parametrize("name", ["missing.parquet", "sub/dir/missing.parquet"])
def test_missing_file_is_not_mistaken_for_a_hub_id(tmp_path: Path, name: str) -> None:
    with pytest.raises(ExploreError, match="not found"):
        load_vlrewardbench(tmp_path / name)


def test_corrupt_image_names_the_row(tmp_path: Path, make) -> None:
    columns = make.raw_columns([make.vlrb_row("mmmu_9")])
    columns["image"][0] = b"<html>rate limited</html>"
    path = make.write_raw_parquet(tmp_path / "t.parquet", columns)
    with pytest.raises(ImageError, match=r"row 0 \(id 'mmmu_9'\).*HTML"):
        load_vlrewardbench(path)


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        (lambda row: row.pop("judge"), r"row to write row 0 \(id 'RLAIF-V-14'\): missing keys \['judge'\]"),
        (lambda row: row.update(meta="{}"), r"unexpected keys \['meta'\]"),
        (lambda row: row.update(image="picture.png"), r"column 'image' must be a PIL image or PNG bytes"),
        (lambda row: row.update(human_ranking=[1, 1]), r"column 'human_ranking'"),
        (lambda row: row.update(response=["only one"]), r"column 'response'"),
        (lambda row: row.update(rationale=3), r"column 'rationale' must be a string or null"),
    ],
)
def test_writer_rejects_bad_rows(tmp_path: Path, make, change, pattern: str) -> None:
    row = make.vlrb_row()
    change(row)
    with pytest.raises(SchemaError, match=pattern):
        write_vlrewardbench_parquet([row], tmp_path / "t.parquet")
    assert not (tmp_path / "t.parquet").exists()


def test_writer_rejects_no_rows_and_bad_images(tmp_path: Path, make) -> None:
    with pytest.raises(SchemaError, match="no rows"):
        write_vlrewardbench_parquet([], tmp_path / "t.parquet")
    with pytest.raises(ImageError, match="row to write row 0"):
        write_vlrewardbench_parquet([make.vlrb_row(image=b"GIF89a-truncated")], tmp_path / "t.parquet")
