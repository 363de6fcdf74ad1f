"""Greedy answers from an InstructBLIP for a batch of examples: collate → ``generate`` → decode."""

from __future__ import annotations

import torch
from transformers import DynamicCache, EncoderDecoderCache, InstructBlipForConditionalGeneration, InstructBlipProcessor

from explore.data.example import Example
from explore.models.collate import generation_inputs, to_model


def cache_kwargs(model: InstructBlipForConditionalGeneration) -> dict:
    """Extra ``generate`` arguments: for a T5 LM, a KV cache that grows with the layers it meets.

    transformers sizes T5's default cache from ``num_layers``, the *encoder* depth; once encoder
    and decoder depths differ (e.g. after dropping encoder layers) generation fails with an index
    error, so an unsized (lazily grown) cache is passed instead.
    """
    if model.config.use_decoder_only_language_model:
        return {}
    return {"cache": EncoderDecoderCache(DynamicCache(), DynamicCache())}


@torch.no_grad()
def generate_answers(
    model: InstructBlipForConditionalGeneration,
    processor: InstructBlipProcessor,
    examples: list[Example],
    *,
    max_length: int = 512,
    max_new_tokens: int = 8,
) -> list[str]:
    """Answer each example's prompt about its image by greedy decoding; one string per example.

    ``max_length`` caps the prompt tokens (see :func:`explore.models.collate.collate`; the Q-Former's text
    positions cap them too); the default leaves world and benchmark prompts whole, as a plain
    ``InstructBlipProcessor`` call does;
    ``max_new_tokens`` caps the answer. Special tokens are dropped and spaces stripped.
    """
    decoder_only = bool(model.config.use_decoder_only_language_model)
    inputs = generation_inputs(examples, processor, max_length=max_length, decoder_only=decoder_only)
    inputs = to_model(inputs, model)
    output = model.generate(
        **inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, **cache_kwargs(model)
    )
    if decoder_only:
        # A decoder-only LM returns the prompt (placeholders included) followed by the new tokens.
        output = output[:, inputs["input_ids"].shape[1] :]
    texts = processor.tokenizer.batch_decode(output, skip_special_tokens=True)
    return [text.strip() for text in texts]
