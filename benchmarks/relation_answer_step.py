"""Which part of a stepwise relation answer does a yes/no relation answer read? A teacher-forced check.

Issue 14: a model trained on relation_stepwise targets states the relation right but its yes/no on the
left/right axis stays at chance. Here, for the yes/no relation questions of a split, the model is fed the
exact stepwise target (explore.world.text.relation_steps) up to the answer step and its "yes" / "no" logits
there are compared; then one thing at a time is flipped and the answer it should give recomputed:

- ``gold``: nothing flipped;
- ``flip_asked``: the asked relation in the prompt ("left of" <-> "right of", "above" <-> "below") and in a
  comparison step ("right compared to left", relation_last_compared);
- ``flip_stated``: the relation stated in the target's relation step and in a comparison step;
- ``flip_positions``: the left / right words of the target's positions step (the answer should not move).

A model whose yes/no compares the stated relation with the asked one follows every edit (100% each); one
that ignores what was flipped follows the edit at 100% minus its "gold" figure; one at chance stays near 50%.

    OMP_NUM_THREADS=1 python benchmarks/relation_answer_step.py --model runs/NAME/model \
        [--relation-sentence relation_last_compared]      # ~10 s on one thread
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from dataclasses import replace

import torch

from explore.data.example import Example
from explore.models.collate import collate
from explore.models.loading import load_model
from explore.world.examples import world_examples
from explore.world.scene import Scene
from explore.world.text import RELATION_PHRASE, RELATION_SENTENCES, holds, relation_steps

FLIP = {"left": "right", "right": "left", "above": "below", "below": "above"}
VARIANTS = ("gold", "flip_asked", "flip_stated", "flip_positions")


def edited(example: Example, variant: str, sentence: str) -> tuple[Example, str]:
    """``example`` with its stepwise target, one part flipped as ``variant`` says, and the answer the edited
    prompt and target imply (yes when the stated relation is the asked one)."""
    by_name = {obj.name: obj for obj in Scene.from_dict(example.meta["scene"]).objects}
    a, b, asked = by_name[example.meta["a"]], by_name[example.meta["b"]], example.meta["relation"]
    positions, relation, *compared, _ = relation_steps(a, b, asked, example.answers[0], sentence).split(" . ")
    stated = asked if holds(a, asked, b) else FLIP[asked]
    prompt = example.prompt
    if variant == "flip_asked":  # in the prompt and in a comparison step ("left compared to right")
        prompt = prompt.replace(f" {RELATION_PHRASE[asked]} the ", f" {RELATION_PHRASE[FLIP[asked]]} the ")
        asked = FLIP[asked]
    elif variant == "flip_stated":  # in the relation step and in a comparison step
        if sentence == "subject_first":  # "the A is left of the B"
            phrase, flipped = RELATION_PHRASE[stated], RELATION_PHRASE[FLIP[stated]]
            relation = relation.replace(f" is {phrase} the ", f" is {flipped} the ")
        else:  # "relative to the B the A is left"
            relation = relation.removesuffix(stated) + FLIP[stated]
        stated = FLIP[stated]
    elif variant == "flip_positions":
        positions = re.sub(r"\b(left|right)\b", lambda m: FLIP[m.group(1)], positions)
    steps = [positions, relation] + [f"{stated} compared to {asked}" for _ in compared]
    want = "yes" if stated == asked else "no"
    return replace(example, prompt=prompt, answers=[" . ".join([*steps, want])]), want


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="'embedded' or a model folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=31337, help="world seed of --split (31337: seed-unseen)")
    parser.add_argument("--scenes", type=int, default=1200, help="scenes of --split (about 0.37 yes/no each)")
    parser.add_argument("--relation-sentence", default="subject_first", choices=RELATION_SENTENCES,
                        help="the relation step the model was trained with")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    model, processor = load_model(args.model)
    model.eval()
    tokenizer = processor.tokenizer
    resolution = processor.image_processor.size["height"]
    examples = [e for e in world_examples(args.split, args.scenes, "vqa", seed=args.seed, qtypes=("relation",),
                                          resolution=resolution) if e.meta["form"] == "yesno"]  # fmt: skip
    answer_ids = {word: tokenizer.convert_tokens_to_ids(word) for word in ("yes", "no")}
    print(f"{args.model}: {len(examples)} yes/no relation questions of {args.split} (world seed {args.seed}), "
          f"teacher-forced {args.relation_sentence} targets; the answer is read at the answer step")  # fmt: skip
    for variant in VARIANTS:
        follows: dict[str, list[bool]] = defaultdict(list)
        for start in range(0, len(examples), args.batch_size):
            chunk = examples[start : start + args.batch_size]
            built = [edited(e, variant, args.relation_sentence) for e in chunk]
            batch = collate([e for e, _ in built], processor, with_labels=True, max_length=48, decoder_only=False)
            with torch.no_grad():
                logits = model(**batch).logits  # (B, La, V): La the target tokens, the answer the last before </s>
            for row, (example, want) in enumerate(built):
                at = len(tokenizer(example.answers[0], add_special_tokens=False).input_ids) - 1
                if batch["labels"][row, at].item() != answer_ids[want]:
                    raise ValueError(f"the answer of {example.id} is not target token {at}; was it truncated?")
                said = "yes" if logits[row, at, answer_ids["yes"]] > logits[row, at, answer_ids["no"]] else "no"
                axis = "left/right" if chunk[row].meta["relation"] in ("left", "right") else "above/below"
                follows[axis].append(said == want)
        for axis in sorted(follows):
            hits = follows[axis]
            print(f"  {variant:15s} {axis:12s} follows the (edited) target {100 * sum(hits) / len(hits):5.1f}%  "
                  f"(n={len(hits)})")  # fmt: skip


if __name__ == "__main__":
    main()
