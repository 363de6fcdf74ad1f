"""What a model costs: parameters, bytes on disk, FLOPs and CPU latency per example.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass with labels
(teacher forcing), so they count the whole model once per example: ViT, Q-Former, projection
and the language model over the prompt and the answer.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

from explore.data.example import Example
from explore.models.collate import collate
from explore.models.generate import generate_answers


def parameter_counts(model: InstructBlipForConditionalGeneration) -> dict[str, int]:
    """Total, non-embedding (without the LM's token embeddings and output head) and trainable."""
    total = sum(p.numel() for p in model.parameters())
    lm = model.language_model
    embedding_params = {id(p): p for m in (lm.get_input_embeddings(), lm.get_output_embeddings()) if m is not None
                        for p in m.parameters()}  # fmt: skip  (tied weights counted once)
    return {
        "total": total,
        "non_embedding": total - sum(p.numel() for p in embedding_params.values()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def disk_bytes(folder: str | Path) -> int:
    """Bytes of the weight files (``*.safetensors``) in a saved model folder."""
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


@torch.no_grad()
def flops_per_example(model, processor: InstructBlipProcessor, examples: list[Example], max_length: int = 64) -> float:
    """Mean forward FLOPs per example (teacher-forced on ``answers[0]``)."""
    batch = collate(examples, processor, with_labels=True, max_length=max_length,
                    decoder_only=bool(model.config.use_decoder_only_language_model))  # fmt: skip
    counter = FlopCounterMode(display=False)
    with counter:
        model(**batch)
    return counter.get_total_flops() / len(examples)


@torch.inference_mode()
def latency_per_example(model, processor, examples: list[Example], *, batch_size: int, max_new_tokens: int = 10,
                        warmup: int = 1) -> float:  # fmt: skip
    """Seconds per example to generate answers for ``examples`` in batches of ``batch_size``
    (after ``warmup`` untimed batches)."""
    batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    for batch in batches[:warmup]:
        generate_answers(model, processor, batch, max_new_tokens=max_new_tokens)
    started = time.perf_counter()
    for batch in batches:
        generate_answers(model, processor, batch, max_new_tokens=max_new_tokens)
    return (time.perf_counter() - started) / len(examples)
