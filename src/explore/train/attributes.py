"""The query-attribute auxiliary loss (issue 14's compositional split).

On held-out colour-shape pairs (never in training) the embedded model often names the shape it saw with the colour the
question names. Measured in session 18 on 1,000 compositional shape questions of world seed 31337: removing the colour
words from the *language model's* text leaves the answer where it is (73.8% -> 74.2% right), so the prior is not the
LM's; a linear probe reads a held-out object's shape from the ViT's token at 91% but from the Q-Former's query outputs
at 42% when the instruction names its colour (``benchmarks/query_probe.py``). The Q-Former's summary of the object the
instruction selects is where a colour-shape conjunction stands in for the shape.

This head asks that summary to be *factorized*: one linear layer must read the selected object's shape and another its
colour from the query outputs (flattened, as the probe reads them), with the same weights for every colour and shape,
on questions about one object in the scene: a shape question gives the shape (its answer) and the colour (named in the
question), a colour question the colour (its answer) and the shape (named in it), a size or position question both. It is what the objects stage does for the ViT
(a linear read of each attribute, 91% on held-out pairs) moved to the Q-Former. The head is trained with the model and
discarded: the saved folder is a plain InstructBLIP. Written by hand: neither transformers nor peft has auxiliary
heads on InstructBLIP's query outputs.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from explore.data.example import Example
from explore.world.scene import COLOURS, SHAPES

ATTRIBUTE_HEAD_FILE = "attribute_head.safetensors"
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)
IGNORE = -100
_COLOUR_WORD = re.compile(r"\b(" + "|".join(COLOURS) + r")\b")
_SHAPE_WORD = re.compile(r"\b(" + "|".join(SHAPES) + r")s?\b")


def _only(pattern: re.Pattern, text: str) -> str | None:
    """The one word of ``pattern`` in ``text`` (None when there are none or several different ones)."""
    found = set(pattern.findall(text.lower()))
    return found.pop() if len(found) == 1 else None


def attribute_targets(examples: list[Example]) -> tuple[Tensor, Tensor]:
    """(shape, colour) class indices of the object each example asks about, :data:`IGNORE` where unknown.

    VQA examples about one object that is in the scene count: a shape or colour question (its answer gives that
    attribute, the question the other when it names exactly one; a recoloured shape's question names no colour), and a
    size, position or answered-yes existence question (both from the question). Other examples are all IGNORE.
    """
    shapes, colours = [], []
    for example in examples:
        shape = colour = None
        answer = example.answers[0].strip().lower() if example.task == "vqa" and example.answers else ""
        if example.category == "shape" and answer in SHAPES:
            shape, colour = answer, _only(_COLOUR_WORD, example.prompt)
        elif example.category == "colour" and answer in COLOUR_NAMES:
            colour, shape = answer, _only(_SHAPE_WORD, example.prompt)
        elif example.category in ("size", "position") or (example.category == "exist" and answer == "yes"):
            shape, colour = _only(_SHAPE_WORD, example.prompt), _only(_COLOUR_WORD, example.prompt)  # an object there
        shapes.append(SHAPES.index(shape) if shape else IGNORE)
        colours.append(COLOUR_NAMES.index(colour) if colour else IGNORE)
    return torch.tensor(shapes), torch.tensor(colours)


class AttributeHead(nn.Module):
    """Two linear reads, shape and colour, of the flattened query outputs (num_query_tokens × hidden); discarded."""

    file = ATTRIBUTE_HEAD_FILE

    def __init__(self, num_query_tokens: int, hidden_size: int):
        super().__init__()
        self.shape = nn.Linear(num_query_tokens * hidden_size, len(SHAPES))
        self.colour = nn.Linear(num_query_tokens * hidden_size, len(COLOURS))

    def loss(self, queries: Tensor, shapes: Tensor, colours: Tensor) -> Tensor:
        """Mean cross-entropy of both reads over the examples with a target; 0 (with a graph) when there is none."""
        flat = queries.flatten(1).float()
        total = queries.sum() * 0.0
        for head, target in ((self.shape, shapes), (self.colour, colours)):
            keep = target != IGNORE
            if keep.any():
                total = total + nn.functional.cross_entropy(head(flat[keep]), target[keep].to(flat.device))
        return total
