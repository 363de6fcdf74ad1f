"""VQAv2-style local files → ``task="vqa"`` :class:`Example` values.

Inputs (the official VQAv2 release layout):
    questions JSON    {"questions": [{"image_id", "question", "question_id"}, ...], ...}
    annotations JSON  {"annotations": [{"question_id", "image_id", "question_type",
                       "answer_type", "multiple_choice_answer",
                       "answers": [{"answer", "answer_confidence", "answer_id"}, ...]}, ...]}
    image folder      COCO file names, e.g. COCO_val2014_000000000042.jpg

Images stay paths (decoded lazily by ``Example.load_image``); only their existence is
checked here, so loading the 214 K val2014 questions takes seconds, not minutes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from typing_extensions import NotRequired, TypedDict  # pydantic validates these on Python < 3.12

from explore.data._validate import check_limit, parse_file, read_json, record
from explore.data.example import Example
from explore.errors import ConfigError, ExploreError, ImageError, SchemaError

DEFAULT_IMAGE_PATTERN = "COCO_{split}_{image_id:012d}.jpg"


@record
class VqaQuestion(TypedDict):
    """An entry of the questions file's ``questions``."""

    image_id: int
    question: str
    question_id: int


@record
class VqaQuestionsFile(TypedDict):
    """A VQAv2 questions JSON; ``data_subtype`` (e.g. "val2014") names the image split."""

    questions: list[VqaQuestion]
    data_subtype: NotRequired[Any]  # used only when it is a string


@record
class VqaAnswer(TypedDict):
    """One of the (ten) human answers of a question."""

    answer: str
    answer_confidence: Any  # "yes" / "maybe" / "no" in VQAv2; kept as given
    answer_id: Any


@record
class VqaAnnotation(TypedDict):
    """An entry of the annotations file's ``annotations``: the human answers of one question."""

    question_id: int
    image_id: int
    question_type: str
    answer_type: str
    multiple_choice_answer: str
    answers: list[VqaAnswer]


@record
class VqaAnnotationsFile(TypedDict):
    annotations: list[VqaAnnotation]


def load_vqav2(
    questions_file: str | Path,
    annotations_file: str | Path | None,
    image_dir: str | Path,
    *,
    split: str | None = None,
    image_pattern: str = DEFAULT_IMAGE_PATTERN,
    limit: int | None = None,
) -> list[Example]:
    """Load VQAv2 questions, their human answers and image paths.

    Args:
        questions_file: the questions JSON.
        annotations_file: the annotations JSON, or None for a split without answers
            (test-dev): answers are then empty and category is None.
        image_dir: folder with the images.
        split: the ``{split}`` in ``image_pattern`` (e.g. "val2014"); defaults to the questions
            file's ``data_subtype``.
        image_pattern: file name of an image, a ``str.format`` pattern with ``{split}`` and
            ``{image_id}``.
        limit: keep only the first ``limit`` questions (None: all).

    Returns:
        one Example per question, in file order: id = str(question_id), image = path,
        prompt = question, answers = the human answers (10 in VQAv2), category = answer_type,
        meta = question_type, multiple_choice_answer, answer_confidence, image_id, question_id.

    Raises:
        SchemaError: bad JSON structure (names the entry and the missing keys), a question
            without annotation. ImageError: an image file that is missing (named).
        ConfigError: a bad ``image_pattern`` or no ``split``. ExploreError: a missing JSON file
            or image folder.
    """
    check_limit(limit)
    where_questions = f"VQAv2 questions file {questions_file}"
    questions_data = parse_file(VqaQuestionsFile, read_json(questions_file, "VQAv2 questions file"), where_questions)
    questions = questions_data["questions"]
    split = _resolve_split(split, questions_data.get("data_subtype"), where_questions)
    if limit is not None:
        questions = questions[:limit]
    annotations = None
    if annotations_file is not None:
        annotations = _annotations_by_question(annotations_file)
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise ExploreError(
            f"VQAv2 image folder {image_dir}: not found; pass the folder with the COCO images"
        )

    examples = []
    for index, question in enumerate(questions):
        where = f"{where_questions}, questions[{index}]"
        question_id, image_id, text = question["question_id"], question["image_id"], question["question"]
        image_path = image_dir / _image_name(image_pattern, split, image_id)
        if not image_path.is_file():
            raise ImageError(
                f"image {image_path} for question_id {question_id} not found; check image_dir, "
                f"split ({split!r}) and image_pattern ({image_pattern!r})"
            )
        meta: dict[str, object] = {"image_id": image_id, "question_id": question_id}
        answers: list[str] = []
        category = None
        if annotations is not None:
            if question_id not in annotations:
                raise SchemaError(
                    f"{where}: question_id {question_id} has no annotation in {annotations_file}; "
                    "pass the annotations file of the same split"
                )
            annotation = annotations[question_id]
            if annotation["image_id"] != image_id:
                raise SchemaError(
                    f"{where}: question_id {question_id} has image_id {image_id} but its "
                    f"annotation has image_id {annotation['image_id']}; files from different splits?"
                )
            answers = [answer["answer"] for answer in annotation["answers"]]
            category = annotation["answer_type"]
            meta.update(
                question_type=annotation["question_type"],
                multiple_choice_answer=annotation["multiple_choice_answer"],
                answer_confidence=[answer["answer_confidence"] for answer in annotation["answers"]],
            )
        examples.append(
            Example(
                id=str(question_id),
                task="vqa",
                image=image_path,
                prompt=text,
                answers=answers,
                category=category,
                source="vqav2",
                meta=meta,
            )
        )
    return examples


def _annotations_by_question(annotations_file: str | Path) -> dict[int, VqaAnnotation]:
    """Read and validate the annotations file; index it by question_id."""
    where_file = f"VQAv2 annotations file {annotations_file}"
    data = parse_file(VqaAnnotationsFile, read_json(annotations_file, "VQAv2 annotations file"), where_file)
    by_question: dict[int, VqaAnnotation] = {}
    for index, annotation in enumerate(data["annotations"]):
        where = f"{where_file}, annotations[{index}]"
        if not annotation["answers"]:
            raise SchemaError(f"{where}: 'answers' is empty; each question needs its human answers")
        if annotation["question_id"] in by_question:
            raise SchemaError(f"{where}: question_id {annotation['question_id']} is annotated twice")
        by_question[annotation["question_id"]] = annotation
    return by_question


def _resolve_split(split: str | None, data_subtype: Any, where: str) -> str:
    if split is not None:
        return split
    if isinstance(data_subtype, str):
        return data_subtype
    raise ConfigError(
        f"{where}: has no 'data_subtype' to name the image split; pass split=, e.g. 'val2014'"
    )


def _image_name(pattern: str, split: str, image_id: int) -> str:
    try:
        return pattern.format(split=split, image_id=image_id)
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(
            f"image_pattern {pattern!r} is invalid ({exc!r}); use the placeholders {{split}} and "
            f"{{image_id}}, e.g. {DEFAULT_IMAGE_PATTERN!r}"
        ) from None
