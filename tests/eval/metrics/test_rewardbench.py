"""explore.eval.metrics.rewardbench: VL-RewardBench's official prompt, parsing, voting, aggregation."""

from __future__ import annotations

import pytest

from explore.eval.metrics.rewardbench import aggregate, judge_prompt, majority_vote, parse_judgment, swap_pairs

# prompt.py of vl-rewardbench/VL_RewardBench (commit e492d65), transcribed independently of the
# module's template, with query "Q", answers "A1" / "A2".
OFFICIAL_PROMPT = (
    " You are a highly capable multimodal AI assistant tasked with evaluating answers to visual questions. "
    "Please analyze the following image and question, then determine which of the two provided answers is better."
    "\n\nQuestion: Q\n\nAnswer 1: A1\n\nAnswer 2: A2\n\n"
    "Please evaluate both answers based on the following criteria:\n"
    "1. Accuracy: How well does the answer align with the visual information in the image?\n"
    "2. Completeness: Does the answer fully address all aspects of the question?\n"
    "3. Clarity: Is the answer easy to understand and well-articulated?\n"
    "4. Relevance: Does the answer directly relate to the question and the image?\n\n"
    "After your evaluation, please:\n1. Explain your reasoning for each criterion.\n"
    "2. Provide an overall judgment on which answer is better (Answer 1 or Answer 2). "
    "For example: Overall Judgment: Answer X is better.\n\n"
    "Your response should be structured and detailed, demonstrating your understanding of both the "
    "visual and textual elements of the task."
)


def test_judge_prompt_is_the_official_text() -> None:
    assert judge_prompt("Q", "A1", "A2") == OFFICIAL_PROMPT


def test_judge_prompt_removes_image_tags_and_keeps_braces() -> None:
    prompt = judge_prompt("<image>\nWhat is {this}?", "A1", "A2")
    assert "Question: What is {this}?\n" in prompt
    assert "<image>" not in prompt


@pytest.mark.parametrize(
    ("output", "position"),
    [
        ("Overall Judgment: Answer 2 is better.", 1),
        ("overall judgment: answer 1 is better", 0),  # re.IGNORECASE
        ("**Overall Judgment:** Answer 1 is better.", 0),  # "*" deleted first
        ("Overall Judgment:\nAnswer 2 is slightly better", 1),  # "\n" deleted first
        ("Therefore, Answer 1 is the better one.", 0),
        ("Accuracy: ... Overall Judgment - Answer 2 is better than Answer 1.", 1),
        ("Overall Judgment: Answer 1 is better. Answer 2 is worse.", 0),  # backtracks to the match
        ("Overall Judgment: Answer 1 is better... on reflection Answer 2 is better", 1),  # greedy: last
        ("Answer 2 is better. Therefore Answer 1 is better", 0),  # only after the keyword
        ("Answer 2 is better.", None),  # no "Overall Judgment" / "Therefore"
        ("Overall\nJudgment: Answer 2 is better", None),  # "\n" deleted without a space: "OverallJudgment"
        ("Overall Judgment: Answer X is better.", None),
        ("Overall Judgment: both answers are equally good.", None),
        ("Overall Judgment: Answer 3 is better.", None),  # the official code would count it as agreeing
        ("", None),
        ("The the the the the", None),
    ],
)
def test_parse_judgment_official_rule(output: str, position: int | None) -> None:
    assert parse_judgment(output) == position


def test_swap_pairs_is_deterministic_by_seed() -> None:
    first = swap_pairs(64, seed=7)
    assert first == swap_pairs(64, seed=7)
    assert first != swap_pairs(64, seed=8)  # equal by chance with probability 2**-64
    assert len(first) == 64 and set(first) == {True, False}
    assert swap_pairs(10, seed=7) == first[:10]  # one draw per item, in order
    assert swap_pairs(0, seed=7) == []
    with pytest.raises(ValueError, match="n must be >= 0"):
        swap_pairs(-1, seed=7)


def test_swap_then_parse_maps_back_to_the_stored_order() -> None:
    stored = ["the good answer", "the bad answer"]
    shown = stored[::-1]  # swapped: "Answer 1" is the stored index 1
    prompt = judge_prompt("Q", *shown)
    assert "Answer 1: the bad answer" in prompt
    position = parse_judgment("Overall Judgment: Answer 2 is better")
    assert 1 - position == 0  # the stored good answer


