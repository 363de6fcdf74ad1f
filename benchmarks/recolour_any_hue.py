"""Issue 14 lead (session 29): are red squares misread because no reddish square was ever trained?

`benchmarks/qformer_instruction.py --by-pair` puts the largest share of the compositional split's shape errors on
red squares. The shape-recoloured task draws unnamed colours that keep away from the hue of every colour a shape is
held out with (``explore.world.examples.unnamed_colour``), so a square was never drawn in any red hue. This runs
``explore pretrain --config CONFIG --output-dir OUT`` with that hue margin lifted (every unnamed colour stays as far
from every named colour, red included, as before); compare the result with the same config's own run per pair.

    OMP_NUM_THREADS=2 python benchmarks/recolour_any_hue.py configs/pretrain/shapes-judge-45.yaml runs/s29-anyhue-45

A diagnostic, not a recipe: whether such colours leak the held-out pair was the question to answer before any model
trained this way could ship. Session 30 answered it with a stage option instead (``recolour_margin: detector``:
every hue, but no colour explore.world.detect reads as a held-out partner; configs/pretrain/shapes-judge-49.yaml).
"""

from __future__ import annotations

import sys

from explore.cli import main
from explore.world import examples

if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python benchmarks/recolour_any_hue.py CONFIG OUTPUT_DIR")
    config, output_dir = sys.argv[1:]
    original = examples.unnamed_colour
    examples.unnamed_colour = lambda rng, shape=None: original(rng, None)  # no hue kept away for any shape
    sys.argv = ["explore", "pretrain", "--config", config, "--output-dir", output_dir]
    main()
