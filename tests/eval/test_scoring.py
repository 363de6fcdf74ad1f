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



def test_a_judge_record_keeps_the_pairs_query_source():
    """predictions.jsonl keeps VL-RewardBench's query_source of each pair ("shapes-world/<kind>" for world pairs, read
    back by a per-kind breakdown); a pair without one gets none."""
    from explore.eval.tasks import TaskOptions, get_task
    from explore.world.judge import JUDGE_KINDS

    examples = get_task("world-judge").load(TaskOptions(limit=6))
    records = score_records("judge", examples, [{"output": "", "choice": e.preferred} for e in examples])
    sources = [r["query_source"] for r in records]
    assert sources == [e.meta["query_source"] for e in examples]
    kinds = {source.removeprefix("shapes-world/") for source in sources}
    assert len(kinds) > 1 and kinds <= set(JUDGE_KINDS)
    assert all(r["score"] == 1.0 for r in records)
    bare = Example(id="vlrb-0", task="judge", image=None, prompt="q", responses=["a", "b"], preferred=0,
                   category="general")  # fmt: skip
    (record,) = score_records("judge", [bare], [{"output": "", "choice": 1}])
    assert "query_source" not in record and record["score"] == 0.0
