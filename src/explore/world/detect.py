"""Find the objects of a shapes-world image without a neural network (for GenEval-style checks).

1. Background: the median colour of the image border.
2. Colour masks: each pixel is explained as ``alpha * colour + (1 - alpha) * background`` for the
   palette colour with the smallest residual (anti-aliased edges get fractional ``alpha``); a
   pixel with ``alpha`` >= 0.35 and a small residual belongs to that colour.
3. Connected components (8-connectivity) per colour; tiny ones are dropped as noise.
4. Shape descriptors per component (alpha-weighted): area, compactness, elongation, radial
   kurtosis, maximal radius and the 3-, 4- and 5-fold angular harmonics of the mass; a k-nearest-
   neighbour vote against descriptors of real renders at the same resolution (calibrated on the
   *train* split) gives shape and size; the centroid gives the grid position.

Plain numpy; the accuracy on real renders (:func:`detector_accuracy`) is the upper bound of any
exact check built on it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image

from explore.world.render import render
from explore.world.scene import COLOURS, Obj, Scene
from explore.world.splits import split_scenes

PALETTE_NAMES: tuple[str, ...] = tuple(COLOURS)
PALETTE = np.array([COLOURS[name] for name in PALETTE_NAMES], dtype=np.float32)  # (K, 3)
ALPHA_MIN = 0.35  # a pixel at least this much object colour joins the object's mask
RESIDUAL_MAX = 60.0  # largest colour error (0-255 units) for a pixel to count as a palette colour
NEIGHBOURS = 7  # k of the nearest-neighbour vote


@dataclass(frozen=True)
class Detection:
    """One object found in an image: its attributes and centre in [0, 1] image coordinates."""

    colour: str
    shape: str
    size: str
    x: float
    y: float
    area: float  # alpha-weighted pixels


def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {array.shape}")
    return array


def colour_masks(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel, the index of its palette colour (-1: background) and its alpha in [0, 1]; both (H, W)."""
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return palette_fit(pixels, np.median(border, axis=0))


