"""Does a generative judge's verdict read its own per-answer checks? A teacher-forced check.

Issue 14: trained on judge_stepwise targets ("Answer 1: <response> Accuracy: no. Answer 2: <response> Accuracy:
yes. Overall Judgment: Answer 2 is better.") the embedded model's official verdict stays at chance. Here, for
the world judge pairs of a split, the model is fed the exact target (in the stored order, the prompt as
training shows it) and read at three kinds of token, as benchmarks/relation_answer_step.py reads a relation
answer:

- the check words (``Accuracy: yes`` / ``no``; in judge_compared targets the yes / no ending each answer's step
  and the pair of check words before the verdict): is the word the target has the likelier of yes / no?
- the verdict's answer number ("1" / "2" after "Overall Judgment: Answer"): the likelier of 1 / 2?
- judge_located only, the slot ("blue : Answer 1"): the answer that holds the wrong claim, which only the
  prompt can tell (``flip_slot``: that number and the verdict flipped: does the verdict follow it?);
- judge_compared only, each answer's claim (the first word after "Answer k :"): is the answer's own claim
  likelier than the other answer's? This is the model reading which answer of the prompt says what.

Edits, one at a time, and the share of verdicts (or checks) that follow the edited target:

- ``gold``: nothing edited;
- ``flip_checks``: every check word flipped (yes <-> no) and the verdict with them: a verdict that reads the checks
  follows (100%), one that ignores them follows at 100% minus its gold figure;
- ``swap_copies`` (judge_stepwise only): the two restated responses swapped in the target, checks and verdict
  kept: a verdict that reads the restatements (not the checks) no longer follows the target;
- ``flip_pair`` (judge_compared only): only the pair of check words before the verdict line flipped (and the
  verdict with them);
- ``swap_claims`` (judge_compared only): the two answers' claims swapped inside the target ("Answer 1 : red
  compared to red . ?"): the step's check should follow its (edited) claim (read the "check" rows only).

    OMP_NUM_THREADS=1 python benchmarks/judge_verdict_step.py --model embedded --target stepwise
    OMP_NUM_THREADS=1 python benchmarks/judge_verdict_step.py --model runs/shapes-judge-2/model --target compared
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from dataclasses import replace

import torch
from safetensors.torch import load_file

from explore.data.example import Example
from explore.data.judge_prompt import verdict
from explore.models.collate import collate
from explore.models.loading import load_model
from explore.train.slots import SlotHead, answer_slots, slot_token_ids
from explore.train.stream import compared_judge_example, judge_claims, official_judge_example
from explore.world.examples import world_examples

FLIP = {"yes": "no", "no": "yes"}


def built(example: Example, target: str, variant: str) -> Example:
    """The training example of ``target`` for ``example``, its target edited as ``variant`` says."""
    if target == "stepwise":
        made = official_judge_example(example, stepwise=True)
        text = made.answers[0]
        if variant == "flip_checks":
            text = re.sub(r"Accuracy: (yes|no)\.", lambda m: f"Accuracy: {FLIP[m.group(1)]}.", text)
            text = text.replace(verdict(example.preferred), verdict(1 - example.preferred))
        elif variant == "swap_copies":  # each answer's restatement replaced by the other's, checks and verdict kept
            first, second = example.responses
            text = text.replace(f"Answer 1: {first} ", "Answer 1: @@ ", 1)
            text = text.replace(f"Answer 2: {second} ", f"Answer 2: {first} ", 1)
            text = text.replace("Answer 1: @@ ", f"Answer 1: {second} ", 1)
    elif target == "located":
        made = compared_judge_example(example, located=True)
        text = made.answers[0]
        if variant == "flip_slot":  # the wrong claim's answer and the verdict with it
            wrong = 1 - example.preferred
            text = text.replace(f" : Answer {wrong + 1} . ", f" : Answer {2 - wrong} . ")
            text = text.replace(verdict(example.preferred), verdict(1 - example.preferred))
    else:
        made = compared_judge_example(example)
        text = made.answers[0]
        checks = re.findall(r" \. (yes|no) \.", text)
        head, _, tail = text.rpartition(f" {checks[0]} {checks[1]} . ")  # tail: the verdict line
        if variant in ("flip_checks", "flip_pair"):
            pair = f" {FLIP[checks[0]]} {FLIP[checks[1]]} . "
            if variant == "flip_checks":
                head = re.sub(r" \. (yes|no) \.", lambda m: f" . {FLIP[m.group(1)]} .", head)
            text = head + pair + tail.replace(verdict(example.preferred), verdict(1 - example.preferred))
        elif variant == "swap_claims":
            claims = judge_claims(example)
            truth = claims[example.preferred]
            for k, claim in enumerate(claims[::-1]):  # answer k now claims the other answer's words
                check = "yes" if claim == truth else "no"
                head = re.sub(rf"Answer {k + 1} : .*? compared to {re.escape(truth)} \. (yes|no) \.",
                              f"Answer {k + 1} : {claim} compared to {truth} . {check} .", head, count=1)  # fmt: skip
            text = head + f" {checks[0]} {checks[1]} . " + tail
    return replace(made, answers=[text])


def positions(tokens: list[str], target: str) -> dict[str, list[int]]:
    """Token indices of the check words ("check"), of the pair before the verdict ("pair") and of the
    verdict's answer number ("verdict") in a tokenised target."""
    found: dict[str, list[int]] = {"check": [], "pair": [], "verdict": [], "claim": [], "slot": []}
    for i, token in enumerate(tokens):
        if target == "located" and token in ("1", "2") and tokens[i - 2 : i] == [":", "answer"] \
                and tokens[i - 3] != "judgment":
            found["slot"].append(i)
        if target == "compared" and i >= 3 and tokens[i - 3] == "answer" and tokens[i - 2] in ("1", "2") \
                and tokens[i - 1] == ":":
            found["claim"].append(i)
        if token in ("1", "2") and i >= 3 and tokens[i - 3 : i] == ["judgment", ":", "answer"]:
            found["verdict"].append(i)
        if token not in ("yes", "no"):
            continue
        if target == "stepwise" and tokens[i - 2 : i] == ["accuracy", ":"]:
            found["check"].append(i)
        if target == "compared" and tokens[i - 1] == "." and tokens[i + 1] == ".":
            found["check"].append(i)
        if target == "compared" and tokens[i + 1] in ("yes", "no"):
            found["pair"] += [i, i + 1]
    return found


