"""How well does a difference_loss checkpoint's head find where two answers differ? (issue 14, session 26)

Loads a training checkpoint (its model/ folder and difference_head.safetensors), shows it 96 description pairs of the
training stream (world seed 0) and 96 of the test split (world seed 2027) in the official prompt, and counts the pairs
where the answer token the head scores highest is one of the differing ones (explore.train.slots.answer_differences).

    OMP_NUM_THREADS=1 python benchmarks/difference_head.py runs/shapes-judge-39/checkpoints/step-0002000

Measured in session 26: shapes-judge-39 at steps 300 / 600 / 1,200 / 2,000: 39 / 57 / 88 / 88 of 96 training pairs,
90 of 96 test pairs at 2,000; shapes-judge-40 at 2,000: 94 / 95; shapes-judge-41 at 600: 88 / 89, at 2,000: 94 / 96.
"""

from __future__ import annotations

import sys

import torch
from safetensors.torch import load_file

from explore.models.collate import collate, to_model
from explore.models.loading import load_model
from explore.train.slots import DifferenceHead, answer_differences, answer_slots, slot_token_ids
from explore.train.stream import compared_judge_example
from explore.world.examples import world_examples


def main() -> None:
    checkpoint = sys.argv[1]
    model, processor = load_model(f"{checkpoint}/model")
    head = DifferenceHead(model.config.text_config.d_model)
    head.load_state_dict(load_file(f"{checkpoint}/difference_head.safetensors"))
    ids = slot_token_ids(processor.tokenizer)
    for split, seed in (("train", 0), ("test", 2027)):
        examples = [compared_judge_example(e)
                    for e in world_examples(split, 96, "judge", seed=seed, kinds=("wrong_attribute_description",))]  # fmt: skip
        hits = rows = 0
        for start in range(0, len(examples), 16):
            inputs = collate(examples[start : start + 16], processor, with_labels=True, max_length=512,
                             decoder_only=False)  # fmt: skip
            with torch.no_grad():
                states = model(**to_model(inputs, model)).language_model_outputs.encoder_last_hidden_state
                labels = answer_differences(inputs["input_ids"], answer_slots(inputs["input_ids"], ids))
                right, total = head.accuracy(states, labels)
            hits, rows = hits + right, rows + total
        print(f"{checkpoint} {split} (world seed {seed}): the head ranks a differing token first in {hits} of {rows}")


if __name__ == "__main__":
    main()