def palette_fit(pixels: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`colour_masks` on a known ``background`` RGB: pixels (..., 3) -> palette index (-1: none) and alpha."""
    offset = np.asarray(pixels, dtype=np.float32) - np.asarray(background, dtype=np.float32)  # (..., 3)
    direction = PALETTE - np.asarray(background, dtype=np.float32)  # (K, 3)
    norm = np.maximum((direction**2).sum(-1), 1.0)  # (K,)
    alpha = np.clip(offset @ direction.T / norm, 0.0, 1.0)  # (..., K)
    residual = np.linalg.norm(offset[..., None, :] - alpha[..., None] * direction, axis=-1)  # (..., K)
    residual = np.where(alpha > 0, residual, np.inf)
    best = residual.argmin(-1)
    best_alpha = np.take_along_axis(alpha, best[..., None], -1)[..., 0]
    best_residual = np.take_along_axis(residual, best[..., None], -1)[..., 0]
    labels = np.where((best_alpha >= ALPHA_MIN) & (best_residual <= RESIDUAL_MAX), best, -1)
    return labels, np.where(labels >= 0, best_alpha, 0.0)


_BLENDS = (np.arange(1, 256, dtype=np.float32) / 255)[:, None]  # an object's share in an anti-aliased pixel


def colours_read(rgb: tuple[int, int, int], background: tuple[int, int, int]) -> frozenset[str]:
    """The palette colours :func:`colour_masks` reads in an object drawn in ``rgb`` on ``background``: its inside
    and every anti-aliased blend of it with the background (shares 1/255 to 1, rounded as a render rounds them;
    a thin blend can read as another colour whose fitted alpha is larger)."""
    back = np.asarray(background, dtype=np.float32)
    blends = np.round(_BLENDS * np.asarray(rgb, dtype=np.float32) + (1 - _BLENDS) * back)
    labels, _ = palette_fit(blends, back)
    return frozenset(PALETTE_NAMES[i] for i in np.unique(labels[labels >= 0]))


def connected_components(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a boolean (H, W) mask, each as an (N, 2) array of (row, col)."""
    h, w = mask.shape
    seen = np.zeros_like(mask, dtype=bool)
    components = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        stack, pixels = [start], []
        while stack:
            r, c = stack.pop()
            pixels.append((r, c))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    rr, cc = r + dr, c + dc
                    if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        stack.append((rr, cc))
        components.append(np.array(pixels))
    return components


def descriptors(pixels: np.ndarray, weights: np.ndarray, side: int) -> np.ndarray:
    """Rotation-invariant shape descriptors of one component ((N, 2) pixels, (N,) alpha weights)."""
    area = weights.sum()
    ys, xs = pixels[:, 0] + 0.5, pixels[:, 1] + 0.5
    cy, cx = (weights * ys).sum() / area, (weights * xs).sum() / area
    dy, dx = ys - cy, xs - cx
    r2 = dx**2 + dy**2
    gyration = max((weights * r2).sum() / area, 1e-6)  # mean squared radius
    mu20, mu02, mu11 = (weights * dx**2).sum() / area, (weights * dy**2).sum() / area, (weights * dx * dy).sum() / area
    spread = np.sqrt(((mu20 - mu02) / 2) ** 2 + mu11**2)
    major, minor = (mu20 + mu02) / 2 + spread, (mu20 + mu02) / 2 - spread
    angle = np.arctan2(dy, dx)
    harmonics = [abs((weights * r2 * np.exp(1j * m * angle)).sum()) / (area * gyration) for m in (3, 4, 5)]
    return np.array([
        np.log(area / side**2),  # size
        area / (2 * np.pi * gyration),  # compactness: 1 for a disc
        minor / max(major, 1e-6),  # elongation
        (weights * r2**2).sum() / (area * gyration**2),  # radial kurtosis: high for stars and crosses
        np.sqrt(r2.max() / gyration),
        *harmonics,
    ])  # fmt: skip


def _components(image: Image.Image | np.ndarray, min_area: float) -> list[tuple[str, float, float, float, np.ndarray]]:
    """(colour, x, y, area, descriptors) of every colour component large enough."""
    pixels = _as_array(image)
    side = pixels.shape[0]
    labels, alpha = colour_masks(pixels)
    found = []
    for index, colour in enumerate(PALETTE_NAMES):
        for component in connected_components(labels == index):
            weights = alpha[component[:, 0], component[:, 1]]
            area = float(weights.sum())
            if area < min_area * side**2:
                continue
            y = float((weights * (component[:, 0] + 0.5)).sum() / area) / side
            x = float((weights * (component[:, 1] + 0.5)).sum() / area) / side
            found.append((colour, x, y, area, descriptors(component, weights, side)))
    return found


class ShapeClassifier:
    """k-nearest-neighbour (shape, size) from descriptors, calibrated on real renders."""

    def __init__(self, features: np.ndarray, labels: list[tuple[str, str]]):
        self.mean, self.std = features.mean(0), features.std(0) + 1e-6
        self.features, self.labels = (features - self.mean) / self.std, labels

    def predict(self, features: np.ndarray) -> tuple[str, str]:
        distance = (((features - self.mean) / self.std - self.features) ** 2).sum(-1)
        nearest = np.argsort(distance)[:NEIGHBOURS]
        return Counter(self.labels[i] for i in nearest).most_common(1)[0][0]


def _match(colour: str, x: float, y: float, scene: Scene) -> Obj | None:
    candidates = [o for o in scene.objects if o.colour == colour]
    if not candidates:
        return None
    best = min(candidates, key=lambda o: (o.x - x) ** 2 + (o.y - y) ** 2)
    return best if np.hypot(best.x - x, best.y - y) < best.radius else None


@lru_cache(maxsize=4)
def calibrated_classifier(resolution: int, n_scenes: int = 400, seed: int = 0) -> ShapeClassifier:
    """A classifier calibrated on ``n_scenes`` train-split renders at ``resolution`` (cached)."""
    features, labels = [], []
    for scene in split_scenes("train", n_scenes, seed=seed + 1000):  # scenes unseen by the evaluations
        for colour, x, y, _, feats in _components(render(scene, resolution), min_area=0.0):
            obj = _match(colour, x, y, scene)
            if obj is not None:
                features.append(feats)
                labels.append((obj.shape, obj.size))
    return ShapeClassifier(np.stack(features), labels)


def detect(image: Image.Image | np.ndarray, classifier: ShapeClassifier | None = None,
           min_area: float = 0.004) -> list[Detection]:  # fmt: skip
    """Objects in ``image`` (RGB). ``min_area``: smallest object, as a fraction of the image area
    (a small triangle covers about 0.009)."""
    side = _as_array(image).shape[0]
    classifier = classifier or calibrated_classifier(side)
    detections = []
    for colour, x, y, area, feats in _components(image, min_area):
        shape, size = classifier.predict(feats)
        detections.append(Detection(colour, shape, size, x, y, area))
    return detections


def detected_scene(detections: list[Detection]) -> Scene:
    """The detections as a :class:`Scene` (positions and relations then read as for a real scene)."""
    return Scene(objects=tuple(Obj(d.shape, d.colour, d.size, d.x, d.y) for d in detections))


def check_scene(detections: list[Detection], scene: Scene) -> dict[str, float | bool]:
    """GenEval-style checks of ``detections`` against the prompt's ``scene``.

    - ``count``: as many objects as the scene has;
    - ``colour_position``: fraction of scene objects with a detection of their colour in their cell;
    - ``object``: fraction with a detection of their colour *and shape* in their cell;
    - ``object_size``: the same, size included (the full scene graph of the object);
    - ``exact``: the detections are exactly the scene (objects, attributes, cells, nothing extra).
    """
    found = detected_scene(detections)
    by_cell = {o.cell: o for o in found.objects}
    hits = {"colour_position": [], "object": [], "object_size": []}
    for obj in scene.objects:
        other = by_cell.get(obj.cell)
        colour_ok = other is not None and other.colour == obj.colour
        hits["colour_position"].append(colour_ok)
        hits["object"].append(colour_ok and other.shape == obj.shape)
        hits["object_size"].append(colour_ok and other.shape == obj.shape and other.size == obj.size)
    facts = sorted((o.size, o.colour, o.shape, o.position) for o in found.objects)
    truth = sorted((o.size, o.colour, o.shape, o.position) for o in scene.objects)
    return {"count": len(found.objects) == len(scene.objects), **{k: float(np.mean(v)) for k, v in hits.items()},
            "exact": facts == truth}  # fmt: skip


def detector_accuracy(scenes: list[Scene], resolution: int) -> dict[str, float]:
    """Mean :func:`check_scene` scores of the detector on real renders of ``scenes`` (its upper bound)."""
    classifier = calibrated_classifier(resolution)
    rows = [check_scene(detect(render(scene, resolution), classifier), scene) for scene in scenes]
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}
