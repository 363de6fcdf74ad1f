"""Prompt → layout with the world's grammar, and the per-cell layout map the grounded generator reads.

The grammar covers every prompt the world writes (canonical captions, "there is …", "the image shows …",
relation prompts) and GenEval's prompt shapes::

    prompt   := [prefix] clause (("and" | ",") clause)*
    prefix   := "a photo of" | "an image of" | "there is" | "there are" | "the image shows"
    clause   := group [relation group]
    group    := [count] [size] [colour] shape [("at the" | "in the") position]
    count    := a | an | one … nine | 1 … 9          (plural shape when count > 1)
    relation := "left of" | "right of" | "to the left of" | "to the right of" | "above" | "below"

:func:`parse_prompt` gives the groups and relations (:class:`ParsedPrompt`); :func:`sample_layout` turns
them into a :class:`~explore.world.scene.Scene` that satisfies them (what the prompt leaves open, e.g. the
cells of a relation or the colour of "three stars", is drawn from a seeded generator), and
:func:`layout_map` encodes a scene as a (LAYOUT_CHANNELS, GRID, GRID) map: occupied, one-hot shape,
one-hot colour, one-hot size per cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from explore.errors import ExploreError
from explore.world.scene import CELL_NAMES, COLOURS, GRID, HELD_OUT_PAIRS, SHAPES, SIZE_RADIUS, SIZES, Obj, Scene
from explore.world.text import PLURAL, holds, words

LAYOUT_CHANNELS = 1 + len(SHAPES) + len(COLOURS) + len(SIZES)  # occupied, shape, colour, size: 17
NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
           "eight": 8, "nine": 9, **{str(n): n for n in range(1, 10)}}  # fmt: skip
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}
SINGULAR = {plural: shape for shape, plural in PLURAL.items() if shape in SHAPES}
PREFIXES: tuple[tuple[str, ...], ...] = (("a", "photo", "of"), ("an", "image", "of"), ("there", "is"),
                                         ("there", "are"), ("the", "image", "shows"))  # fmt: skip
RELATIONS: dict[tuple[str, ...], str] = {("to", "the", "left", "of"): "left", ("to", "the", "right", "of"): "right",
                                         ("left", "of"): "left", ("right", "of"): "right", ("above",): "above",
                                         ("below",): "below"}  # fmt: skip
POSITION_CELLS: dict[tuple[str, ...], tuple[int, int]] = {
    tuple(name.split()): (row, col) for row, names in enumerate(CELL_NAMES) for col, name in enumerate(names)
}
KNOWN_WORDS = frozenset(
    {*NUMBERS, *SIZES, *COLOURS, *SHAPES, *SINGULAR, "and", ",", "at", "the", "in", ".", "photo", "image", "of",
     "there", "is", "are", "shows", "to"}
    | {w for key in RELATIONS for w in key}
    | {w for key in POSITION_CELLS for w in key}
)


@dataclass(frozen=True)
class Group:
    """``count`` objects of one description; ``None`` = the prompt leaves it open."""

    shape: str
    count: int = 1
    colour: str | None = None
    size: str | None = None
    cell: tuple[int, int] | None = None  # (row, col), only for count 1


@dataclass(frozen=True)
class Relation:
    """``groups[subject]`` is ``relation`` (left / right / above / below) of ``groups[reference]``."""

    subject: int
    relation: str
    reference: int


@dataclass(frozen=True)
class ParsedPrompt:
    groups: tuple[Group, ...]
    relations: tuple[Relation, ...] = ()

    @property
    def num_objects(self) -> int:
        return sum(group.count for group in self.groups)


def _grammar_error(prompt: str, detail: str) -> ExploreError:
    return ExploreError(f"prompt {prompt!r} is outside the shapes world's grammar: {detail}; write e.g. "
                        "'a red circle above a blue square', 'three green stars' or "
                        "'a large red circle at the top left and a small blue square at the center', "
                        "or pass --layout none for the free-text path")  # fmt: skip


class _Reader:
    def __init__(self, tokens: list[str], prompt: str):
        self.tokens, self.pos, self.prompt = tokens, 0, prompt

    def peek(self, n: int = 1) -> tuple[str, ...]:
        return tuple(self.tokens[self.pos : self.pos + n])

    def take(self, phrase: tuple[str, ...]) -> bool:
        if self.peek(len(phrase)) == phrase:
            self.pos += len(phrase)
            return True
        return False

    def fail(self, expected: str) -> ExploreError:
        found = " ".join(self.tokens[self.pos : self.pos + 3]) or "the end"
        return _grammar_error(self.prompt, f"expected {expected} at word {self.pos + 1}, found {found!r}")

    def group(self) -> Group:
        count = 1
        if self.peek() and self.peek()[0] in NUMBERS:
            count = NUMBERS[self.tokens[self.pos]]
            self.pos += 1
        size = self.tokens[self.pos] if self.peek() and self.peek()[0] in SIZES else None
        self.pos += size is not None
        colour = self.tokens[self.pos] if self.peek() and self.peek()[0] in COLOURS else None
        self.pos += colour is not None
        noun = self.peek()[0] if self.peek() else ""
        if noun in SHAPES:
            shape = noun
            if count > 1:
                raise self.fail(f"the plural {PLURAL[noun]!r} after a count of {count}")
        elif noun in SINGULAR:
            shape = SINGULAR[noun]
            if count == 1:
                raise self.fail(f"a count before the plural {noun!r}, e.g. 'two {noun}'")
        else:
            raise self.fail(f"a shape ({', '.join(SHAPES)})")
        self.pos += 1
        cell = None
        if self.take(("at", "the")) or self.take(("in", "the")):
            for phrase in sorted(POSITION_CELLS, key=len, reverse=True):
                if self.take(phrase):
                    cell = POSITION_CELLS[phrase]
                    break
            else:
                raise self.fail("a position (" + ", ".join(" ".join(p) for p in POSITION_CELLS) + ")")
            if count > 1:
                raise _grammar_error(self.prompt, f"{count} objects cannot share one cell")
        return Group(shape=shape, count=count, colour=colour, size=size, cell=cell)


def parse_prompt(prompt: str) -> ParsedPrompt:
    """The groups and relations of ``prompt`` (see the module's grammar).

    Raises:
        ExploreError: words outside the grammar (named), or known words in an order it does not allow.
    """
    tokens = words(prompt)
    unknown = sorted({t for t in tokens if t not in KNOWN_WORDS})
    if unknown:
        raise _grammar_error(prompt, "unknown words " + ", ".join(repr(w) for w in unknown))
    if not tokens:
        raise _grammar_error(prompt, "it is empty")
    while tokens and tokens[-1] == ".":
        tokens = tokens[:-1]
    reader = _Reader(tokens, prompt)
    for prefix in PREFIXES:
        if reader.take(prefix):
            break
    groups: list[Group] = []
    relations: list[Relation] = []
    while True:
        groups.append(reader.group())
        for phrase in sorted(RELATIONS, key=len, reverse=True):
            if reader.take(phrase):
                groups.append(reader.group())
                if groups[-1].count != 1 or groups[-2].count != 1:
                    raise _grammar_error(prompt, "a relation needs one object on each side")
                relations.append(Relation(len(groups) - 2, RELATIONS[phrase], len(groups) - 1))
                break
        if reader.pos == len(tokens):
            break
        if not (reader.take(("and",)) or reader.take((",",))):
            raise reader.fail("'and', ',' or a relation (left of, right of, above, below)")
        reader.take(("and",))  # ", and"
    parsed = ParsedPrompt(tuple(groups), tuple(relations))
    if parsed.num_objects > GRID * GRID:
        raise _grammar_error(prompt, f"{parsed.num_objects} objects, at most {GRID * GRID} fit (one per cell)")
    return parsed


def _cells_ok(cells: list[tuple[int, int]], slots: list[int], parsed: ParsedPrompt) -> bool:
    """Whether the relations hold for the given cells (``slots[g]`` = object index of group ``g``'s first)."""
    for rel in parsed.relations:
        a_cell, b_cell = cells[slots[rel.subject]], cells[slots[rel.reference]]
        a = Obj("circle", "red", "small", (a_cell[1] + 0.5) / GRID, (a_cell[0] + 0.5) / GRID)
        b = Obj("circle", "red", "small", (b_cell[1] + 0.5) / GRID, (b_cell[0] + 0.5) / GRID)
        if not holds(a, rel.relation, b):
            return False
    return True


def sample_layout(parsed: ParsedPrompt, seed: int | list[int],
                  avoid_pairs: frozenset[tuple[str, str]] = HELD_OUT_PAIRS) -> Scene:  # fmt: skip
    """A scene satisfying ``parsed``: stated attributes and cells kept, open ones drawn from ``seed``.

    Open colours avoid ``avoid_pairs`` (default: the held-out colour–shape pairs, so a test prompt's
    layout stays in the training distribution; a pair the prompt states is always kept).

    Raises:
        ExploreError: two objects stated in one cell, or no arrangement of cells satisfies the relations.
    """
    rng = np.random.default_rng(seed)
    slots, specs = [], []  # first object index of each group; one Group (count 1) per object
    for group in parsed.groups:
        slots.append(len(specs))
        specs.extend([group] * group.count)
    fixed = [g.cell for g in specs if g.cell is not None]
    if len(set(fixed)) != len(fixed):
        raise ExploreError(f"the prompt puts two objects in one cell ({sorted(fixed)}); the world has one per cell")
    all_cells = [(r, c) for r in range(GRID) for c in range(GRID)]
    for _ in range(2000):
        free = [all_cells[i] for i in rng.permutation(len(all_cells)) if all_cells[i] not in fixed]
        cells = [g.cell if g.cell is not None else free.pop() for g in specs]
        if _cells_ok(cells, slots, parsed):
            break
    else:
        raise ExploreError("no arrangement of the 3 × 3 grid satisfies the prompt's relations and positions")
    objects = []
    cell_size = 1.0 / GRID
    for group, (row, col) in zip(specs, cells):
        colour = group.colour
        if colour is None:
            choices = [c for c in COLOURS if (c, group.shape) not in avoid_pairs]
            colour = choices[int(rng.integers(len(choices)))]
        size = group.size or SIZES[int(rng.integers(len(SIZES)))]
        slack = cell_size / 2 - SIZE_RADIUS[size] - 0.01  # jitter inside the cell, as sample_scene does
        x = (col + 0.5) * cell_size + float(rng.uniform(-slack, slack))
        y = (row + 0.5) * cell_size + float(rng.uniform(-slack, slack))
        rotation = float(rng.uniform(-15, 15))
        objects.append(Obj(group.shape, colour, size, round(x, 4), round(y, 4), round(rotation, 2)))
    return Scene(objects=tuple(objects))


def prompt_layout(prompt: str, seed: int | list[int]) -> Scene:
    """:func:`parse_prompt` then :func:`sample_layout`."""
    return sample_layout(parse_prompt(prompt), seed)


def layout_map(scene: Scene, given_channel: bool = False) -> np.ndarray:
    """(LAYOUT_CHANNELS, GRID, GRID) float32 map of ``scene``: per cell occupied, shape, colour, size one-hots.

    ``given_channel`` appends a channel of ones (LAYOUT_CHANNELS + 1 in all): without it an empty cell and
    a dropped map (all zeros, the free-text and unconditional rows of training) look the same to the UNet.
    """
    grid = np.zeros((LAYOUT_CHANNELS + given_channel, GRID, GRID), dtype=np.float32)
    if given_channel:
        grid[LAYOUT_CHANNELS] = 1
    shape_at, colour_at, size_at = 1, 1 + len(SHAPES), 1 + len(SHAPES) + len(COLOURS)
    colours = list(COLOURS)
    for obj in scene.objects:
        row, col = obj.cell
        grid[0, row, col] = 1
        grid[shape_at + SHAPES.index(obj.shape), row, col] = 1
        grid[colour_at + colours.index(obj.colour), row, col] = 1
        grid[size_at + SIZES.index(obj.size), row, col] = 1
    return grid
