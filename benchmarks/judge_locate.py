"""Does a judge find the object in which two descriptions differ? A teacher-forced probe (issue 14).

The generative judge's misses are description pairs (the hallucination category): two descriptions of a scene that
differ in one object's colour, shape or size. Its target's reason names that object first ("the image shows a small
yellow triangle at the center, not a small purple triangle at the center"; with ``--format absent``, the
``judge_absent`` target: "the image shows no small purple triangle at the center, ..."; with ``--format diff``, the
``judge_diff`` target, whose first step is Answer 1's version of it: "Answer 1 : a small purple triangle at the
center . Answer 2 : ..."). This probe gives a model the official prompt and its own target format, teacher-forced,
and counts the pairs where every token of that first object is the model's top choice: the object located. Pairs from
the training stream (world seed 0, held-out pairs avoided) and from the test split of an unseen world seed, by the
scene's number of objects (chance: one in that many).

    OMP_NUM_THREADS=2 python benchmarks/judge_locate.py src/explore/embedded/shapes-small
    OMP_NUM_THREADS=2 python benchmarks/judge_locate.py runs/shapes-judge-38/model --format absent
    OMP_NUM_THREADS=2 python benchmarks/judge_locate.py runs/shapes-judge-40/model --format diff

Measured in session 26 (one thread, a training beside; 192 training pairs, 120 test pairs of world seed 2027;
located for 2 / 3 / 4 objects, where chance is 50 / 33 / 25%; one object: 100%, except -40: 76 / 78%):
  shipped (shapes-judge-25), compared:    train 47 / 40 / 36%, all 54%    test 60 / 37 / 33%, all 56%
  shapes-judge-38 (judge_absent), absent: train 35 / 33 / 14%, all 44%    test 27 / 20 / 9%, all 37%
  shapes-judge-39 (difference loss), compared: train 55 / 40 / 39%, all 57%    test 57 / 30 / 24%, all 51%
  shapes-judge-40 (-39, then judge_diff), diff: train 22 / 27 / 9%, all 32%     test 30 / 20 / 15%, all 34%
The object is located at about chance on the pairs the model trained on as on unseen ones, so no target format can
reach it; shapes-judge-39's auxiliary loss puts the difference into the encoder's states (its head: 92-99% right) and
the decoder still does not find the object (configs/pretrain/shapes-judge-39.yaml, -40.yaml).
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch

from explore.models.collate import collate, to_model
from explore.models.loading import load_model
from explore.train.stream import compared_judge_example, description_judge_example
from explore.world import HELD_OUT_PAIRS
from explore.world.examples import world_examples
from explore.world.text import caption_objects


def pairs(split: str, seed: int, n: int) -> list:
    """The first ``n`` description pairs whose one object's attribute changes (wrong_attribute_description)."""
    found, start = [], 0
    avoid = frozenset(HELD_OUT_PAIRS) if split == "train" else frozenset()
    while len(found) < n:
        found += world_examples(split, 200, "judge", seed=seed, start=start, avoid_pairs=avoid,
                                kinds=("wrong_attribute_description",))  # fmt: skip
        start += 200
    return found[:n]


def located(model, processor, examples: list, target_format: str, batch_size: int = 16) -> dict[str, list[float]]:
    tokenizer = processor.tokenizer
    stats = defaultdict(list)
    for b in range(0, len(examples), batch_size):
        chunk = examples[b : b + batch_size]
        batch = [compared_judge_example(e) if target_format == "compared"
                 else description_judge_example(e, target_format) for e in chunk]  # fmt: skip
        inputs = collate(batch, processor, with_labels=True, max_length=512, decoder_only=False)
        with torch.no_grad():
            best = model(**to_model(inputs, model)).logits.argmax(-1)
        for row, (example, probe) in enumerate(zip(chunk, batch, strict=True)):
            stated = [caption_objects(response) for response in example.responses]
            faithful, unfaithful = stated[example.preferred], stated[1 - example.preferred]
            first, other = {"compared": (faithful, unfaithful), "absent": (unfaithful, faithful),
                            "diff": (stated[0], stated[1])}[target_format]  # fmt: skip
            changed = [obj for obj in first if obj not in other]
            phrase = "{} {} {} at the {}".format(*changed[0])
            keep = inputs["labels"][row] != -100
            ids, guess = inputs["labels"][row][keep].tolist(), best[row][keep].tolist()
            lead = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(probe.answers[0].split(phrase)[0]))
            span = range(len(lead), len(lead) + len(tokenizer.tokenize(phrase)))
            written = tokenizer.decode([ids[k] for k in span])
            assert written == phrase, (written, phrase)  # the span is the object's tokens
            hit = float(all(guess[k] == ids[k] for k in span))
            stats["all"].append(hit)
            stats[f"{len(example.meta['scene']['objects'])} objects"].append(hit)
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="model folders (or 'embedded')")
    parser.add_argument("--format", choices=("compared", "absent", "diff"), default="compared",
                        help="the target format the model was trained with")  # fmt: skip
    parser.add_argument("--train", type=int, default=192, help="training pairs (world seed 0)")
    parser.add_argument("--test", type=int, default=120, help="test pairs")
    parser.add_argument("--seed", type=int, default=2027, help="world seed of the test split")
    args = parser.parse_args()
    data = {"train": pairs("train", 0, args.train), f"test (seed {args.seed})": pairs("test", args.seed, args.test)}
    for folder in args.models:
        model, processor = load_model(folder)
        for name, examples in data.items():
            stats = located(model, processor, examples, args.format)
            parts = ", ".join(f"{k} {100 * sum(v) / len(v):.0f}% of {len(v)}" for k, v in sorted(stats.items()))
            print(f"{folder} [{args.format}] {name}: located {parts}", flush=True)


if __name__ == "__main__":
    main()