@torch.no_grad()
def slot_head_accuracy(model, processor, examples: list[Example], path: str, batch_size: int) -> None:
    """How well a checkpoint's slot head (explore.train.slots) tells Answer 1's tokens from Answer 2's in the LM
    encoder's last states, on the official prompts of ``examples`` (their stored order)."""
    head = SlotHead(model.config.text_config.d_model)
    head.load_state_dict(load_file(path))
    ids = slot_token_ids(processor.tokenizer)
    right = total = 0
    for start in range(0, len(examples), batch_size):
        chunk = [official_judge_example(e) for e in examples[start : start + batch_size]]
        batch = collate(chunk, processor, with_labels=True, max_length=512, decoder_only=False)
        states = model(**batch).language_model_outputs.encoder_last_hidden_state
        hit, n = head.accuracy(states, answer_slots(batch["input_ids"], ids))
        right, total = right + hit, total + n
    print(f"  slot head: {100 * right / total:.1f}% of {total} answer tokens assigned to their answer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="'embedded' or a model folder")
    parser.add_argument("--target", default="stepwise", choices=("stepwise", "compared", "located"),
                        help="judge_stepwise, judge_compared or judge_located targets")  # fmt: skip
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=31337, help="world seed of --split (31337: seed-unseen)")
    parser.add_argument("--pairs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--slot-head", help="a training checkpoint's slot_head.safetensors (stages with slot_loss): "
                        "also print the head's accuracy on the answers' tokens of the official prompts")  # fmt: skip
    args = parser.parse_args()
    model, processor = load_model(args.model)
    model.eval()
    tokenizer = processor.tokenizer
    resolution = processor.image_processor.size["height"]
    examples = world_examples(args.split, args.pairs, "judge", seed=args.seed, resolution=resolution)
    ids = {word: tokenizer.convert_tokens_to_ids(word) for word in ("yes", "no", "1", "2")}
    variants = {"stepwise": ["gold", "flip_checks", "swap_copies"], "located": ["gold", "flip_slot"],
                "compared": ["gold", "flip_checks", "flip_pair", "swap_claims"]}[args.target]
    print(f"{args.model}: {len(examples)} judge pairs of {args.split} (world seed {args.seed}), teacher-forced "
          f"judge_{args.target} targets; share of tokens where the model's likelier word is the target's")  # fmt: skip
    if args.slot_head:
        slot_head_accuracy(model, processor, examples, args.slot_head, args.batch_size)
    for variant in variants:
        hits: dict[str, list[bool]] = defaultdict(list)
        for start in range(0, len(examples), args.batch_size):
            chunk = [built(e, args.target, variant) for e in examples[start : start + args.batch_size]]
            batch = collate(chunk, processor, with_labels=True, max_length=512, decoder_only=False)
            with torch.no_grad():
                logits = model(**batch).logits  # (B, La, V)
            for row, example in enumerate(chunk):
                target_ids = tokenizer(example.answers[0], add_special_tokens=False).input_ids
                tokens = tokenizer.convert_ids_to_tokens(target_ids)
                claims = [tokenizer.tokenize(claim)[0] for claim in judge_claims(example)] \
                    if args.target == "compared" else []
                for kind, where in positions(tokens, args.target).items():
                    for at in where:
                        want = tokens[at]
                        if kind == "claim":  # the answer's own claim against the other answer's
                            own, other = want, claims[1 - claims.index(want)] if len(set(claims)) == 2 else None
                            if other is None:
                                continue
                            said = logits[row, at, tokenizer.convert_tokens_to_ids(own)] > \
                                logits[row, at, tokenizer.convert_tokens_to_ids(other)]
                            hits[kind].append(bool(said))
                            hits[f"{kind} {example.category}"].append(bool(said))
                            hits[f"{kind} of answer {tokens[at - 2]}"].append(bool(said))
                            continue
                        if batch["labels"][row, at].item() != ids[want]:
                            raise ValueError(f"token {at} of {example.id}'s target is not label {at}; truncated?")
                        other = {"yes": "no", "no": "yes", "1": "2", "2": "1"}[want]
                        said = logits[row, at, ids[want]] > logits[row, at, ids[other]]
                        hits[kind].append(bool(said))
                        hits[f"{kind} {example.category}"].append(bool(said))
        for kind in sorted(hits):
            share = 100 * sum(hits[kind]) / len(hits[kind])
            print(f"  {variant:12s} {kind:24s} follows the (edited) target {share:5.1f}%  (n={len(hits[kind])})")


if __name__ == "__main__":
    main()
