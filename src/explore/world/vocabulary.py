"""The world's vocabulary: every word its captions, questions, instructions and judge pairs can contain.

A module of its own because it gathers the text of both :mod:`explore.world.text` and
:mod:`explore.world.judge` (which builds on text), so neither has to import the other in a function.
"""

from __future__ import annotations

import re

from explore.world.judge import JUDGE_TEMPLATES
from explore.world.scene import COLOURS, SHAPES, SIZES
from explore.world.text import (
    CAPTION_INSTRUCTIONS,
    DIRECTIONS,
    PLURAL,
    POSITIONS,
    QUESTION_TEMPLATES,
    RELATION_PHRASE,
    VQA_INSTRUCTIONS,
    words,
)


def vocabulary(extra_texts: tuple[str, ...] = ()) -> list[str]:
    """Every word the world's text can contain, sorted: the vocabulary of the world tokenizer."""
    texts: list[str] = [*VQA_INSTRUCTIONS, *CAPTION_INSTRUCTIONS, *extra_texts]
    for group in (QUESTION_TEMPLATES, JUDGE_TEMPLATES):
        for templates in group.values():
            texts.extend(templates)
    texts.extend([*SHAPES, *PLURAL.values(), *COLOURS, *SIZES, *POSITIONS, *DIRECTIONS])
    texts.extend(RELATION_PHRASE.values())
    texts.extend(str(n) for n in range(10))
    texts.extend(["yes", "no", "objects", "object", "there", "is", "are", "the image shows", "and", "a", "at"])
    vocab: set[str] = set()
    for text in texts:
        vocab.update(w for w in words(re.sub(r"\{\w+\}", " ", text)))
    return sorted(vocab)