@pytest.mark.parametrize(
    ("choices", "vote"),
    [
        ([1], 1),
        ([0, 0, 1], 0),
        ([0, 1], None),  # tie: no strict majority ("other" in cal.py, dropped)
        ([0, 0, 1, 1], None),
        ([0, 0, None], 0),  # 2 > 3/2
        ([0, 1, None], None),
        ([None, None, 0], None),  # unparsed majority ("doesntMatch")
        ([None, None, None], None),
        ([1, 1, 1, None, None], 1),  # 3 > 5/2
        ([1, 1, None, None], None),  # 2 > 4/2 fails: unparsed samples count in the total
    ],
)
def test_majority_vote(choices: list[int | None], vote: int | None) -> None:
    assert majority_vote(choices) == vote


def test_majority_vote_needs_samples() -> None:
    with pytest.raises(ValueError, match="no samples"):
        majority_vote([])


def record(category: str, prediction: int | None, label: int) -> dict:
    return {"category": category, "prediction": prediction, "label": label}


RECORDS = [
    # general: 4 items, 3 parsed, 2 correct
    record("general", 0, 0), record("general", 1, 0), record("general", None, 1), record("general", 1, 1),
    # hallucination: 3 items, 1 parsed, 1 correct
    record("hallucination", 0, 0), record("hallucination", None, 0), record("hallucination", None, 1),
    # reasoning: 3 items, 3 parsed, 1 correct
    record("reasoning", 1, 0), record("reasoning", 0, 1), record("reasoning", 1, 1),
]  # fmt: skip


def test_aggregate_official_drops_unparsed() -> None:
    result = aggregate(RECORDS, unparsed="drop")
    # denominators = parsed items: general 2/3, hallucination 1/1, reasoning 1/3
    assert result["per_category"] == pytest.approx({"general": 2 / 3, "hallucination": 1.0, "reasoning": 1 / 3})
    assert result["overall"] == pytest.approx((2 + 1 + 1) / (3 + 1 + 3))  # pooled: 4/7
    assert result["macro"] == pytest.approx((2 / 3 + 1 + 1 / 3) / 3)  # 2/3
    assert result["parse_rate"] == pytest.approx(7 / 10)
    assert result["unparsed"] == "drop"
    counts = result["counts"]
    assert (counts["total"], counts["parsed"], counts["correct"], counts["scored"]) == (10, 7, 4, 7)
    assert counts["per_category"]["hallucination"] == {"total": 3, "parsed": 1, "correct": 1, "scored": 1}


def test_aggregate_vlmevalkit_counts_unparsed_as_wrong() -> None:
    result = aggregate(RECORDS, unparsed="wrong")
    # denominators = all items: general 2/4, hallucination 1/3, reasoning 1/3
    assert result["per_category"] == pytest.approx({"general": 0.5, "hallucination": 1 / 3, "reasoning": 1 / 3})
    assert result["overall"] == pytest.approx(4 / 10)
    assert result["macro"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 3) / 3)  # 7/18
    assert result["parse_rate"] == pytest.approx(7 / 10)
    assert result["counts"]["scored"] == 10


def test_aggregate_without_a_category_has_no_macro() -> None:
    result = aggregate([record("general", 0, 0), record("reasoning", None, 1)])
    assert result["per_category"] == {"general": 1.0, "hallucination": None, "reasoning": None}
    assert result["overall"] == 1.0
    assert result["macro"] is None


@pytest.mark.parametrize(
    ("records", "unparsed", "message"),
    [
        ([record("general", 0, 0)], "random", "unparsed must be one of"),
        ([record("safety", 0, 0)], "drop", r"record 0: category 'safety'"),
        ([record("general", 0, 2)], "drop", "label must be 0 or 1"),
        ([record("general", 0, 0), record("general", 2, 0)], "drop", r"record 1: prediction must be 0, 1 or None"),
        ([{"category": "general", "label": 0}], "drop", "expected a mapping with"),
    ],
)
def test_aggregate_rejects_bad_input(records: list, unparsed: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        aggregate(records, unparsed=unparsed)
