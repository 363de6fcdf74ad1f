"""Scores on the shapes world: VQA exact match per question type, likelihood-judge accuracy per
category, and exact scene recovery from captions.

These are the numbers the embedded model is trained towards and reported with.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

from explore.data.example import Example
from explore.eval.likelihood import judge_by_likelihood
from explore.eval.scoring import answer_budget, final_answer
from explore.models.collate import collate
from explore.models.generate import generate_answers
from explore.world.examples import world_examples
from explore.world.scene import Scene
from explore.world.text import parse_caption, scene_facts


def normalize_answer(text: str) -> str:
    """Lower-case, strip and collapse spaces and a trailing full stop (world answers are words)."""
    return " ".join(text.lower().strip().rstrip(".").split())


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _accuracy(hits_by_group: dict[str, list[bool]]) -> dict[str, float]:
    scores = {group: sum(hits) / len(hits) for group, hits in sorted(hits_by_group.items())}
    every = [hit for hits in hits_by_group.values() for hit in hits]
    scores["overall"] = sum(every) / len(every) if every else float("nan")
    return scores


def score_vqa(model, processor, examples: list[Example], batch_size: int = 64) -> dict[str, float]:
    """Exact match of greedy answers, overall and per question type (``example.category``).

    A stepwise answer is scored by its last step (:func:`explore.eval.scoring.final_answer`); a batch with a
    relation question gets room for one (:func:`explore.eval.scoring.answer_budget`), others 6 new tokens.
    """
    hits: dict[str, list[bool]] = defaultdict(list)
    for batch in _batches(examples, batch_size):
        budget = answer_budget(batch, short=6)
        for example, text in zip(batch, generate_answers(model, processor, batch, max_new_tokens=budget)):
            answer = final_answer(text)
            hits[example.category].append(normalize_answer(answer) == normalize_answer(example.answers[0]))
    return _accuracy(hits)


def score_judge(model, processor, examples: list[Example], batch_size: int = 64) -> dict[str, float]:
    """Likelihood-judge accuracy, overall and per category (general / hallucination / reasoning)."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for batch in _batches(examples, batch_size):
        for example, choice in zip(batch, judge_by_likelihood(model, processor, batch)):
            hits[example.category].append(choice == example.preferred)
    return _accuracy(hits)


def score_captions(model, processor, examples: list[Example], batch_size: int = 32) -> dict[str, float]:
    """Exact scene recovery: the generated caption names exactly the scene's objects (with
    size, colour, shape and position); also the mean object-level F1."""
    exact, f1s = [], []
    for batch in _batches(examples, batch_size):
        for example, text in zip(batch, generate_answers(model, processor, batch, max_new_tokens=64)):
            truth = scene_facts(Scene.from_dict(example.meta["scene"]))
            found = parse_caption(text)
            exact.append(found == truth)
            true_pos = len(found & truth)
            f1s.append(2 * true_pos / (len(found) + len(truth)) if found or truth else 1.0)
    return {"exact_scene": sum(exact) / max(1, len(exact)), "object_f1": sum(f1s) / max(1, len(f1s))}


@torch.no_grad()
def image_sensitivity(model, processor, examples: list[Example], max_length: int = 48) -> float:
    """How much the model's logits depend on the image: ‖Δlogits‖ / ‖logits‖ when each example gets
    another example's image (0 means the image is ignored; a from-scratch model can fall into that)."""
    decoder_only = bool(model.config.use_decoder_only_language_model)
    batch = collate(examples, processor, with_labels=True, max_length=max_length, decoder_only=decoder_only)
    logits = model(**batch).logits
    batch["pixel_values"] = batch["pixel_values"].roll(1, dims=0)
    shuffled = model(**batch).logits
    return float((logits - shuffled).norm() / logits.norm())


def evaluate_world(
    model: InstructBlipForConditionalGeneration,
    processor: InstructBlipProcessor,
    *,
    split: str = "val",
    n_vqa: int = 140,
    n_judge: int = 60,
    n_caption: int = 20,
    seed: int = 0,
    batch_size: int = 64,
    templates: bool = True,
) -> dict[str, dict[str, float]]:
    """All three world scores on the first examples of ``split``; a task with n = 0 is skipped."""
    was_training = model.training
    model.eval()
    resolution = processor.image_processor.size["height"]
    results: dict[str, dict[str, float]] = {}
    if n_vqa:
        examples = world_examples(split, n_vqa, "vqa", seed=seed, resolution=resolution, templates=templates)
        results["vqa"] = score_vqa(model, processor, examples, batch_size)
    if n_judge:
        examples = world_examples(split, n_judge, "judge", seed=seed, resolution=resolution)
        results["judge"] = score_judge(model, processor, examples, batch_size)
    if n_caption:
        examples = world_examples(split, n_caption, "caption", seed=seed, resolution=resolution, templates=templates)
        results["caption"] = score_captions(model, processor, examples, batch_size)
        if n_caption > 1:
            results["caption"]["image_sensitivity"] = image_sensitivity(model, processor, examples[:batch_size])
    model.train(was_training)
    return results
