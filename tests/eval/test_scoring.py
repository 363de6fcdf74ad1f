"""VQA scoring of stepwise answers: a generated answer made of steps is scored by its last step; a short
answer scores exactly as before."""

import pytest

from explore.data.example import Example
from explore.eval.metrics.vqa import exact_match, vqa_accuracy
from explore.eval.scoring import RELATION_MAX_NEW_TOKENS, answer_budget, final_answer, score_records

# Short answers as models give them, abbreviations with full stops included: none may change.
SHORT = ["yes", "No.", "left", "top left", "2", "two dogs.", "st. louis", "mr. and mrs. smith",
         "washington d. c.", "u.s. army", "a b. c", "", "  red  "]  # fmt: skip
STEPWISE = [
    # as written in the targets, and as the tokenizer decodes them (no space before the stop)
    ("the red circle is at the top left and the blue square is at the right . the red circle is left of the "
     "blue square . yes", "yes"),
    ("the red circle is at the top left and the blue square is at the right. the red circle is left of the "
     "blue square. left", "left"),
    ("the cat sits on the mat. no", "no"),
]


@pytest.mark.parametrize("text", SHORT)
def test_a_short_answer_is_scored_as_before(text):
    assert final_answer(text) == text
    example = Example(id="q", task="vqa", image=None, prompt="?", answers=["yes", "st louis", "2"] * 3 + ["left"], category="c")
    (record,) = score_records("vqa", [example], [{"output": text}])
    assert record["exact_match"] == exact_match(text, example.answers)
    assert record["score"] == vqa_accuracy(text, example.answers)
    assert "final_answer" not in record


@pytest.mark.parametrize(("text", "answer"), STEPWISE)
def test_a_stepwise_answer_is_scored_by_its_last_step(text, answer):
    assert final_answer(text) == answer
    example = Example(id="q", task="vqa", image=None, prompt="?", answers=[answer], category="relation")
    (record,) = score_records("vqa", [example], [{"output": text}])
    assert record["exact_match"] == record["score"] == 1.0
    assert record["final_answer"] == answer and record["output"] == text


def test_relation_batches_get_room_for_a_stepwise_answer():
    relation = Example(id="r", task="vqa", image=None, prompt="?", answers=["yes"], category="relation")
    colour = Example(id="c", task="vqa", image=None, prompt="?", answers=["red"], category="colour")
    assert answer_budget([colour], short=10) == 10
    assert answer_budget([colour, relation], short=10) == RELATION_MAX_NEW_TOKENS >= 31  # 30 tokens + end
