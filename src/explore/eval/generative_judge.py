"""The generative VL-RewardBench judge, following the benchmark's official protocol.

For each pair, ``k`` judgments are sampled (temperature 0.2, top-p 0.2 as in the official code),
each with the official judge prompt and the two responses in a random order drawn per sample (as
the official code does); each judgment is parsed with the official rule, mapped back to the stored
order, and the majority vote decides. An example whose samples all fail to parse has ``choice = None`` (see
:func:`explore.eval.metrics.rewardbench.aggregate` for how such examples are counted).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import torch

from explore.data.example import Example
from explore.eval.metrics import rewardbench
from explore.models.collate import generation_inputs
from explore.models.generate import cache_kwargs

TEMPERATURE = 0.2
TOP_P = 0.2


def _swapped(example: Example, sample: int, seed: int) -> bool:
    # One draw per (seed, example id, sample), as the official code draws a swap for every sample;
    # stable across processes (unlike hash()), so resuming or re-batching never changes a swap.
    digest = hashlib.sha256(f"{seed}:{example.id}:{sample}".encode()).digest()
    return bool(digest[0] & 1)


@torch.no_grad()
def judge_generatively(model, processor, examples: list[Example], *, samples: int = 10, seed: int = 0,
                       max_new_tokens: int = 192) -> list[dict]:  # fmt: skip
    """Judge each example's two responses; one ``{"output", "choice", "samples", "votes"}`` per example.

    Each of the ``samples`` judgments shows the responses in its own random order; its parsed
    vote is mapped back to the stored order before the majority vote. ``choice`` is the index
    (0/1) in the stored order of the response judged better, or None (no parsed majority).
    """
    prompts, swaps = [], []
    for example in examples:
        for sample in range(samples):
            swap = _swapped(example, sample, seed)
            first, second = example.responses[::-1] if swap else example.responses
            prompts.append(replace(example, prompt=rewardbench.judge_prompt(example.prompt, first, second)))
            swaps.append(swap)
    decoder_only = bool(model.config.use_decoder_only_language_model)
    inputs = generation_inputs(prompts, processor, max_length=512, decoder_only=decoder_only)
    inputs = {name: tensor.to(model.device) for name, tensor in inputs.items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        output = model.generate(**inputs, do_sample=True, temperature=TEMPERATURE, top_p=TOP_P,
                                max_new_tokens=max_new_tokens, **cache_kwargs(model))  # fmt: skip
    if decoder_only:
        output = output[:, inputs["input_ids"].shape[1] :]
    texts = processor.tokenizer.batch_decode(output, skip_special_tokens=True)
    results = []
    for i in range(len(examples)):
        span = slice(i * samples, (i + 1) * samples)
        votes = []
        for text, swap in zip(texts[span], swaps[span]):
            vote = rewardbench.parse_judgment(text)
            votes.append(None if vote is None else (1 - vote if swap else vote))
        results.append({"output": texts[span][0], "choice": rewardbench.majority_vote(votes), "samples": texts[span],
                        "votes": votes})  # fmt: skip
    return results
