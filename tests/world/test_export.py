import json

import numpy as np
from PIL import Image

from explore.data.world_export import contact_sheet, export_jsonl
from explore.world.render import render
from explore.world.scene import Scene
from explore.world.splits import split_scenes
from explore.world.text import caption


def test_export_jsonl_writes_images_and_consistent_rows(tmp_path):
    counts = export_jsonl(tmp_path, n=6, seed=2, split="val")
    assert counts == {"scenes.jsonl": 6, "vqa.jsonl": 6, "captions.jsonl": 6, "judge.jsonl": 6}
    scenes = [json.loads(line) for line in (tmp_path / "scenes.jsonl").read_text().splitlines()]
    for row in scenes:
        scene = Scene.from_dict(row["scene"])
        pixels = np.asarray(Image.open(tmp_path / row["image"]).convert("RGB"))
        assert np.array_equal(pixels, np.asarray(render(scene)))
        assert row["caption"] == caption(scene)
    judge = [json.loads(line) for line in (tmp_path / "judge.jsonl").read_text().splitlines()]
    assert all(len(r["responses"]) == 2 and r["preferred"] in (0, 1) for r in judge)
    vqa = [json.loads(line) for line in (tmp_path / "vqa.jsonl").read_text().splitlines()]
    assert all(r["answers"] and (tmp_path / r["image"]).exists() for r in vqa)


def test_export_is_deterministic(tmp_path):
    export_jsonl(tmp_path / "a", n=3, seed=1)
    export_jsonl(tmp_path / "b", n=3, seed=1)
    for name in ("scenes.jsonl", "vqa.jsonl", "judge.jsonl", "images/test-000002.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_contact_sheet_has_one_tile_per_scene():
    sheet = contact_sheet(split_scenes("test", 6), columns=3, tile=96)
    assert sheet.size[0] > 3 * 96 and sheet.size[1] > 2 * 96
    # the first tile is the first scene, upscaled
    first = np.asarray(render(split_scenes("test", 1)[0]).resize((96, 96), Image.Resampling.NEAREST))
    assert np.array_equal(np.asarray(sheet)[6 : 6 + 96, 6 : 6 + 96], first)


def test_vlrewardbench_export_reloads_with_categories(tmp_path):
    from explore.data.vlrewardbench import load_vlrewardbench
    from explore.world.examples import world_examples
    from explore.data.world_export import export_vlrewardbench

    path = export_vlrewardbench(tmp_path, n=12, seed=0, split="test")
    loaded = load_vlrewardbench(str(path))
    originals = world_examples("test", 12, "judge", seed=0)
    assert len(loaded) == len(originals) == 12
    for ex, orig in zip(loaded, originals):
        assert ex.category == orig.category  # derived from the id prefix by the official rule
        assert ex.prompt == orig.prompt and ex.responses == orig.responses
        assert ex.preferred == orig.preferred
        assert np.array_equal(np.asarray(ex.load_image()), np.asarray(orig.load_image()))
    assert {ex.category for ex in loaded} == {"general", "hallucination", "reasoning"}
