"""Does the Q-Former look at the asked object when it gets a held-out colour-shape pair wrong?

Issue 14's open problem: on held-out pairs (explore.world.HELD_OUT_PAIRS, never in training) the embedded model often
names a shape it saw with the colour the question names. ``qformer_instruction.py`` showed the instruction is how the
queries pick the object and the LM does not carry the prior. This benchmark asks whether the failures are failures of
*selection*: for the compositional split's shape questions ("What shape is the red object?") it takes the Q-Former's
cross-attention of every layer (averaged over heads and queries) and sums it over the 3 × 3 ViT patches around the
asked object's centre (9 of the 64 patches: 0.14 if attention were uniform), then splits the questions by whether the
asked object is a held-out pair and whether the model's answer (the first answer token's best shape) is right.

    python benchmarks/qformer_attention.py --model embedded --n 400

A diagnostic only (it runs the Q-Former with eager attention to read the weights).
"""

from __future__ import annotations

import argparse
import re

import numpy as np
import torch

from explore.models.collate import generation_inputs, to_model
from explore.models.loading import load_model
from explore.world import COLOURS, HELD_OUT_PAIRS, SHAPES
from explore.world.examples import world_examples


def patch_mass(attention: torch.Tensor, x: float, y: float, grid: int) -> float:
    """Attention (n_query, 1 + grid²: CLS first) averaged over queries, summed over the 3 × 3 patches around (x, y)."""
    patches = attention[:, 1:].mean(0).reshape(grid, grid)
    row, col = min(int(y * grid), grid - 1), min(int(x * grid), grid - 1)
    return float(patches[max(0, row - 1) : row + 2, max(0, col - 1) : col + 2].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--n", type=int, default=400, help="shape questions")
    parser.add_argument("--seed", type=int, default=31337, help="world seed")
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be at least 1")
    model, processor = load_model(args.model)
    if model.config.use_decoder_only_language_model:
        parser.error("this diagnostic is written for the T5 (encoder-decoder) models of the world")
    model.set_attn_implementation("eager")
    vision = model.config.vision_config
    grid, n_query = vision.image_size // vision.patch_size, model.config.num_query_tokens
    captured: dict[int, torch.Tensor] = {}
    for k, layer in enumerate(model.qformer.encoder.layer):
        if getattr(layer, "has_cross_attention", True) and hasattr(layer, "crossattention"):
            layer.crossattention.attention.register_forward_hook(
                lambda module, inputs, output, k=k: captured.__setitem__(k, output[1])
            )
    shape_ids = [processor.tokenizer.convert_tokens_to_ids(shape) for shape in SHAPES]
    colour_word = re.compile(r"\b(" + "|".join(COLOURS) + r")\b")
    examples = world_examples("compositional", args.n, "vqa", qtypes=("shape",), seed=args.seed)
    rows = []
    for start in range(0, len(examples), 40):
        batch = examples[start : start + 40]
        captured.clear()
        inputs = to_model(generation_inputs(batch, processor, max_length=512, decoder_only=False), model)
        start_ids = torch.full((len(batch), 1), model.config.text_config.decoder_start_token_id, device=model.device)
        with torch.inference_mode():
            logits = model(**inputs, decoder_input_ids=start_ids).logits[:, 0]
        predicted = logits[:, shape_ids].argmax(-1)
        for i, example in enumerate(batch):
            colour = colour_word.search(example.meta["question"].lower()).group(1)
            target = next(o for o in example.meta["scene"]["objects"] if o["colour"] == colour)
            masses = [patch_mass(captured[k][i, :, :n_query].mean(0), target["x"], target["y"], grid) for k in captured]
            rows.append(
                ((colour, target["shape"]) in HELD_OUT_PAIRS, SHAPES[int(predicted[i])] == example.answers[0], masses)
            )
    print(f"{args.model}: {len(rows)} shape questions, compositional split, world seed {args.seed}; attention on the "
          f"asked object's 3 x 3 patches per Q-Former layer (uniform: {9 / grid**2:.2f})")  # fmt: skip
    for held in (True, False):
        for right in (True, False):
            chosen = [masses for h, r, masses in rows if h == held and r == right]
            if chosen:
                layers = " ".join(f"layer {k} {m:.3f}" for k, m in enumerate(np.mean(chosen, axis=0)))
                pair = "held-out pair" if held else "seen pair    "
                print(f"  {pair} answered {'right' if right else 'wrong'}: {len(chosen):4d} questions, {layers}")


if __name__ == "__main__":
    main()
