"""Shapes-world scenes as :class:`~explore.data.example.Example` values (VQA, caption, judge).

Example ``i`` of a split is built from scene ``i`` of that split and a generator seeded by the
scene's seed, so the same (split, index, seed) always gives the same image, prompt and answer.
"""

from __future__ import annotations

import colorsys

import numpy as np

from explore.data.example import Example
from explore.world.detect import colours_read
from explore.world.judge import JUDGE_KINDS, judge_pair
from explore.world.render import DEFAULT_RESOLUTION, render
from explore.world.scene import COLOURS, HELD_OUT_PAIRS, SHAPES, Scene, SceneSpec
from explore.world.splits import scene_seed, split_scene
from explore.world.text import (
    CAPTION_STYLES,
    PLURAL,
    QUESTION_TEMPLATES,
    QUESTION_TYPES,
    ask,
    caption,
    caption_prompt,
    vqa_prompt,
)

WORLD_TASKS: tuple[str, ...] = ("vqa", "caption", "judge")


def _rng(split: str, index: int, seed: int, task: str) -> np.random.Generator:
    # A stream per (scene, task), independent of the stream that sampled the scene.
    return np.random.default_rng([scene_seed(split, index, seed), WORLD_TASKS.index(task), 1])


def vqa_example(scene: Scene, rng: np.random.Generator, qtype: str, ex_id: str, *, templates: bool,
                resolution: int, avoid: frozenset[tuple[str, str]] = frozenset()) -> Example | None:  # fmt: skip
    qa = ask(scene, qtype, rng, avoid)
    if qa is None:
        return None
    prompt = vqa_prompt(qa.question, rng) if templates else qa.question
    return Example(id=ex_id, task="vqa", image=render(scene, resolution), prompt=prompt, answers=[qa.answer],
                   category=qtype, source="shapes-world",
                   meta={"question": qa.question, "scene": scene.to_dict(), **qa.meta})  # fmt: skip


def caption_example(scene: Scene, rng: np.random.Generator, ex_id: str, *, templates: bool,
                    resolution: int) -> Example:
    prompt = caption_prompt(rng) if templates else "A short image description:"
    answers = [caption(scene, style) for style in CAPTION_STYLES]  # canonical first: the training target
    return Example(id=ex_id, task="caption", image=render(scene, resolution), prompt=prompt, answers=answers,
                   category=f"{len(scene.objects)}_objects", source="shapes-world",
                   meta={"scene": scene.to_dict()})  # fmt: skip


def judge_example(scene: Scene, rng: np.random.Generator, kind: str, ex_id: str, *, resolution: int,
                  avoid: frozenset[tuple[str, str]] = frozenset()) -> Example | None:  # fmt: skip
    pair = judge_pair(scene, kind, rng, avoid)
    if pair is None:
        return None
    preferred = int(rng.integers(2))  # the faithful answer's position, at random
    responses = [pair.rejected, pair.rejected]
    responses[preferred] = pair.chosen
    return Example(id=ex_id, task="judge", image=render(scene, resolution), prompt=pair.query, responses=responses,
                   preferred=preferred, category=pair.category, source="shapes-world",
                   meta={"kind": kind, "scene": scene.to_dict(), "reason": pair.reason})  # fmt: skip


