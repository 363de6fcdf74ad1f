"""Text from the scene graph: captions and questions, each with several phrasing templates.

Every answer is computed from the :class:`~explore.world.scene.Scene`, so it is exact. The
instruction templates follow InstructBLIP's (its paper lists 10–15 per task); the question
phrasings vary on top of them.

Question types: colour, shape, size, count, exist, position, relation.
Short answers: a colour / shape / size / position name, a digit, "yes"/"no", or a direction
("left", "right", "above", "below").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np

from explore.world.scene import CELL_NAMES, COLOURS, SHAPES, SIZES, Obj, Scene

QUESTION_TYPES: tuple[str, ...] = ("colour", "shape", "size", "count", "exist", "position", "relation")

PLURAL = {"object": "objects", "circle": "circles", "square": "squares", "triangle": "triangles", "star": "stars",
          "diamond": "diamonds", "cross": "crosses"}  # fmt: skip
POSITIONS: tuple[str, ...] = tuple(name for row in CELL_NAMES for name in row)
DIRECTIONS: tuple[str, ...] = ("left", "right", "above", "below")

# InstructBLIP's VQA instruction templates (paper, Table 7), with {q} the question.
VQA_INSTRUCTIONS: tuple[str, ...] = (
    "{q}",
    "Question: {q}",
    "{q} A short answer to the question is",
    "Q: {q} A:",
    "Question: {q} Short answer:",
    "Given the image, answer the following question with no more than three words. {q}",
    "Based on the image, respond to this question with a short answer: {q} Answer:",
    "Use the provided image to answer the question: {q} Provide your answer as short as possible:",
    'What is the answer to the following question? "{q}"',
    'The question "{q}" can be answered using the image. A short answer is',
)

# InstructBLIP's captioning instruction templates (paper, Table 7), without the <Image> marker.
CAPTION_INSTRUCTIONS: tuple[str, ...] = (
    "A short image caption:",
    "A short image description:",
    "A photo of",
    "An image that shows",
    "Write a short description for the image.",
    "Write a description for the photo.",
    "Provide a description of what is presented in the photo.",
    "Briefly describe the content of the image.",
    "Can you briefly explain what you see in the image?",
    "Could you use a few words to describe what you perceive in the photo?",
    "Please provide a short depiction of the picture.",
    "Using language, provide a short account of the image.",
    "Use a few words to illustrate what is happening in the picture.",
)

# Question phrasings per type. Placeholders: {ref} a referring expression, {a}/{b} two objects,
# {x} a counted noun phrase, {obj} an object description, {rel} a relation phrase.
QUESTION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "colour": ("What colour is the {ref}?", "What is the colour of the {ref}?",
               "Which colour does the {ref} have?", "Tell me the colour of the {ref}.",
               "The {ref} is what colour?", "Name the colour of the {ref}."),
    "shape": ("What shape is the {ref}?", "What is the shape of the {ref}?",
              "Which shape is the {ref}?", "Tell me the shape of the {ref}.",
              "The {ref} has what shape?", "Name the shape of the {ref}."),
    "size": ("What size is the {ref}?", "Is the {ref} small or large?", "How big is the {ref}?",
             "Tell me the size of the {ref}.", "Is the {ref} large or small?", "What is the size of the {ref}?"),
    "count": ("How many {x} are there?", "How many {x} are in the image?", "Count the {x}.",
              "What is the number of {x}?", "How many {x} can you see?", "Tell me how many {x} there are."),
    "exist": ("Is there a {obj}?", "Is there a {obj} in the image?", "Does the image contain a {obj}?",
              "Can you see a {obj}?", "Is a {obj} present?", "Does the picture show a {obj}?"),
    "position": ("Where is the {ref}?", "Where is the {ref} located?", "In which part of the image is the {ref}?",
                 "What is the position of the {ref}?", "Tell me where the {ref} is.", "Where can the {ref} be found?"),
    "relation_yesno": ("Is the {a} {rel} the {b}?", "Is the {a} located {rel} the {b}?",
                       "Does the {a} appear {rel} the {b}?", "Is it true that the {a} is {rel} the {b}?"),
    "relation_where": ("Where is the {a} relative to the {b}?", "Where is the {a} compared to the {b}?",
                       "Is the {a} left, right, above or below the {b}?",
                       "In which direction from the {b} is the {a}?"),
}  # fmt: skip

RELATION_PHRASE = {"left": "left of", "right": "right of", "above": "above", "below": "below"}


@dataclass(frozen=True)
class QA:
    """A question about a scene with its exact short answer."""

    qtype: str  # one of QUESTION_TYPES
    question: str
    answer: str
    meta: dict = field(default_factory=dict, compare=False)


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def refer(scene: Scene, obj: Obj, without: str) -> str | None:
    """Shortest unambiguous description of ``obj`` that does not mention attribute ``without``.

    ``without`` is "colour" or "shape" (the attribute a question asks about). Returns None when
    no such description is unique (never happens: the position always disambiguates).
    """
    others = [o for o in scene.objects if o is not obj]
    if without == "colour":
        noun, same_noun = obj.shape, [o for o in others if o.shape == obj.shape]
    elif without == "shape":
        noun, same_noun = f"{obj.colour} object", [o for o in others if o.colour == obj.colour]
    else:
        raise ValueError(f"refer() can leave out 'colour' or 'shape', not {without!r}")
    if not same_noun:
        return noun
    if all(o.size != obj.size for o in same_noun):
        return f"{obj.size} {noun}"
    return f"{noun} at the {obj.position}"


def direction(a: Obj, b: Obj) -> str | None:
    """Direction of ``a`` from ``b`` when they share a row or a column of the grid, else None."""
    (ra, ca), (rb, cb) = a.cell, b.cell
    if ra == rb and ca != cb:
        return "left" if ca < cb else "right"
    if ca == cb and ra != rb:
        return "above" if ra < rb else "below"
    return None


def holds(a: Obj, rel: str, b: Obj) -> bool | None:
    """Whether ``a rel b`` holds, decided by grid cells; None when the axis does not separate them."""
    (ra, ca), (rb, cb) = a.cell, b.cell
    if rel in ("left", "right"):
        return None if ca == cb else (ca < cb) == (rel == "left")
    if rel in ("above", "below"):
        return None if ra == rb else (ra < rb) == (rel == "above")
    raise ValueError(f"unknown relation {rel!r}; expected one of {DIRECTIONS}")


def absent_pairs(scene: Scene, avoid: frozenset[tuple[str, str]] = frozenset()) -> list[tuple[str, str]]:
    """The colour-shape pairs ``scene`` does not contain, outside ``avoid``, in a fixed order."""
    return [(c, s) for c in COLOURS for s in SHAPES if scene.find(c, s) is None and (c, s) not in avoid]


def ask(scene: Scene, qtype: str, rng: np.random.Generator, avoid: frozenset[tuple[str, str]] = frozenset()) -> QA | None:
    """Make one question of type ``qtype`` about ``scene`` with its answer, or None if the scene
    cannot support it (e.g. a relation question in a one-object scene). An existence question about an
    absent object never names a colour-shape pair of ``avoid`` (see :func:`explore.world.judge.judge_pair`)."""
    objects = list(scene.objects)
    templates = QUESTION_TEMPLATES
    if qtype in ("colour", "shape"):
        obj = _pick(rng, objects)
        ref = refer(scene, obj, without=qtype)
        answer = obj.colour if qtype == "colour" else obj.shape
        return QA(qtype, _pick(rng, templates[qtype]).format(ref=ref), answer)
    if qtype == "size":
        obj = _pick(rng, objects)
        return QA(qtype, _pick(rng, templates[qtype]).format(ref=obj.name), obj.size)
    if qtype == "position":
        obj = _pick(rng, objects)
        return QA(qtype, _pick(rng, templates[qtype]).format(ref=obj.name), obj.position)
    if qtype == "count":
        kind = int(rng.integers(3))
        if kind == 0:
            noun, n = "objects", len(objects)
        elif kind == 1:
            shape = _pick(rng, SHAPES)
            noun, n = PLURAL[shape], sum(o.shape == shape for o in objects)
        else:
            colour = _pick(rng, list(COLOURS))
            noun, n = f"{colour} objects", sum(o.colour == colour for o in objects)
        return QA(qtype, _pick(rng, templates[qtype]).format(x=noun), str(n))
    if qtype == "exist":
        if rng.random() < 0.5:
            obj = _pick(rng, objects)
            colour, shape = obj.colour, obj.shape
        else:  # a colour–shape pair absent from the scene
            colour, shape = _pick(rng, absent_pairs(scene, avoid))
        answer = "yes" if scene.find(colour, shape) is not None else "no"
        return QA(qtype, _pick(rng, templates[qtype]).format(obj=f"{colour} {shape}"), answer)
    if qtype == "relation":
        pairs = [(a, b) for a in objects for b in objects if a is not b]
        if not pairs:
            return None
        if rng.random() < 0.5:
            decidable = [(a, b, r) for a, b in pairs for r in DIRECTIONS if holds(a, r, b) is not None]
            a, b, rel = _pick(rng, decidable)
            answer = "yes" if holds(a, rel, b) else "no"
            text = _pick(rng, templates["relation_yesno"]).format(a=a.name, b=b.name, rel=RELATION_PHRASE[rel])
            return QA(qtype, text, answer, {"form": "yesno", "a": a.name, "b": b.name, "relation": rel})
        aligned = [(a, b) for a, b in pairs if direction(a, b) is not None]
        if not aligned:
            return None
        a, b = _pick(rng, aligned)
        text = _pick(rng, templates["relation_where"]).format(a=a.name, b=b.name)
        return QA(qtype, text, direction(a, b), {"form": "where", "a": a.name, "b": b.name, "relation": None})
    raise ValueError(f"unknown question type {qtype!r}; expected one of {QUESTION_TYPES}")


# How relation_steps words the relation step: "subject_first" ("the red circle is left of the blue square"), or
# "relation_last_compared": "relative to the blue square the red circle is left", the relation word last, and a
# yes/no adds the step "left compared to right" (the stated and the asked relation as bare words) before the
# answer. With the first, a model's left/right yes/no stays at chance (it does not read the left/right word
# back); with the second it follows the comparison (configs/pretrain/relation-stepwise-3.yaml, issue 14).
RELATION_SENTENCES: tuple[str, ...] = ("subject_first", "relation_last_compared")


def relation_steps(a: Obj, b: Obj, rel: str | None, answer: str, sentence: str = "subject_first") -> str:
    """A relation question's answer worked out step by step, the steps joined by " . ".

    Both objects' positions, then the relation along the asked axis, then the short answer:
    ``"the red circle is at the top left and the blue square is at the right . the red circle is left of the
    blue square . yes"``. ``rel`` is the relation a yes/no question asks about (its axis is the one stated);
    None for a where-question, whose pair shares a row or a column (the relation is then the answer).
    ``sentence`` (one of :data:`RELATION_SENTENCES`) words the relation step; ``"relation_last_compared"`` gives
    ``"... . relative to the blue square the red circle is left . left compared to right . no"`` for a yes/no
    question and ``"... . relative to the blue square the red circle is left . left"`` for a where-question.
    Only the world's own words are used (object names, position names, :data:`RELATION_PHRASE`).

    Raises:
        ValueError: ``rel`` is not a direction, ``sentence`` is unknown, or the asked axis does not separate
            ``a`` and ``b``.
    """
    if sentence not in RELATION_SENTENCES:
        raise ValueError(f"unknown relation sentence {sentence!r}; expected one of {RELATION_SENTENCES}")
    if rel is None:
        true_rel = direction(a, b)
    elif rel in DIRECTIONS:
        axis = ("left", "right") if rel in ("left", "right") else ("above", "below")
        true_rel = next((r for r in axis if holds(a, r, b)), None)
    else:
        raise ValueError(f"unknown relation {rel!r}; expected one of {DIRECTIONS} or None for a where-question")
    if true_rel is None:
        raise ValueError(f"the {a.name} ({a.position}) and the {b.name} ({b.position}) are not separated along "
                         f"the axis of {rel or 'a where-question'}")  # fmt: skip
    positions = f"the {a.name} is at the {a.position} and the {b.name} is at the {b.position}"
    if sentence == "subject_first":
        relation = f"the {a.name} is {RELATION_PHRASE[true_rel]} the {b.name}"
    else:
        relation = f"relative to the {b.name} the {a.name} is {true_rel}"
        if rel is not None:
            relation = f"{relation} . {true_rel} compared to {rel}"
    return f"{positions} . {relation} . {answer}"


def vqa_prompt(question: str, rng: np.random.Generator) -> str:
    """Wrap a question in one of InstructBLIP's VQA instruction templates."""
    return _pick(rng, VQA_INSTRUCTIONS).format(q=question)


