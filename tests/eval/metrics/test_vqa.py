"""explore.eval.metrics.vqa: the official VQAv2 normalisation and leave-one-out accuracy."""

from __future__ import annotations

import pytest

from explore.eval.metrics.vqa import exact_match, normalize_vqa_answer, process_punctuation, vqa_accuracy


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two dogs.", "2 dogs"),  # number word → digit, final period stripped, lower-cased
        ("The cat", "cat"),  # article dropped
        ("an apple and a pear", "apple and pear"),
        ("none", "0"),
        ("dont know", "don't know"),  # contraction restored
        ("Im", "im"),  # the table's capitalised keys never match after lower-casing (official quirk)
        ("t-shirt", "t shirt"),  # "-" touches no space: replaced by a space
        ("red - blue", "red blue"),  # "-" touches a space: deleted ("red  blue"), split() re-joins
        ("1,000", "1000"),  # a digit,digit group: every mark is deleted
        ("a man, a plan", "man plan"),  # ", " touches a space: deleted
        ("3.5", "3.5"),  # a period before a digit stays
        ("u.s.", "us"),
        ("yes!", "yes"),
        ("  red\tcar\n", "red car"),  # tabs and newlines become spaces, then strip
        ("it's", "it's"),  # the apostrophe is not in the official punctuation list
    ],
)
def test_normalize_vqa_answer(raw: str, expected: str) -> None:
    assert normalize_vqa_answer(raw) == expected


def test_period_strip_stops_after_32_periods() -> None:
    # official: periodStrip.sub("", outText, re.UNICODE) passes re.UNICODE = 32 as the count
    assert process_punctuation("." * 40) == "." * 8


@pytest.mark.parametrize(
    ("matches", "expected"),
    [
        # m of 10 answers match. Leaving out a matching answer leaves m - 1 matches, a
        # non-matching one leaves m; each subset scores min(matches / 3, 1); average over 10.
        (0, 0.0),
        (1, (1 * 0 + 9 * (1 / 3)) / 10),  # 0.3
        (2, (2 * (1 / 3) + 8 * (2 / 3)) / 10),  # 0.6
        (3, (3 * (2 / 3) + 7 * 1) / 10),  # 0.9
        (4, (4 * 1 + 6 * 1) / 10),  # 1.0
        (10, 1.0),
    ],
)
def test_vqa_accuracy_leave_one_out(matches: int, expected: float) -> None:
    answers = ["red"] * matches + ["blue"] * (10 - matches)
    assert vqa_accuracy("red", answers) == pytest.approx(expected, abs=1e-12)


def test_vqa_accuracy_values_are_the_familiar_ones() -> None:
    assert [round(vqa_accuracy("red", ["red"] * m + ["blue"] * (10 - m)), 10) for m in range(5)] == [
        0.0, 0.3, 0.6, 0.9, 1.0,
    ]  # fmt: skip


def test_prediction_is_normalised() -> None:
    assert vqa_accuracy("Two.", ["2"] * 3 + ["3"] * 7) == pytest.approx(0.9)


def test_human_answers_only_get_punctuation_processing_when_they_differ() -> None:
    # they differ: processPunctuation turns "t-shirt" into "t shirt", like the prediction
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 4 + ["shirt"] * 6) == 1.0
    # all identical: the official code leaves them untouched, so the normalised prediction
    # "t shirt" never equals "t-shirt"
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 10) == 0.0
    # no lower-casing or number mapping of human answers: "Two" stays "Two"
    assert vqa_accuracy("two", ["Two"] * 5 + ["three"] * 5) == 0.0


def test_normalize_references_for_raw_answers() -> None:
    assert vqa_accuracy("two", ["Two"] * 5 + ["three"] * 5, normalize_references=True) == 1.0
    assert vqa_accuracy("t-shirt", ["t-shirt"] * 10, normalize_references=True) == 1.0


def test_vqa_accuracy_needs_answers() -> None:
    with pytest.raises(ValueError, match="human_answers is empty"):
        vqa_accuracy("red", [])


def test_exact_match() -> None:
    assert exact_match("Two", ["2"]) == 1.0
    assert exact_match("The red one.", ["blue one", "red one"]) == 1.0
    assert exact_match("three", ["2", "4"]) == 0.0
    with pytest.raises(ValueError, match="answers is empty"):
        exact_match("red", [])