# Recoloured shapes (issue 14, the compositional split). An unnamed colour stays at least this far (RGB distance) from
# every named colour, so no recoloured object looks like a named one, and is at least this bright (its largest
# channel), so it stands out from the dark background. A recoloured shape also keeps away from the named colours it is
# held out with, by one of two margins (RECOLOUR_MARGINS):
# - "hue" (shapes-judge-8 to -48): no colour within UNNAMED_HUE_MARGIN degrees of a held-out partner's hue (where
#   saturated): nothing like a held-out "blue cross", not even a navy one — but then no square is ever drawn in a warm
#   hue (red, yellow and cyan squares are held out), and red squares were the compositional split's worst pair
#   (docs/pretrain/qformer-instruction-by-pair-2027.txt);
# - "detector" (session 30): every hue, but no colour that the world's own colour reader (explore.world.detect, the
#   exact check that grades generated images) reads as a held-out partner, inside the object or in any anti-aliased
#   blend with the scene's background: a square may be brown, tan or dusty rose, never a dark red that detect calls
#   red (a maroon dark enough to read as background, alpha < ALPHA_MIN, can occur).
UNNAMED_COLOUR_DISTANCE = 100.0
UNNAMED_COLOUR_BRIGHTNESS = 90
UNNAMED_HUE_MARGIN = 45.0  # degrees of hue from a held-out partner's, where the colour is saturated (>= 0.2)
RECOLOUR_MARGINS: tuple[str, ...] = ("hue", "detector")
_NAMED_RGB = np.array(list(COLOURS.values()), dtype=float)


def _hue_saturation(rgb) -> tuple[float, float]:
    h, _, s = colorsys.rgb_to_hls(*(float(v) / 255 for v in rgb))
    return h * 360.0, s


def unnamed_colour(rng: np.random.Generator, shape: str | None = None, margin: str = "hue",
                   background: tuple[int, int, int] = (24, 24, 24)) -> tuple[int, int, int]:  # fmt: skip
    """A random RGB far from every named colour (:data:`UNNAMED_COLOUR_DISTANCE`): greys, browns, olive, pale and
    dark tints…, and for ``shape`` none near a colour it is held out with (:data:`HELD_OUT_PAIRS`), by ``margin``
    (:data:`RECOLOUR_MARGINS`; ``background``: the scene's, for the "detector" margin)."""
    if margin not in RECOLOUR_MARGINS:
        raise ValueError(f"unknown recolour margin {margin!r}; expected one of {RECOLOUR_MARGINS}")
    partners = frozenset(c for c, s in HELD_OUT_PAIRS if s == shape)
    held = [_hue_saturation(COLOURS[c])[0] for c in sorted(partners)]

    def near_partner(colour: tuple[int, int, int]) -> bool:
        if margin == "detector":
            return bool(partners and colours_read(colour, background) & partners)
        hue, saturation = _hue_saturation(colour)
        return saturation >= 0.2 and any(min(abs(hue - h), 360 - abs(hue - h)) < UNNAMED_HUE_MARGIN for h in held)

    while True:
        rgb = rng.integers(0, 256, size=3)
        if rgb.max() < UNNAMED_COLOUR_BRIGHTNESS or np.sqrt(((_NAMED_RGB - rgb) ** 2).sum(-1)).min() < UNNAMED_COLOUR_DISTANCE:
            continue
        colour = int(rgb[0]), int(rgb[1]), int(rgb[2])
        if not near_partner(colour):
            return colour