def caption_prompt(rng: np.random.Generator) -> str:
    return _pick(rng, CAPTION_INSTRUCTIONS)


# ---------------------------------------------------------------------------------------------
# Captions. The canonical caption lists objects in reading order; other styles phrase the same
# content differently. parse_caption() recovers the objects from any of them.

CAPTION_STYLES: tuple[str, ...] = ("canonical", "there_is", "image_shows")


def describe(obj: Obj) -> str:
    return f"a {obj.size} {obj.colour} {obj.shape} at the {obj.position}"


def caption(scene: Scene, style: str = "canonical") -> str:
    """Describe every object of ``scene`` (size, colour, shape, position) in reading order."""
    parts = [describe(o) for o in scene.in_reading_order()]
    body = " and ".join(parts)
    if style == "canonical":
        return body
    if style == "there_is":
        return f"there {'is' if len(parts) == 1 else 'are'} {body}"
    if style == "image_shows":
        return f"the image shows {body}"
    raise ValueError(f"unknown caption style {style!r}; expected one of {CAPTION_STYLES}")


_POSITION_ALT = "|".join(sorted(POSITIONS, key=len, reverse=True))
_OBJECT_RE = re.compile(
    rf"\b({'|'.join(SIZES)}) ({'|'.join(COLOURS)}) ({'|'.join(SHAPES)}) at the ({_POSITION_ALT})\b"
)


def parse_caption(text: str) -> frozenset[tuple[str, str, str, str]]:
    """Objects a caption mentions, as a set of (size, colour, shape, position) tuples."""
    return frozenset(caption_objects(text))


def caption_objects(text: str) -> list[tuple[str, str, str, str]]:
    """Objects a caption mentions, as (size, colour, shape, position) tuples in the order it names them."""
    return _OBJECT_RE.findall(text.lower())


def scene_facts(scene: Scene) -> frozenset[tuple[str, str, str, str]]:
    """The scene's objects in the same form as :func:`parse_caption` returns."""
    return frozenset((o.size, o.colour, o.shape, o.position) for o in scene.objects)


_WORD_RE = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Split text into lowercase words and punctuation (the same rule as the world tokenizer)."""
    return _WORD_RE.findall(text.lower())
