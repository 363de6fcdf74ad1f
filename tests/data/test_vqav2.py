"""explore.data.vqav2.load_vqav2: the official file layout and each structural error."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explore.data import load_vqav2
from explore.errors import ConfigError, ExploreError, ImageError, SchemaError

ANSWERS_42 = ["red"] * 7 + ["dark red", "maroon", "red"]


def answer_list(words: list[str]) -> list[dict]:
    return [
        {"answer": word, "answer_confidence": "yes", "answer_id": index + 1}
        for index, word in enumerate(words)
    ]


QUESTIONS = {
    "info": {}, "task_type": "Open-Ended", "data_type": "mscoco", "data_subtype": "val2014",
    "questions": [
        {"image_id": 42, "question": "What color is the bus?", "question_id": 420},
        {"image_id": 7, "question": "How many dogs?", "question_id": 70},
    ],
}
ANNOTATIONS = {
    "annotations": [
        {"question_id": 70, "image_id": 7, "question_type": "how many", "answer_type": "number",
         "multiple_choice_answer": "2", "answers": answer_list(["2"] * 10)},
        {"question_id": 420, "image_id": 42, "question_type": "what color is the",
         "answer_type": "other", "multiple_choice_answer": "red", "answers": answer_list(ANSWERS_42)},
    ],
}


@pytest.fixture
def vqa_files(tmp_path: Path, make):
    """Write questions, annotations and images; return a function that rewrites them."""
    images = tmp_path / "val2014"
    images.mkdir()
    for image_id in (42, 7):
        Image.new("RGB", (8, 8), (image_id, 0, 0)).save(images / f"COCO_val2014_{image_id:012d}.jpg")

    def write(questions=QUESTIONS, annotations=ANNOTATIONS):
        q = make.write_json(tmp_path / "questions.json", questions)
        a = make.write_json(tmp_path / "annotations.json", annotations)
        return q, a, images

    return write


def test_loads_questions_answers_and_lazy_image_paths(vqa_files) -> None:
    questions, annotations, images = vqa_files()
    first, second = load_vqav2(questions, annotations, images)
    assert first.id == "420" and first.task == "vqa" and first.source == "vqav2"
    assert first.prompt == "What color is the bus?"
    assert first.answers == ANSWERS_42 and len(first.answers) == 10
    assert first.category == "other"
    assert first.meta["question_type"] == "what color is the"
    assert first.meta["multiple_choice_answer"] == "red"
    assert first.meta["image_id"] == 42 and first.meta["answer_confidence"] == ["yes"] * 10
    assert first.image == images / "COCO_val2014_000000000042.jpg"  # a path: decoded lazily
    assert second.category == "number" and second.answers == ["2"] * 10
    decoded = first.load_image()
    assert decoded.mode == "RGB" and abs(int(np.asarray(decoded)[0, 0, 0]) - 42) <= 3


def test_explicit_split_and_name_pattern(vqa_files, tmp_path: Path) -> None:
    questions, annotations, _ = vqa_files()
    other = tmp_path / "flat"
    other.mkdir()
    for image_id in (42, 7):
        Image.new("RGB", (4, 4)).save(other / f"{image_id}-mini.png")
    examples = load_vqav2(questions, annotations, other, split="mini", image_pattern="{image_id}-{split}.png")
    assert [e.image for e in examples] == [other / "42-mini.png", other / "7-mini.png"]


def test_without_annotations_answers_are_empty(vqa_files) -> None:
    questions, _, images = vqa_files()
    examples = load_vqav2(questions, None, images)
    assert [e.answers for e in examples] == [[], []]
    assert [e.category for e in examples] == [None, None]


def test_limit_keeps_the_first_questions(vqa_files) -> None:
    questions, annotations, images = vqa_files()
    assert [e.id for e in load_vqav2(questions, annotations, images, limit=1)] == ["420"]


def edited(data: dict, edit) -> dict:
    data = copy.deepcopy(data)
    edit(data)
    return data


@pytest.mark.parametrize(
    ("questions", "annotations", "error", "pattern"),
    [
        (edited(QUESTIONS, lambda d: d["questions"][1].pop("question")), ANNOTATIONS, SchemaError,
         r"questions\[1\]: missing keys \['question'\]; each entry needs \['image_id', 'question', 'question_id'\]"),
        (edited(QUESTIONS, lambda d: d.pop("questions")), ANNOTATIONS, SchemaError,
         r"missing top-level key 'questions'"),
        (edited(QUESTIONS, lambda d: d["questions"][0].update(question_id="420")), ANNOTATIONS,
         SchemaError, r"questions\[0\]: 'question_id' is str '420', expected int"),
        (QUESTIONS, edited(ANNOTATIONS, lambda d: [d["annotations"][0].pop(k) for k in ("answer_type", "answers")]),
         SchemaError, r"annotations\[0\]: missing keys \['answer_type', 'answers'\]"),
        (QUESTIONS, edited(ANNOTATIONS, lambda d: d["annotations"][1]["answers"][3].pop("answer_id")),
         SchemaError, r"annotations\[1\]\.answers\[3\]: missing keys \['answer_id'\]"),
        (QUESTIONS, edited(ANNOTATIONS, lambda d: d["annotations"].pop(0)), SchemaError,
         r"question_id 70 has no annotation"),
        (QUESTIONS, edited(ANNOTATIONS, lambda d: d["annotations"][0].update(image_id=8)), SchemaError,
         r"question_id 70 has image_id 7 but its annotation has image_id 8"),
        (QUESTIONS, edited(ANNOTATIONS, lambda d: d["annotations"].append(d["annotations"][0])),
         SchemaError, r"question_id 70 is annotated twice"),
        (QUESTIONS, edited(ANNOTATIONS, lambda d: d["annotations"][0].update(answers=[])), SchemaError,
         r"'answers' is empty"),
        (edited(QUESTIONS, lambda d: d.pop("data_subtype")), ANNOTATIONS, ConfigError,
         r"no 'data_subtype'.*pass split="),
        ([1, 2], ANNOTATIONS, SchemaError, r"top level is list, expected a JSON object"),
    ],
)
def test_structural_errors_name_the_entry(vqa_files, questions, annotations, error, pattern) -> None:
    paths = vqa_files(questions, annotations)
    with pytest.raises(error, match=pattern) as raised:
        load_vqav2(*paths)
    assert "\n" not in str(raised.value)


def test_missing_image_file_is_named(vqa_files) -> None:
    questions, annotations, images = vqa_files()
    (images / "COCO_val2014_000000000007.jpg").unlink()
    with pytest.raises(ImageError, match=r"COCO_val2014_000000000007\.jpg for question_id 70 not found"):
        load_vqav2(questions, annotations, images)


def test_missing_files_and_folders(vqa_files, tmp_path: Path) -> None:
    questions, annotations, images = vqa_files()
    with pytest.raises(ExploreError, match=r"questions file .*nope\.json: not found"):
        load_vqav2(tmp_path / "nope.json", annotations, images)
    with pytest.raises(ExploreError, match=r"image folder .*: not found"):
        load_vqav2(questions, annotations, tmp_path / "no-images")


def test_invalid_json_reports_the_line(vqa_files, tmp_path: Path) -> None:
    _, annotations, images = vqa_files()
    broken = tmp_path / "broken.json"
    broken.write_text('{"questions": [\n{"image_id": 1,,}]}')
    with pytest.raises(SchemaError, match=r"broken\.json: invalid JSON at line 2"):
        load_vqav2(broken, annotations, images)


def test_bad_image_pattern_is_a_config_error(vqa_files) -> None:
    questions, annotations, images = vqa_files()
    with pytest.raises(ConfigError, match=r"image_pattern '\{id\}\.jpg' is invalid"):
        load_vqav2(questions, annotations, images, image_pattern="{id}.jpg")