def recoloured_shape_example(scene: Scene, rng: np.random.Generator, ex_id: str, *, templates: bool,
                             resolution: int, counts: str = "present", margin: str = "hue") -> Example:  # fmt: skip
    """A shape question about ``scene`` drawn with every object in its own unnamed colour (:func:`unnamed_colour`).

    The question names no colour: "What shape is the object at the top left?" (the position refers when there are
    several objects) or "How many stars are there?", and the answer is a shape or a digit. Why: the compositional
    split's held-out pairs (a "red star") defeat a read-out of shape that the named colours bind, and even a random
    Q-Former's outputs bind it (docs/pretrain/query-probe.txt); shapes in colours no other object has make colour
    useless for telling shapes apart, without ever drawing a held-out pair.

    ``counts``: how a count question picks what it counts. ``"present"`` (shapes-judge-8/9's recipes): a shape the
    scene has 70% of the time, which taught those models to answer 1 where an absent shape's 0 is right (test-split
    count 94.4% -> 86.7%); ``"world"``: all objects or any shape, half and half, as the world's own count questions
    draw them (less their colour kind). ``margin``: how the colours keep away from held-out partners
    (:func:`unnamed_colour`).
    """
    if counts not in ("present", "world"):
        raise ValueError(f"counts must be 'present' or 'world', not {counts!r}")
    colours = [unnamed_colour(rng, obj.shape, margin, scene.background) for obj in scene.objects]
    objects = scene.objects
    if rng.random() < 0.7:
        obj = objects[int(rng.integers(len(objects)))]
        ref = "object" if len(objects) == 1 else f"object at the {obj.position}"
        question = QUESTION_TEMPLATES["shape"][int(rng.integers(len(QUESTION_TEMPLATES["shape"])))].format(ref=ref)
        answer, qtype = obj.shape, "shape"
    else:
        if counts == "present":  # mostly a shape the scene has (a count of 0 for the rest)
            present = rng.random() < 0.7
            shape = objects[int(rng.integers(len(objects)))].shape if present else SHAPES[int(rng.integers(len(SHAPES)))]
        else:  # as the world's own count questions draw it, less the colour kind: all objects, or any shape
            shape = "object" if rng.random() < 0.5 else SHAPES[int(rng.integers(len(SHAPES)))]
        phrasings = QUESTION_TEMPLATES["count"]
        question = phrasings[int(rng.integers(len(phrasings)))].format(x=PLURAL[shape])
        answer, qtype = str(sum(shape in ("object", o.shape) for o in objects)), "count"
    prompt = vqa_prompt(question, rng) if templates else question
    return Example(id=ex_id, task="vqa", image=render(scene, resolution, colours), prompt=prompt, answers=[answer],
                   category=qtype, source="shapes-world",
                   meta={"question": question, "scene": scene.to_dict(), "colours": colours})  # fmt: skip


def world_examples(
    split: str,
    n: int,
    task: str,
    *,
    seed: int = 0,
    start: int = 0,
    spec: SceneSpec = SceneSpec(),
    resolution: int = DEFAULT_RESOLUTION,
    templates: bool = True,
    qtypes: tuple[str, ...] = QUESTION_TYPES,
    avoid_pairs: frozenset[tuple[str, str]] = frozenset(),
    kinds: tuple[str, ...] = tuple(JUDGE_KINDS),
) -> list[Example]:
    """``n`` examples of ``task`` from ``split`` (scenes ``start … start + n - 1``).

    VQA examples cycle through ``qtypes`` (and judge examples through the judge kinds) so the
    types are balanced; when a scene cannot support a type (a relation in a one-object scene),
    the next type in the cycle is used. ``templates`` wraps prompts in InstructBLIP's
    instruction templates; without it, the prompt is the bare question. ``avoid_pairs``: colour-shape
    pairs that no wrong answer, invented object or absent-object question names (see
    :func:`explore.world.judge.judge_pair`). ``kinds``: the judge kinds to cycle through (all by default).
    """
    if task not in WORLD_TASKS:
        raise ValueError(f"unknown world task {task!r}; expected one of {', '.join(WORLD_TASKS)}")
    unknown = sorted(set(kinds) - set(JUDGE_KINDS))
    if unknown or not kinds:
        raise ValueError(f"unknown judge kinds {unknown or 'none'}; expected some of {', '.join(JUDGE_KINDS)}")
    examples = []
    for i in range(start, start + n):
        scene = split_scene(split, i, seed, spec)
        rng = _rng(split, i, seed, task)
        ex_id = f"{split}-{task}-{i:06d}"
        if task == "caption":
            examples.append(caption_example(scene, rng, ex_id, templates=templates, resolution=resolution))
            continue
        cycle = qtypes if task == "vqa" else kinds
        for shift in range(len(cycle)):
            kind = cycle[(i + shift) % len(cycle)]
            if task == "vqa":
                example = vqa_example(scene, rng, kind, ex_id, templates=templates, resolution=resolution,
                                      avoid=avoid_pairs)  # fmt: skip
            else:
                example = judge_example(scene, rng, kind, ex_id, resolution=resolution, avoid=avoid_pairs)
            if example is not None:
                examples.append(example)
                break
    return examples
