"""The Judge tab: a query and two answers about an image, judged by both of explore's judges.

- the likelihood judge (:func:`explore.eval.likelihood.judge_by_likelihood`): the answer with the higher mean
  per-token log-probability wins;
- the generative judge (:func:`explore.eval.generative_judge.judge_generatively`): VL-RewardBench's official
  prompt, ``samples`` sampled judgments (each with the answers in its own random order, as the official code
  does), each parsed with the official rule and mapped back, majority vote.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

from explore.data.example import Example
from explore.data.judge_prompt import judge_prompt
from explore.errors import ExploreError
from explore.eval.generative_judge import judge_generatively
from explore.eval.likelihood import answer_logprobs, judge_by_likelihood
from explore.serve.models import ModelCache
from explore.world.examples import world_examples


@dataclass(frozen=True)
class Verdicts:
    """Both judges on one pair; answers are numbered 1 and 2 as on the page."""

    official_prompt: str  # the official prompt with answer 1 first (samples may show them swapped)
    logprobs: tuple[float, float]  # mean per-token log-probability of answer 1 and answer 2
    likelihood_choice: int  # 1 or 2
    generative_choice: int | None  # 1 or 2; None when no sample's verdict could be parsed
    votes: tuple[int | None, ...]  # per sample: 1, 2 or None (unparsed), in the page's order
    samples: tuple[str, ...]  # the judgments as generated


def check_pair(query: str | None, first: str | None, second: str | None) -> tuple[str, str, str]:
    """The stripped query and answers; raises ExploreError naming the empty field."""
    fields = {"query": query, "answer 1": first, "answer 2": second}
    empty = [name for name, value in fields.items() if not value or not value.strip()]
    if empty:
        raise ExploreError(f"empty {' and '.join(empty)}: the judges need a query and two answers")
    return query.strip(), first.strip(), second.strip()


def judge(cache: ModelCache, model_name: str, image: Image.Image, query: str, first: str, second: str, *,
          samples: int = 10, seed: int = 0, progress=None) -> Verdicts:  # fmt: skip
    """Judge ``first`` against ``second`` as answers to ``query`` about ``image`` with both judges.

    Raises:
        ExploreError: an empty field, ``samples`` < 1, or a model that cannot be loaded.
    """
    query, first, second = check_pair(query, first, second)
    if int(samples) < 1:
        raise ExploreError(f"samples must be at least 1, got {samples}")
    if progress is not None:
        progress(0.0, desc=f"loading {model_name}")
    model, processor = cache.vlm(model_name)
    example = Example(id="serve-judge", task="judge", image=image, prompt=query, responses=[first, second])
    if progress is not None:
        progress(0.2, desc="likelihood judge")
    logprobs = answer_logprobs(model, processor, [example, example], [first, second])
    [choice] = judge_by_likelihood(model, processor, [example])
    if progress is not None:
        progress(0.4, desc=f"generative judge: {int(samples)} samples")
    [result] = judge_generatively(model, processor, [example], samples=int(samples), seed=int(seed))
    number = {0: 1, 1: 2, None: None}
    return Verdicts(
        official_prompt=judge_prompt(query, first, second),
        logprobs=(float(logprobs[0]), float(logprobs[1])),
        likelihood_choice=choice + 1,
        generative_choice=number[result["choice"]],
        votes=tuple(number[vote] for vote in result["votes"]),
        samples=tuple(result["samples"]),
    )


def world_pair(split: str, index: int, seed: int) -> Example:
    """The world's judge pair for scene ``index`` of ``split`` (its image is that scene): a query, a faithful
    and an unfaithful answer, and which one is right (``preferred``, 0 or 1)."""
    examples = world_examples(split, 1, "judge", seed=int(seed), start=int(index))
    if not examples:
        raise ExploreError(f"scene {index} of {split} (seed {seed}) has no judge pair; try another scene")
    return examples[0]
