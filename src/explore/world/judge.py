"""Judge pairs: a query, a faithful answer and an unfaithful one, for the reward-model task.

Each pair has a *kind* (how the unfaithful answer is wrong) and a *category* as in
VL-RewardBench (general, hallucination, reasoning):

- ``wrong_attribute`` on a question about one object (colour / shape / size) → general;
- ``wrong_attribute`` inside a full description, and ``invented_object`` (a description that adds
  an object the image does not contain) → hallucination;
- ``wrong_count`` and ``wrong_relation`` → reasoning.

Every pair also carries a short ``reason`` taken from the scene graph (what the image shows that the
unfaithful answer gets wrong), so a judge can be taught to explain its verdict, as VL-RewardBench's
official prompt asks ("Explain your reasoning ... Overall Judgment: Answer X is better").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from explore.world.scene import COLOURS, SHAPES, SIZES, Obj, Scene
from explore.world.text import (
    PLURAL,
    RELATION_PHRASE,
    absent_pairs,
    caption,
    caption_prompt,
    describe,
    direction,
    refer,
    words,
)

JUDGE_KINDS: dict[str, str] = {
    "wrong_attribute": "general",
    "wrong_attribute_description": "hallucination",
    "invented_object": "hallucination",
    "wrong_count": "reasoning",
    "wrong_relation": "reasoning",
}
CATEGORIES: tuple[str, ...] = ("general", "hallucination", "reasoning")

# Judge queries ask for a full sentence, so they never collide with the short-answer VQA questions
# (a model trained on both would otherwise get two formats for one question).
JUDGE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "colour_q": ("In one sentence, what colour is the {ref}?", "Say in a full sentence which colour the {ref} has."),
    "colour_a": ("The {ref} is {value}.",),
    "shape_q": ("In one sentence, what shape is the {ref}?", "Say in a full sentence which shape the {ref} has."),
    "shape_a": ("The {ref} is a {value}.",),
    "size_q": ("In one sentence, how big is the {ref}?", "Say in a full sentence whether the {ref} is small or large."),
    "size_a": ("The {ref} is {value}.",),
    "count_q": ("In one sentence, how many {x} are there?", "Say in a full sentence how many {x} you can see."),
    "count_a": ("There are {n} {x}.",),
    "count_a_one": ("There is {n} {x}.",),
    "relation_q": ("In one sentence, where is the {a} relative to the {b}?",
                   "Say in a full sentence how the {a} is placed with respect to the {b}."),
    "relation_a": ("The {a} is {rel} the {b}.",),
}

# Reasons, one per kind: the fact from the scene graph that decides the pair. Their words are not part
# of the world vocabulary (explore.world.vocabulary) so that older recipes keep their token ids;
# a tokenizer that reads judge outputs adds them (see :func:`reason_words`).
REASON_TEMPLATES: dict[str, str] = {
    "wrong_attribute": "the {ref} is {value}, not {wrong}.",
    "wrong_attribute_description": "the image shows a {true}, not a {fake}.",
    "invented_object": "the image shows no {fake}.",
    "wrong_count": "there {verb} {n} {x}, not {wrong}.",
    "wrong_relation": "the {a} is {rel} the {b}, not {wrong} it.",
}


@dataclass(frozen=True)
class JudgePair:
    """A query with a faithful (``chosen``) and an unfaithful (``rejected``) answer."""

    kind: str  # one of JUDGE_KINDS
    category: str  # general / hallucination / reasoning
    query: str
    chosen: str
    rejected: str
    reason: str = ""  # why ``chosen`` is right, from the scene graph (REASON_TEMPLATES)


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _other(rng: np.random.Generator, options, current):
    return _pick(rng, [o for o in options if o != current])


def _wrong_attribute(scene: Scene, rng: np.random.Generator, avoid: frozenset[tuple[str, str]]) -> JudgePair:
    obj = _pick(rng, list(scene.objects))
    attr = _pick(rng, ("colour", "shape", "size"))
    t = JUDGE_TEMPLATES
    if attr == "size":
        ref, value, wrong = obj.name, obj.size, _other(rng, SIZES, obj.size)
    else:
        ref = refer(scene, obj, without=attr)
        value = getattr(obj, attr)
        # The wrong answer names the object with one attribute changed: never as a pair of ``avoid``.
        options = ([c for c in COLOURS if (c, obj.shape) not in avoid] if attr == "colour"
                   else [s for s in SHAPES if (obj.colour, s) not in avoid])  # fmt: skip
        wrong = _other(rng, options, value)
    query = _pick(rng, t[f"{attr}_q"]).format(ref=ref)
    answer = _pick(rng, t[f"{attr}_a"])
    article = "a " if attr == "shape" else ""
    reason = REASON_TEMPLATES["wrong_attribute"].format(ref=ref, value=article + value, wrong=article + wrong)
    return JudgePair("wrong_attribute", "general", query,
                     answer.format(ref=ref, value=value), answer.format(ref=ref, value=wrong), reason)  # fmt: skip


def _altered_scene(scene: Scene, rng: np.random.Generator, avoid: frozenset[tuple[str, str]]) -> Scene:
    """The scene with one attribute of one object changed (the last object of the tuple stays
    where it was), keeping colour–shape pairs unique and out of ``avoid``."""
    idx = int(rng.integers(len(scene.objects)))
    obj = scene.objects[idx]
    while True:
        attr = _pick(rng, ("colour", "shape", "size"))
        if attr == "size":
            new = replace(obj, size=_other(rng, SIZES, obj.size))
        elif attr == "colour":
            new = replace(obj, colour=_other(rng, list(COLOURS), obj.colour))
        else:
            new = replace(obj, shape=_other(rng, SHAPES, obj.shape))
        if attr == "size" or (scene.find(new.colour, new.shape) is None and (new.colour, new.shape) not in avoid):
            break
    objects = list(scene.objects)
    objects[idx] = new
    return replace(scene, objects=tuple(objects))


def _invented_scene(scene: Scene, rng: np.random.Generator, avoid: frozenset[tuple[str, str]]) -> Scene:
    """The scene plus one object (never a pair of ``avoid``) in an empty cell (None if the grid is full)."""
    used = {o.cell for o in scene.objects}
    free = [(r, c) for r in range(3) for c in range(3) if (r, c) not in used]
    row, col = _pick(rng, free)
    colour, shape = _pick(rng, absent_pairs(scene, avoid))
    extra = Obj(shape, colour, _pick(rng, SIZES), (col + 0.5) / 3, (row + 0.5) / 3)
    return replace(scene, objects=(*scene.objects, extra))


def _wrong_count(scene: Scene, rng: np.random.Generator) -> JudgePair:
    objects = list(scene.objects)
    kind = int(rng.integers(3))
    if kind == 0:
        singular, n = "object", len(objects)
    elif kind == 1:
        singular = _pick(rng, [o.shape for o in objects])
        n = sum(o.shape == singular for o in objects)
    else:
        colour = _pick(rng, [o.colour for o in objects])
        singular, n = f"{colour} object", sum(o.colour == colour for o in objects)
    plural = " ".join([*singular.split()[:-1], PLURAL.get(singular.split()[-1], "objects")])
    wrong = _pick(rng, [m for m in (n - 2, n - 1, n + 1, n + 2) if m >= 1])
    reason = REASON_TEMPLATES["wrong_count"].format(verb="is" if n == 1 else "are", n=n,
                                                    x=singular if n == 1 else plural, wrong=wrong)  # fmt: skip

    def answer(count: int) -> str:
        # Grammatical for both counts, so grammar never gives the wrong answer away.
        template = JUDGE_TEMPLATES["count_a"][0] if count != 1 else JUDGE_TEMPLATES["count_a_one"][0]
        return template.format(n=count, x=plural if count != 1 else singular)

    query = _pick(rng, JUDGE_TEMPLATES["count_q"]).format(x=plural)
    return JudgePair("wrong_count", "reasoning", query, answer(n), answer(wrong), reason)


_OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}


def _wrong_relation(scene: Scene, rng: np.random.Generator) -> JudgePair | None:
    aligned = [(a, b) for a in scene.objects for b in scene.objects if a is not b and direction(a, b)]
    if not aligned:
        return None
    a, b = _pick(rng, aligned)
    rel = direction(a, b)
    query = _pick(rng, JUDGE_TEMPLATES["relation_q"]).format(a=a.name, b=b.name)
    answer = JUDGE_TEMPLATES["relation_a"][0]
    chosen = answer.format(a=a.name, b=b.name, rel=RELATION_PHRASE[rel])
    rejected = answer.format(a=a.name, b=b.name, rel=RELATION_PHRASE[_OPPOSITE[rel]])
    reason = REASON_TEMPLATES["wrong_relation"].format(a=a.name, b=b.name, rel=RELATION_PHRASE[rel],
                                                       wrong=RELATION_PHRASE[_OPPOSITE[rel]])  # fmt: skip
    return JudgePair("wrong_relation", "reasoning", query, chosen, rejected, reason)


def judge_pair(scene: Scene, kind: str, rng: np.random.Generator,
               avoid: frozenset[tuple[str, str]] = frozenset()) -> JudgePair | None:  # fmt: skip
    """Make a judge pair of ``kind`` for ``scene``, or None if the scene cannot support it
    (a relation needs two aligned objects; an invented object needs a free cell).

    ``avoid``: colour-shape pairs the unfaithful answer must not name. Training scenes never show a held-out
    pair (explore.world.HELD_OUT_PAIRS), but a wrong answer or an invented object could still name one, so a
    model would only ever read "red square" in a rejected answer and learn that the pair is false; the
    compositional split then shows it. Empty (the default): the draws of the first recipes, unchanged.
    """
    if kind == "wrong_attribute":
        return _wrong_attribute(scene, rng, avoid)
    if kind == "wrong_count":
        return _wrong_count(scene, rng)
    if kind == "wrong_relation":
        return _wrong_relation(scene, rng)
    if kind in ("wrong_attribute_description", "invented_object"):
        if kind == "invented_object" and len(scene.objects) >= 9:
            return None
        fake = (_altered_scene(scene, rng, avoid) if kind == "wrong_attribute_description"
                else _invented_scene(scene, rng, avoid))  # fmt: skip
        style = _pick(rng, ("canonical", "there_is", "image_shows"))
        true_objects, fake_objects = set(scene.objects), set(fake.objects)
        changed = [describe(o) for o in fake.objects if o not in true_objects]
        kept = [describe(o) for o in scene.objects if o not in fake_objects]
        if kind == "invented_object":
            reason = REASON_TEMPLATES[kind].format(fake=changed[0].removeprefix("a "))
        else:
            reason = REASON_TEMPLATES[kind].format(true=kept[0].removeprefix("a "), fake=changed[0].removeprefix("a "))
        return JudgePair(kind, JUDGE_KINDS[kind], caption_prompt(rng), caption(scene, style), caption(fake, style),
                         reason)  # fmt: skip
    raise ValueError(f"unknown judge kind {kind!r}; expected one of {sorted(JUDGE_KINDS)}")


def reason_words() -> list[str]:
    """The words of the reason templates (without their fields), sorted."""
    return sorted({w for text in REASON_TEMPLATES.values() for w in words(re.sub(r"\{\w+\}", " ", text))})


__all__ = ["CATEGORIES", "JUDGE_KINDS", "JUDGE_TEMPLATES", "REASON_TEMPLATES", "JudgePair", "judge_pair",
           "reason_words"]  # fmt: skip
