"""Per-example records and task summaries for the evaluation runner.

A record is one JSON line: ``id``, ``prompt``, ``output``, ``score`` and what the summary needs
(references, category, the judge's choice). Summaries are computed from records only, so a
resumed run scores exactly like an uninterrupted one. A VQA output made of reasoning steps and then the
answer is scored by its last step (:func:`final_answer`); a short answer is scored as it stands.
"""

from __future__ import annotations

import re
from collections import defaultdict

from explore.data.example import Example
from explore.eval.metrics import captions as caption_metrics
from explore.eval.metrics import rewardbench
from explore.eval.metrics.vqa import exact_match, vqa_accuracy
from explore.world.scene import Scene
from explore.world.text import parse_caption, scene_facts

# A step ends with a full stop and a space: " . " as the stepwise targets are written, ". " once the tokenizer's
# decoding has tidied the space before the stop away.
_STEP_BREAK = re.compile(r"\s?\.\s+")
MIN_STEP_WORDS = 3  # every step before the answer has at least this many words, so "st. louis" is one answer

# New tokens for a batch holding a shapes-world relation question: a stepwise answer
# (explore.world.text.relation_steps) is up to 30 tokens with its end token. Other batches keep their budget.
RELATION_MAX_NEW_TOKENS = 40


def answer_budget(batch: list[Example], short: int) -> int:
    """Most new tokens to generate for a VQA batch: :data:`RELATION_MAX_NEW_TOKENS` when it holds a relation
    question (``category == "relation"``, room for a stepwise answer), else ``short``. Generation stops once
    every answer of the batch has ended, so a short-answer model pays nothing for the larger budget."""
    return max(short, RELATION_MAX_NEW_TOKENS) if any(e.category == "relation" for e in batch) else short


def final_answer(text: str) -> str:
    """The answer a generated text commits to, for scoring.

    A stepwise answer (reasoning steps, then the answer, like chain-of-thought scoring) is scored by its final
    segment: ``"the red circle is at the top left and the blue square is at the right. the red circle is left
    of the blue square. yes"`` → ``"yes"``. The text counts as stepwise when it splits at full stops followed
    by a space into two or more segments, every one before the last has at least :data:`MIN_STEP_WORDS` words,
    and the last is not empty. Anything else, every short answer included (an answer of at most three words is
    never split), is returned unchanged, so short answers score exactly as before.
    """
    segments = _STEP_BREAK.split(text.strip())
    if len(segments) < 2 or not segments[-1].strip():
        return text
    if any(len(segment.split()) < MIN_STEP_WORDS for segment in segments[:-1]):
        return text
    return segments[-1].strip()


def score_records(kind: str, batch: list[Example], outputs: list[dict]) -> list[dict]:
    """One record per example, with its per-example score."""
    records = []
    for example, output in zip(batch, outputs):
        record = {"id": example.id, "prompt": example.prompt, "category": example.category, **output}
        if kind == "vqa":
            record["answers"] = example.answers
            answer = final_answer(output["output"])  # a stepwise answer is scored by its last step
            if answer != output["output"]:
                record["final_answer"] = answer
            record["exact_match"] = exact_match(answer, example.answers)
            # VQAv2 accuracy needs the 10 human answers; with one reference it is exact match.
            many = len(example.answers) > 1
            record["score"] = vqa_accuracy(answer, example.answers) if many else record["exact_match"]
        elif kind == "caption":
            record["answers"] = example.answers
            if "scene" in example.meta:  # the shapes world: exact scene recovery
                found, truth = parse_caption(output["output"]), scene_facts(Scene.from_dict(example.meta["scene"]))
                record["exact_scene"] = float(found == truth)
            record["score"] = record.get("exact_scene")
        else:
            record["preferred"] = example.preferred
            if "query_source" in example.meta:  # VL-RewardBench's source of the pair ("shapes-world/<kind>" for ours)
                record["query_source"] = example.meta["query_source"]
            choice = output.get("choice")
            record["score"] = None if choice is None else float(choice == example.preferred)
        records.append(record)
    return records


def _mean_by(records: list[dict], key: str) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for record in records:
        groups[str(record["category"])].append(float(record[key]))
    scores = {group: sum(values) / len(values) for group, values in sorted(groups.items())}
    scores["overall"] = sum(float(r[key]) for r in records) / len(records)
    return scores


def summarize(kind: str, records: list[dict], *, unparsed: str = "drop") -> dict:
    """Task scores from all records.

    - vqa: exact match (overall and per category / question type), and VQAv2 accuracy;
    - caption: corpus BLEU-4 and CIDEr-D, and exact scene recovery for the shapes world;
    - judge: VL-RewardBench aggregation (per category, overall, macro, parse rate), with unparsed
      judgments dropped (official) or counted wrong (``unparsed="wrong"``).
    """
    if not records:
        return {}
    if kind == "vqa":
        return {"exact_match": _mean_by(records, "exact_match"), "vqa_accuracy": _mean_by(records, "score")}
    if kind == "caption":
        predictions = {r["id"]: r["output"] for r in records}
        references = {r["id"]: r["answers"] for r in records}
        summary = {"bleu4": caption_metrics.bleu4(predictions, references),
                   "cider_d": caption_metrics.cider_d(predictions, references)}  # fmt: skip
        if all("exact_scene" in r for r in records):
            summary["exact_scene"] = _mean_by(records, "exact_scene")
        return summary
    return rewardbench.aggregate(
        [{"category": r["category"], "prediction": r["choice"], "label": r["preferred"]} for r in records],
        unparsed=unparsed,
    )
