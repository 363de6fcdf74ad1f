"""The Ask tab: one image, one question (or a caption), the original model and a compressed one side by side."""

from __future__ import annotations

import time
from dataclasses import dataclass

from PIL import Image

from explore.data.example import Example
from explore.errors import ExploreError
from explore.eval.scoring import RELATION_MAX_NEW_TOKENS
from explore.infer import CAPTION_PROMPT
from explore.models.generate import generate_answers
from explore.serve.models import ModelCache

TASKS = ("question", "caption")
# As `explore ask` and `explore caption`: a question leaves room for a step-by-step relation answer.
MAX_NEW_TOKENS = {"question": RELATION_MAX_NEW_TOKENS, "caption": 64}


@dataclass(frozen=True)
class ModelAnswer:
    """One model's answer and what it cost."""

    model: str  # the name as given: "embedded", a folder, a Hub id
    role: str  # "original" or "compressed"
    answer: str
    latency_ms: float  # wall time of the greedy generation for this one image (model already loaded)
    load_seconds: float  # how long the model's one load took (it is loaded on first use, then cached)


def prompt_for(task: str, question: str | None) -> str:
    """The instruction the model reads: the question, or explore's captioning instruction.

    Raises:
        ExploreError: an unknown task, or an empty question.
    """
    if task == "caption":
        return CAPTION_PROMPT
    if task != "question":
        raise ExploreError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if not question or not question.strip():
        raise ExploreError("no question: type one, or choose 'caption'")
    return question.strip()


def answer(cache: ModelCache, image: Image.Image, task: str, question: str | None, original: str,
           compressed: str | None = None, progress=None) -> list[ModelAnswer]:  # fmt: skip
    """Ask ``original`` and (when given) ``compressed`` the same thing about ``image``, one after the other.

    ``progress``: an optional ``progress(fraction, desc=...)`` callable (Gradio's ``gr.Progress``).

    Raises:
        ExploreError: a bad task or question, or a model that cannot be loaded (named).
    """
    prompt = prompt_for(task, question)
    models = [("original", (original or "").strip())]
    if compressed and compressed.strip():
        models.append(("compressed", compressed.strip()))
    if not models[0][1]:
        raise ExploreError("no original model: give 'embedded', a model folder or a Hub id")
    results = []
    for index, (role, name) in enumerate(models):
        if progress is not None:
            progress(index / len(models), desc=f"{role}: loading {name}")
        model, processor = cache.vlm(name)
        if progress is not None:
            progress((index + 0.5) / len(models), desc=f"{role}: answering")
        example = Example(id="serve", task="vqa" if task == "question" else "caption", image=image, prompt=prompt)
        started = time.perf_counter()
        [text] = generate_answers(model, processor, [example], max_new_tokens=MAX_NEW_TOKENS[task])
        latency_ms = (time.perf_counter() - started) * 1e3
        results.append(ModelAnswer(name, role, text, latency_ms, cache.vlm_load_seconds(name)))
    return results


def model_resolution(cache: ModelCache, name: str) -> int:
    """The image side the model reads (a world scene for it is rendered at this size)."""
    _, processor = cache.vlm(name)
    return int(processor.image_processor.size["height"])
