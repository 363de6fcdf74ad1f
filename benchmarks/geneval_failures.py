"""What a grounded generator's world-geneval failures are: the images it failed, re-read by the detector.

For every failed image of a world-geneval output folder (``predictions.jsonl`` and ``images/``, as
``explore eval --task world-geneval --out`` and ``benchmarks/diffusion.py --compare-out`` write them) the
objects :func:`explore.world.detect.detect` finds are matched, as (colour, shape) pairs, against the layout the
grounded path drew from (its ``layout`` field): an asked pair the image lacks is *missing* (by shape), a found pair
the layout lacks is *extra* (by shape). A shape that is drawn but read as another counts once in each column,
which is what a malformed shape looks like to the detector; binding errors (right shapes, colours swapped)
show the same way, so the table tells "which shapes" and leaves "why" to the images.

    python benchmarks/geneval_failures.py runs/diffusion/compare-X/0-ddim-1-12 runs/diffusion/compare-X/1-ddim-1-12
"""

from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

from PIL import Image

from explore.world.detect import calibrated_classifier, detect
from explore.world.scene import SHAPES


def failures(folder: Path, classifier) -> dict[tuple[str, str], collections.Counter]:
    """(set, category) -> counts: ``failed`` images, ``missing <shape>``, ``extra <shape>``."""
    table: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
    predictions = folder / "predictions.jsonl"
    if not predictions.is_file():
        raise SystemExit(f"{folder}: no predictions.jsonl (a world-geneval output folder has one)")
    for line in predictions.read_text().splitlines():
        row = json.loads(line)
        counts = table[(row["set"], row["category"])]
        counts["images"] += 1
        if row["passed"]:
            continue
        counts["failed"] += 1
        found = collections.Counter((d.colour, d.shape) for d in detect(Image.open(folder / "images" /
                                                                                   f"{row['id']}.png"), classifier))  # fmt: skip
        asked = collections.Counter((o["colour"], o["shape"]) for o in row["layout"]["objects"])
        for (_, shape), n in (asked - found).items():
            counts[f"missing {shape}"] += n
        for (_, shape), n in (found - asked).items():
            counts[f"extra {shape}"] += n
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="world-geneval output folders")
    args = parser.parse_args()
    classifier = None
    shapes = list(SHAPES)
    header = "| folder | pairs | category | images | failed | " + " | ".join(f"missing {s}" for s in shapes)
    header += " | " + " | ".join(f"extra {s}" for s in shapes) + " |"
    print(header)
    print("|---|---|---|" + "---:|" * (2 + 2 * len(shapes)))
    for folder in args.folders:
        if classifier is None:
            first = next((folder / "images").glob("*.png"), None)
            if first is None:
                raise SystemExit(f"{folder}: no images/*.png (a world-geneval output folder keeps its images there)")
            classifier = calibrated_classifier(Image.open(first).size[0])
        for (pairs, category), counts in sorted(failures(folder, classifier).items()):
            cells = [counts[f"missing {s}"] for s in shapes] + [counts[f"extra {s}"] for s in shapes]
            print(f"| {folder} | {pairs} | {category} | {counts['images']} | {counts['failed']} | "
                  + " | ".join(str(c) for c in cells) + " |")  # fmt: skip


if __name__ == "__main__":
    main()
