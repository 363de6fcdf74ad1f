"""explore.data.coco.load_coco_captions: grouping captions per image and each structural error."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from PIL import Image

from explore.data import load_coco_captions
from explore.data.coco import DEFAULT_CAPTION_PROMPT
from explore.errors import ExploreError, ImageError, SchemaError

CAPTIONS = {
    "images": [
        {"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "height": 8, "width": 8},
        {"id": 7, "file_name": "sub/seven.png"},
    ],
    "annotations": [
        {"image_id": 7, "caption": "A dog on grass. ", "id": 1},
        {"image_id": 42, "caption": "A red bus.", "id": 2},
        {"image_id": 7, "caption": "Two dogs playing.", "id": 3},
    ],
}


@pytest.fixture
def coco_files(tmp_path: Path, make):
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (8, 8), (200, 0, 0)).save(images / "COCO_val2014_000000000042.jpg")
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(images / "sub" / "seven.png")

    def write(data=CAPTIONS):
        return make.write_json(tmp_path / "captions.json", data), images

    return write


def test_one_example_per_image_with_all_its_captions(coco_files) -> None:
    captions, images = coco_files()
    bus, dogs = load_coco_captions(captions, images)
    assert bus.id == "42" and bus.task == "caption" and bus.source == "coco-captions"
    assert bus.answers == ["A red bus."] and bus.prompt == DEFAULT_CAPTION_PROMPT
    assert dogs.answers == ["A dog on grass.", "Two dogs playing."]  # file order, stripped
    assert dogs.meta == {"file_name": "sub/seven.png", "caption_ids": [1, 3]}
    assert dogs.image == images / "sub" / "seven.png"
    assert dogs.load_image().getpixel((0, 0)) == (255, 255, 255)  # lazy, through load_image


def test_prompt_override_and_limit(coco_files) -> None:
    captions, images = coco_files()
    (only,) = load_coco_captions(captions, images, prompt="Describe the image.", limit=1)
    assert only.id == "42" and only.prompt == "Describe the image."


def edited(edit) -> dict:
    data = copy.deepcopy(CAPTIONS)
    edit(data)
    return data


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        (edited(lambda d: d["images"][1].pop("file_name")),
         r"images\[1\]: missing keys \['file_name'\]; each entry needs \['id', 'file_name'\]"),
        (edited(lambda d: [d["annotations"][2].pop(k) for k in ("caption", "id")]),
         r"annotations\[2\]: missing keys \['caption', 'id'\]"),
        (edited(lambda d: d["annotations"][0].update(image_id=99)),
         r"annotations\[0\]: caption 1 refers to image_id 99, which is not in 'images'"),
        (edited(lambda d: d["annotations"].pop(1)), r"image id 42 \(COCO_val2014_000000000042\.jpg\) has no captions"),
        (edited(lambda d: d["images"].append({"id": 7, "file_name": "again.png"})),
         r"images\[2\]: image id 7 appears twice"),
        (edited(lambda d: d["annotations"][1].update(caption=None)),
         r"annotations\[1\]: 'caption' is NoneType None, expected str"),
        (edited(lambda d: d.pop("annotations")), r"missing top-level key 'annotations'"),
        (edited(lambda d: d.update(images={"id": 1})), r"'images' is dict, expected a list"),
        (edited(lambda d: d["images"].__setitem__(0, 3)), r"images\[0\]: is int, expected a JSON object"),
        (edited(lambda d: d["annotations"][0].update(id=True)), r"annotations\[0\]: 'id' is bool True, expected int"),
    ],
)
def test_structural_errors_name_the_entry(coco_files, data, pattern) -> None:
    captions, images = coco_files(data)
    with pytest.raises(SchemaError, match=pattern) as raised:
        load_coco_captions(captions, images)
    assert "\n" not in str(raised.value)


def test_missing_image_file_is_named(coco_files) -> None:
    captions, images = coco_files()
    (images / "sub" / "seven.png").unlink()
    with pytest.raises(ImageError, match=r"seven\.png \(image id 7\) not found"):
        load_coco_captions(captions, images)


def test_missing_json_folder_and_empty_prompt(coco_files, tmp_path: Path) -> None:
    captions, images = coco_files()
    with pytest.raises(ExploreError, match=r"captions file .*absent\.json: not found"):
        load_coco_captions(tmp_path / "absent.json", images)
    with pytest.raises(ExploreError, match=r"image folder .*: not found"):
        load_coco_captions(captions, tmp_path / "nowhere")
    with pytest.raises(ExploreError, match="prompt must be a non-empty string"):
        load_coco_captions(captions, images, prompt="  ")
