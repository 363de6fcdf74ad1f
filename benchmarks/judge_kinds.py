"""The generative judge by kind of pair: right / wrong / tie per judge kind (issue 14, session 27).

``predictions``: reads an ``explore eval --task world-judge --judge generative`` run's predictions.jsonl and counts, per
kind of pair (explore.world.judge.JUDGE_KINDS, read from each record's ``query_source``), the pairs judged right, wrong
and without a majority. ``pairs``: runs the official protocol with 3 samples on the first N test-split pairs of the weakest kind (a wrong attribute inside a description, world seed 0),
as tests/models/test_embedded.py does, and prints how many each model gets right.

    python benchmarks/judge_kinds.py predictions out/gen-31337/predictions.jsonl
    OMP_NUM_THREADS=1 python benchmarks/judge_kinds.py pairs embedded runs/shapes-judge-44/model

Measured in session 27: shapes-judge-43 on seed 31337 (300 pairs): invented object 60 / 0 / 0, wrong attribute
82 / 3 / 1, description 48 / 8 / 4, wrong count 59 / 1 / 0, wrong relation 34 / 0 / 0 (shapes-judge-25: 60 / 0 / 0,
83 / 2 / 1, 43 / 11 / 6, 60 / 0 / 0, 34 / 0 / 0); description pairs right of 100: shapes-judge-43 83, -25 64, -42 82,
-44 86.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from explore.eval.generative_judge import judge_generatively
from explore.eval.runner import read_predictions
from explore.models.loading import load_model
from explore.world.examples import world_examples

OUTCOMES = ("right", "wrong", "tie")


def by_kind(path: str) -> dict[str, Counter]:
    """Right / wrong / tie per kind of pair of a world-judge run's predictions: the kind is each record's
    VL-RewardBench ``query_source`` ("shapes-world/<kind>"), the outcome its score (None: no majority)."""
    counts: dict[str, Counter] = {}
    for record in read_predictions(Path(path)):
        if "query_source" not in record:
            raise SystemExit(f"{path}: record {record['id']} has no query_source (written before session 28); "
                             "re-run the evaluation")  # fmt: skip
        score = record["score"]
        outcome = "tie" if score is None else "right" if score else "wrong"
        counts.setdefault(record["query_source"].removeprefix("shapes-world/"), Counter())[outcome] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    read = commands.add_parser("predictions", help="right / wrong / tie per kind of a generative judge run")
    read.add_argument("path", help="predictions.jsonl")
    run = commands.add_parser("pairs", help="description pairs right, 3 samples each")
    run.add_argument("models", nargs="+", help="'embedded', folders or hub ids")
    run.add_argument("--n", type=int, default=100, help="pairs")
    args = parser.parse_args()
    if args.command == "predictions":
        for kind, counts in by_kind(args.path).items():
            print(f"{kind}: " + " / ".join(f"{counts[o]} {o}" for o in OUTCOMES))
        return
    examples = world_examples("test", args.n, "judge", kinds=("wrong_attribute_description",))
    for name in args.models:
        model, processor = load_model(name)
        results = judge_generatively(model, processor, examples, samples=3, seed=0)
        right = sum(r["choice"] == e.preferred for r, e in zip(results, examples, strict=True))
        print(f"{name}: {right} of {len(examples)} description pairs right")


if __name__ == "__main__":
    main()
