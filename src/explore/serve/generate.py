"""The Generate tab: prompt → images, the layout used, the detector's objects, the VLM's answers.

The images come from the diffusion pipeline exactly as ``explore generate`` makes them (same seed, same
images); each is then read two ways, as ``explore eval --task world-t2i`` reads them:
:func:`explore.world.detect.detect` finds its objects, and the VLM answers the prompt's TIFA-style questions
(:func:`explore.eval.t2i.judge_questions`), beside the answer the detector's objects imply.

The questions need the scene the prompt describes. With a layout (grounded pipelines) that is the layout
the image was drawn from; without one (free text), it is a layout sampled from the prompt with the same
seed, so details the prompt leaves open (cells, colours, sizes) are the sample's, not necessarily the
image's: the page says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from explore.diffusion.pipeline import DEFAULT_SAMPLING, SCHEDULERS, path_guidance, set_scheduler
from explore.errors import ExploreError
from explore.eval.t2i import answer_matches, exact_answer, judge_questions, vlm_answers
from explore.serve.models import ModelCache
from explore.world.detect import Detection, calibrated_classifier, detect, detected_scene
from explore.world.layout import prompt_layout
from explore.world.scene import Scene
from explore.world.text import caption

MAX_IMAGES = 8
MAX_STEPS = 200
DEFAULT = "default"  # sampler / layout / guidance chosen by the pipeline, as `explore generate` does


@dataclass(frozen=True)
class QuestionRow:
    """One TIFA-style question about one image."""

    image: int  # 1-based, as on the page
    qtype: str
    question: str
    expected: str  # what the prompt's scene says
    vlm: str  # the VLM's answer on the generated image
    detector: str  # the answer the detector's objects imply ("none": the object was not found)

    @property
    def vlm_right(self) -> bool:
        return answer_matches(self.vlm, self.expected)


@dataclass(frozen=True)
class Generated:
    """What one Generate click made, and how."""

    images: list[Image.Image]  # at the pipeline's resolution
    layouts: list[Scene]  # the scene each image's questions are about (the layout used, when there is one)
    grounded: bool  # whether the layouts conditioned the images (else they were sampled for the questions)
    detections: list[list[Detection]]
    questions: list[QuestionRow]
    settings: dict  # layout, sampler, steps, guidance, seed as used
    load_seconds: float  # how long the pipeline's one load took

    def tifa(self, image: int) -> float | None:
        """Fraction of image ``image``'s (1-based) questions the VLM answered as the prompt says."""
        rows = [row for row in self.questions if row.image == image]
        return sum(row.vlm_right for row in rows) / len(rows) if rows else None


def resolve_settings(grounded_pipeline: bool, layout: str, sampler: str, guidance: float | None,
                     trained_guidance: float | None = None) -> dict:  # fmt: skip
    """The defaults of ``explore generate``: layout auto for grounded pipelines (else none), then the path's
    sampler and guidance (:data:`~explore.diffusion.pipeline.DEFAULT_SAMPLING`; the guidance the pipeline was
    trained for, ``trained_guidance``, when it records one).

    Raises:
        ExploreError: an unknown layout or sampler, or guidance below 1.
    """
    if layout not in (DEFAULT, "auto", "none"):
        raise ExploreError(f"layout must be {DEFAULT}, auto or none, got {layout!r}")
    if sampler not in (DEFAULT, *SCHEDULERS):
        raise ExploreError(f"unknown sampler {sampler!r}; choose one of: {DEFAULT}, {', '.join(SCHEDULERS)}")
    layout = ("auto" if grounded_pipeline else "none") if layout == DEFAULT else layout
    if layout == "auto" and not grounded_pipeline:
        raise ExploreError("this diffusion pipeline has no layout input (a free-text model); choose layout none")
    sampler = DEFAULT_SAMPLING[layout][0] if sampler == DEFAULT else sampler
    if guidance is None:
        guidance = path_guidance(trained_guidance, layout)
    if guidance < 1:
        raise ExploreError(f"guidance must be >= 1 (1 turns guidance off), got {guidance}")
    return {"layout": layout, "sampler": sampler, "guidance": float(guidance)}


def generate(cache: ModelCache, prompt: str, *, n: int = 4, seed: int = 0, steps: int = 20,
             guidance: float | None = None, sampler: str = DEFAULT, layout: str = DEFAULT,
             pipeline: str | None = None, judge_model: str = "embedded", progress=None) -> Generated:  # fmt: skip
    """Draw ``n`` images for ``prompt`` and read each with the detector and the VLM judge ``judge_model``.

    ``progress``: an optional ``progress(fraction, desc=...)`` callable (Gradio's ``gr.Progress``).

    Raises:
        ExploreError: an empty prompt, a prompt outside the world's grammar, n / steps out of range, a bad
            setting (see :func:`resolve_settings`), or a pipeline or model that cannot be loaded.
    """
    prompt = (prompt or "").strip()
    if not prompt:
        raise ExploreError("no prompt: describe the scene, e.g. 'a red circle above a blue square'")
    if not 1 <= int(n) <= MAX_IMAGES:
        raise ExploreError(f"images must be between 1 and {MAX_IMAGES}, got {n}")
    if not 1 <= int(steps) <= MAX_STEPS:
        raise ExploreError(f"steps must be between 1 and {MAX_STEPS}, got {steps}")
    n, steps, seed = int(n), int(steps), int(seed)
    report = progress if progress is not None else (lambda *args, **kwargs: None)  # gr.Progress can be falsy
    report(0.0, desc="loading the diffusion pipeline")
    pipe = cache.pipeline(pipeline)
    settings = resolve_settings(pipe.grounded, layout, sampler, guidance, pipe.config.get("guidance_scale"))
    # the scenes the questions ask about: a prompt outside the grammar fails here, before any sampling
    layouts = pipe.layouts_for([prompt] * n, settings["layout"], seed)
    grounded = layouts is not None
    if layouts is None:
        layouts = [prompt_layout(prompt, [seed, i]) for i in range(n)]
    set_scheduler(pipe, settings["sampler"])  # on the cached pipeline: the app runs one model job at a time
    report(0.1, desc=f"sampling {n} image(s), {steps} steps")
    images = pipe(prompt, num_inference_steps=steps, guidance_scale=settings["guidance"], num_images_per_prompt=n,
                  generator=torch.Generator().manual_seed(seed),
                  layout=layouts if grounded else "none").images  # fmt: skip
    report(0.6, desc="finding objects")
    classifier = calibrated_classifier(pipe.image_size)
    detections = [detect(image, classifier) for image in images]
    report(0.7, desc=f"loading the VLM judge {judge_model}")
    vlm, processor = cache.vlm(judge_model)
    report(0.8, desc="asking the prompt's questions")
    rows = []
    for index, (image, scene, found) in enumerate(zip(images, layouts, detections), start=1):
        questions = judge_questions(scene)
        answers = vlm_answers(vlm, processor, [image] * len(questions), [q.question for q in questions])
        found_scene = detected_scene(found)
        rows += [QuestionRow(index, q.qtype, q.question, q.answer, a, exact_answer(q, found_scene))
                 for q, a in zip(questions, answers)]  # fmt: skip
    settings.update(steps=steps, seed=seed)
    return Generated(images, layouts, grounded, detections, rows, settings, cache.pipeline_load_seconds(pipeline))


def layout_caption(scene: Scene) -> str:
    """A layout as the world's canonical caption (cells and all)."""
    return caption(scene)
