"""Length-normalised log-likelihood of answers given image and prompt.

Used by the likelihood judge (pick the response the model finds more likely) and by
vocabulary ranking for closed-form questions, as InstructBLIP scores them (arXiv 2305.06500).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

from explore.data.example import Example
from explore.models.collate import IGNORE_INDEX, collate


@torch.no_grad()
def answer_logprobs(
    model: InstructBlipForConditionalGeneration,
    processor: InstructBlipProcessor,
    examples: list[Example],
    answers: list[str],
    *,
    max_length: int = 64,
) -> torch.Tensor:
    """Mean per-token log-probability of ``answers[i]`` (plus eos) given ``examples[i]``.

    Returns a float tensor of shape (B,). Answers are scored as the model would generate them:
    for T5 as decoder targets, for a decoder-only LM as the continuation of the prompt.
    """
    decoder_only = bool(model.config.use_decoder_only_language_model)
    targets = [replace(example, answers=[answer]) for example, answer in zip(examples, answers)]
    batch = collate(targets, processor, with_labels=True, max_length=max_length, decoder_only=decoder_only)
    batch = {name: tensor.to(model.device) for name, tensor in batch.items()}
    batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
    labels = batch["labels"]  # T5 builds its decoder inputs from them
    logits = model(**batch).logits.float()  # T5: (B, La, V); decoder-only: (B, L, V)
    if decoder_only:
        logits, labels = logits[:, :-1], labels[:, 1:]  # position t predicts token t + 1
    mask = labels != IGNORE_INDEX
    token_logp = torch.log_softmax(logits, dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (token_logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (B,)


def judge_by_likelihood(
    model: InstructBlipForConditionalGeneration,
    processor: InstructBlipProcessor,
    examples: list[Example],
    *,
    max_length: int = 64,
) -> list[int]:
    """For judge examples, the index (0/1) of the response with the higher normalised likelihood."""
    firsts = answer_logprobs(model, processor, examples, [e.responses[0] for e in examples], max_length=max_length)
    seconds = answer_logprobs(model, processor, examples, [e.responses[1] for e in examples], max_length=max_length)
    return [int(s > f) for f, s in zip(firsts.tolist(), seconds.tolist())]
