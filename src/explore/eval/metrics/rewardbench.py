"""VL-RewardBench's official judging protocol: prompt, answer parsing, swaps, voting, aggregation.

Source: github.com/vl-rewardbench/VL_RewardBench (the benchmark's official code):
- prompt.py (commit e492d6548558d9fcac8959de60be8f4e8a640dc8): the judge prompt;
- inference_hf.py (commit eb00f2890ef6b23fd47d9eb6608066ab9b0f8b66) and inference.py: the answers
  are swapped by ``random.choice([0, 1])`` for every *sample*, sampling uses temperature 0.2 and
  top-p 0.2, and each output is parsed with the regular expression below;
- cal.py (commit 7918386178b59895c9c40522c9878554f91be60e): the vote over k samples and the
  accuracies per category, overall (pooled) and macro (mean of the three categories).

Unparsed items in the official code: ``classify()`` calls an item "agree" or "reject" only when
that status holds a strict majority of the item's samples (unparsed samples count in the total);
otherwise it is "doesntMatch" or "other". ``distribution_dataset()`` then sets
``group_total += agree_number + reject_number``, so those items leave the denominator. (cal.py
also builds ``filter_out_doesntMatch(...)`` but never uses its result.) VLMEvalKit
(open-compass/VLMEvalKit, vlmeval/dataset/vl_rewardbench.py, ``get_score``) instead scores an
unparsed judgment 0 and keeps every item in the denominator: ``unparsed="wrong"`` here.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence

from explore.data.judge_prompt import JUDGE_PROMPT_TEMPLATE, judge_prompt
from explore.data.vlrewardbench_schema import CATEGORIES

__all__ = [
    "CATEGORIES", "JUDGE_PROMPT_TEMPLATE", "JUDGMENT_PATTERN", "aggregate", "judge_prompt",
    "majority_vote", "parse_judgment", "swap_pairs",
]  # fmt: skip

# inference_hf.py / inference.py / cal.py, verbatim; searched (re.IGNORECASE) in the output with
# "\n" and "*" deleted. The greedy ".*" makes the *last* "Answer N is (the) (slightly) better"
# after the first "Overall Judgment" / "Therefore" count.
JUDGMENT_PATTERN = re.compile(
    r"(?:Overall Judgment|Therefore)\s*.*\s*-*\s*Answer\s*(\d+)\s*is\s*(?:the\s*)?(?:slightly\s*)?better",
    re.IGNORECASE,
)
UNPARSED_CONVENTIONS = ("drop", "wrong")


def parse_judgment(text: str) -> int | None:
    """Position judged better by one judge output: 0 for "Answer 1", 1 for "Answer 2", else None.

    Uses the official rule (:data:`JUDGMENT_PATTERN` on the text without "\\n" and "*"). The
    position is in the order the prompt showed; undo a swap to get the stored index.
    Difference from the official code: a parsed number other than 1 or 2 ("Answer 3 is better")
    is None here; the official code counts it as agreeing with the human preference, because it
    only tests ``choice == rejected answer``.
    """
    match = JUDGMENT_PATTERN.search(text.replace("\n", "").replace("*", ""))
    if match is None:
        return None
    number = int(match.group(1))
    return number - 1 if number in (1, 2) else None


def swap_pairs(n: int, seed: int) -> list[bool]:
    """``n`` seeded coin flips: True where the two answers are shown in reverse order.

    The official code draws ``random.choice([0, 1])`` (1 = reversed) from Python's unseeded global
    generator for every sample; this draws the same way from ``random.Random(seed)``. For k samples
    per example drawn separately, as officially, call ``swap_pairs(n * k, seed)``.

    Raises:
        ValueError: n < 0.
    """
    if n < 0:
        raise ValueError(f"swap_pairs: n must be >= 0, got {n}")
    generator = random.Random(seed)
    return [generator.choice([0, 1]) == 1 for _ in range(n)]


def majority_vote(choices: Sequence[int | None]) -> int | None:
    """The choice held by a strict majority of the k samples, else None (cal.py ``classify``).

    Unparsed samples (None) count in the total: ``[0, 0, None]`` → 0, but ``[0, 1, None]``,
    ``[0, 0, 1, 1]`` (a tie) and ``[None, None, 0]`` → None. The official code drops items without
    a strict majority ("other") just like unparsed ones ("doesntMatch"), so both are None here.
    Choices must be indices of the same order (all stored, or all shown with the same swap).

    Raises:
        ValueError: no samples.
    """
    if not choices:
        raise ValueError("majority_vote: no samples to vote on; pass the parsed choices of k >= 1 samples")
    counts = Counter(choices)
    choice, votes = counts.most_common(1)[0]
    return choice if votes > len(choices) / 2 else None


def aggregate(records: Sequence[Mapping], unparsed: str = "drop") -> dict:
    """VL-RewardBench accuracies (fractions in [0, 1]) from one record per example.

    Args:
        records: mappings with "category" (one of :data:`CATEGORIES`), "prediction" (the stored
            index 0/1 judged better, or None when unparsed / no majority) and "label" (the stored
            index of the human-preferred answer).
        unparsed: "drop" (official cal.py: unparsed items leave the denominator) or "wrong"
            (VLMEvalKit: they count as incorrect).

    Returns:
        {"unparsed": convention, "per_category": {category: accuracy or None}, "overall": pooled
        accuracy, "macro": mean of the three category accuracies (None unless all three have
        scored items), "parse_rate": parsed / total, "counts": {"total", "parsed", "correct",
        "scored", "per_category": {category: {"total", "parsed", "correct", "scored"}}}}. An
        accuracy is None when its denominator is 0.

    Raises:
        ValueError: unknown convention, unknown category, a label not 0/1 or a prediction not
            0/1/None (the message names the record's position).
    """
    if unparsed not in UNPARSED_CONVENTIONS:
        raise ValueError(f"aggregate: unparsed must be one of {UNPARSED_CONVENTIONS}, got {unparsed!r}")
    counts = {category: {"total": 0, "parsed": 0, "correct": 0} for category in CATEGORIES}
    for position, record in enumerate(records):
        category, prediction, label = _check_record(record, position)
        group = counts[category]
        group["total"] += 1
        if prediction is not None:
            group["parsed"] += 1
            group["correct"] += int(prediction == label)
    for group in counts.values():
        group["scored"] = group["parsed"] if unparsed == "drop" else group["total"]
    per_category = {category: _ratio(group["correct"], group["scored"]) for category, group in counts.items()}
    totals = {key: sum(group[key] for group in counts.values()) for key in ("total", "parsed", "correct", "scored")}
    accuracies = list(per_category.values())
    return {
        "unparsed": unparsed,
        "per_category": per_category,
        "overall": _ratio(totals["correct"], totals["scored"]),
        "macro": None if None in accuracies else sum(accuracies) / len(accuracies),
        "parse_rate": _ratio(totals["parsed"], totals["total"]),
        "counts": {**totals, "per_category": counts},
    }


def _check_record(record: Mapping, position: int) -> tuple[str, int | None, int]:
    where = f"aggregate: record {position}"
    if not isinstance(record, Mapping) or not {"category", "prediction", "label"} <= set(record):
        raise ValueError(f"{where}: expected a mapping with 'category', 'prediction' and 'label', got {record!r}")
    category, prediction, label = record["category"], record["prediction"], record["label"]
    if category not in CATEGORIES:
        raise ValueError(f"{where}: category {category!r} is not one of {CATEGORIES}")
    if label not in (0, 1) or isinstance(label, bool):
        raise ValueError(f"{where}: label must be 0 or 1 (index of the preferred answer), got {label!r}")
    if prediction is not None and (prediction not in (0, 1) or isinstance(prediction, bool)):
        raise ValueError(f"{where}: prediction must be 0, 1 or None (unparsed), got {prediction!r}")
    return category, prediction, label


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None
