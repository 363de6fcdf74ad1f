"""Scenes of the shapes world: objects with a shape, a colour, a size and a position.

A scene is a plain value (dataclasses of strings and floats) that round-trips through JSON,
so every image, question and answer can be regenerated or checked from it exactly.

Layout: the image is divided into a ``GRID × GRID`` grid of cells (3 × 3) and each object sits
in its own cell, jittered inside it. This guarantees that objects never overlap, and makes
position ("top left") and relation ("left of") answers unambiguous, as in Sort-of-CLEVR.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "cross")

# name -> RGB. Chosen to stay distinguishable after 64 px anti-aliased rendering and noise.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 90, 230),
    "yellow": (240, 220, 40),
    "purple": (140, 60, 200),
    "orange": (250, 140, 20),
    "cyan": (40, 210, 220),
    "pink": (250, 130, 200),
}

SIZES: tuple[str, ...] = ("small", "large")

# Object radius as a fraction of the image side (the shape fits in a circle of this radius).
SIZE_RADIUS: dict[str, float] = {"small": 0.085, "large": 0.14}

GRID = 3
# Position names of the grid cells, indexed [row][col] (row 0 is the top).
CELL_NAMES: tuple[tuple[str, ...], ...] = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)

# Colour–shape pairs never seen in training: one shape per colour, spread so that every colour
# and every shape still appears in training with other partners (a Latin-square-like diagonal).
HELD_OUT_PAIRS: frozenset[tuple[str, str]] = frozenset(
    (colour, SHAPES[(2 * i + 1) % len(SHAPES)]) for i, colour in enumerate(COLOURS)
)


@dataclass(frozen=True)
class Obj:
    """One object. ``x``, ``y`` are the centre in [0, 1] image coordinates (y grows downwards)."""

    shape: str
    colour: str
    size: str
    x: float
    y: float
    rotation: float = 0.0  # degrees; used by shapes that are not rotation invariant

    @property
    def cell(self) -> tuple[int, int]:
        """(row, col) of the grid cell the object's centre lies in."""
        col = min(int(self.x * GRID), GRID - 1)
        row = min(int(self.y * GRID), GRID - 1)
        return row, col

    @property
    def position(self) -> str:
        """Named position of the object's cell, e.g. ``"top left"``."""
        row, col = self.cell
        return CELL_NAMES[row][col]

    @property
    def radius(self) -> float:
        return SIZE_RADIUS[self.size]

    @property
    def name(self) -> str:
        """``"red circle"``: unique within a scene (scenes never repeat a colour–shape pair)."""
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    """A scene: its objects and the background colour, plus optional pixel noise."""

    objects: tuple[Obj, ...]
    background: tuple[int, int, int] = (24, 24, 24)
    noise: float = 0.0  # std of Gaussian pixel noise, in 0–255 units
    seed: int = 0  # seed of the noise pattern (and a record of the scene's own seed)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "Scene":
        objects = tuple(Obj(**o) for o in data["objects"])
        return cls(
            objects=objects,
            background=tuple(data["background"]),
            noise=float(data["noise"]),
            seed=int(data["seed"]),
        )

    @classmethod
    def from_json(cls, text: str) -> "Scene":
        return cls.from_dict(json.loads(text))

    def find(self, colour: str, shape: str) -> Obj | None:
        for obj in self.objects:
            if obj.colour == colour and obj.shape == shape:
                return obj
        return None

    def in_reading_order(self) -> list[Obj]:
        """Objects sorted top-to-bottom, left-to-right by cell (the canonical caption order)."""
        return sorted(self.objects, key=lambda o: o.cell)


@dataclass(frozen=True)
class SceneSpec:
    """How scenes are sampled."""

    min_objects: int = 1  # fewest objects in a scene
    max_objects: int = 4  # most objects in a scene (at most GRID * GRID)
    background: tuple[int, int, int] = (24, 24, 24)  # background RGB
    random_background: bool = False  # sample a dark background per scene instead of `background`
    noise: float = 0.0  # std of Gaussian pixel noise (0–255 units)
    # Colour–shape pairs this sampler never produces (the training splits exclude the held-out pairs).
    exclude_pairs: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    # If set, at least one object uses one of these pairs (the compositional split).
    require_pairs: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects <= GRID * GRID:
            raise ValueError(
                f"need 1 <= min_objects <= max_objects <= {GRID * GRID}, "
                f"got min_objects={self.min_objects}, max_objects={self.max_objects}"
            )


def _allowed_pairs(spec: SceneSpec) -> list[tuple[str, str]]:
    return [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in spec.exclude_pairs]


def sample_scene(seed: int, spec: SceneSpec = SceneSpec()) -> Scene:
    """Sample one scene deterministically from ``seed``.

    Objects get distinct grid cells (so they never overlap) and distinct colour–shape pairs
    (so "the red circle" always names exactly one object).
    """
    rng = np.random.default_rng(seed)
    n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    cells = rng.permutation(GRID * GRID)[:n]
    pairs = _allowed_pairs(spec)
    chosen_idx = rng.permutation(len(pairs))[:n]
    chosen = [pairs[i] for i in chosen_idx]
    if spec.require_pairs:
        required = sorted(spec.require_pairs)
        forced = required[int(rng.integers(len(required)))]
        if forced not in chosen:
            chosen[0] = forced
    objects = []
    cell_size = 1.0 / GRID
    for (colour, shape), cell in zip(chosen, cells):
        size = SIZES[int(rng.integers(len(SIZES)))]
        radius = SIZE_RADIUS[size]
        row, col = divmod(int(cell), GRID)
        # Jitter the centre inside the cell so the object stays within it.
        slack = cell_size / 2 - radius - 0.01
        x = (col + 0.5) * cell_size + float(rng.uniform(-slack, slack))
        y = (row + 0.5) * cell_size + float(rng.uniform(-slack, slack))
        rotation = float(rng.uniform(-15, 15))
        objects.append(Obj(shape, colour, size, round(x, 4), round(y, 4), round(rotation, 2)))
    if spec.random_background:
        background = tuple(int(v) for v in rng.integers(0, 60, size=3))
    else:
        background = tuple(spec.background)
    return Scene(objects=tuple(objects), background=background, noise=spec.noise, seed=seed)
