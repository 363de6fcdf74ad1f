"""Turn :class:`~explore.data.example.Example` s into InstructBLIP inputs, for training and generation.

The layout follows HF's ``InstructBlipProcessor``: ``num_query_tokens`` ``<image>`` placeholders
come first in the language-model input, and the model scatters the projected Q-Former queries into
them (``config.image_token_index``). The prompt also goes, on its own, to the Q-Former. With
N = num_query_tokens, P = prompt tokens, A = answer tokens:

- T5 (encoder–decoder): encoder ``[<image>]*N + P + </s>``; labels ``A + </s>`` (pad → -100).
- LLaMA (decoder-only), training: ``[<image>]*N + <s> + P + A + </s>``, padded on the right;
  labels are -100 on the placeholders, ``<s>``, the prompt and the padding.
- LLaMA, generation: ``[<image>]*N + <s> + P``, padded on the LEFT so every row's last token is
  the one the next token follows. ``generate`` derives position ids from the attention mask
  (cumsum − 1), which gives the same positions as right-padded training rows.

The sequences are built here rather than by calling the processor because the processor cannot
add the answer, its labels, or bos / eos at the right places for both families.
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers import InstructBlipProcessor

from explore.data.example import Example
from explore.errors import ExploreError

IGNORE_INDEX = -100  # label value that the cross-entropy loss skips


def collate(
    examples: list[Example],
    processor: InstructBlipProcessor,
    *,
    with_labels: bool,
    max_length: int,
    decoder_only: bool,
) -> dict[str, Tensor]:
    """Batch ``examples`` into model inputs.

    Args:
        examples: B examples with an image and a prompt; with labels, ``answers[0]`` is the target.
        processor: the model's processor (image processor, LM tokenizer, Q-Former tokenizer).
        with_labels: add ``labels`` for a training / scoring forward pass; False gives generation
            inputs (left padding for decoder-only LMs).
        max_length: the most tokens kept of each prompt and each answer (placeholders and bos /
            eos not counted); longer texts are truncated at the end. At most the preset's
            ``max_text_positions`` (the Q-Former's position embeddings).
        decoder_only: True for a LLaMA-style LM (``model.config.use_decoder_only_language_model``).

    Returns:
        ``pixel_values`` (B, 3, H, W) float; ``input_ids``, ``attention_mask`` (B, L) long;
        ``qformer_input_ids``, ``qformer_attention_mask`` (B, Lq) long; with labels also ``labels``:
        (B, La) for T5, (B, L) aligned with ``input_ids`` for decoder-only (the model shifts them).

    Raises:
        ExploreError: no examples, or an example without an answer when labels are asked for.
    """
    if not examples:
        raise ExploreError("collate: got an empty list of examples; pass at least one Example")
    tokenizer = processor.tokenizer
    image_id = tokenizer.convert_tokens_to_ids(str(processor.image_token))
    placeholders = [image_id] * processor.num_query_tokens
    prompts = [example.prompt for example in examples]

    def encode(texts: list[str]) -> list[list[int]]:  # (B, ≤ max_length) LM ids; bos / eos are added below
        return tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length)["input_ids"]

    prompt_ids = encode(prompts)
    answer_ids: list[list[int]] = []
    if with_labels:
        missing = [example.id for example in examples if not example.answers]
        if missing:
            raise ExploreError(f"collate: examples {missing[:5]} have no answer; training needs answers[0]")
        answer_ids = encode([example.answers[0] for example in examples])

    batch: dict[str, Tensor] = {}
    pixels = processor.image_processor([example.load_image() for example in examples], return_tensors="pt")
    batch["pixel_values"] = pixels["pixel_values"]  # (B, 3, image_size, image_size)

    # The Q-Former sees the instruction in its tokenizer's own convention, as HF's processor gives it
    # (BERT: [CLS] … [SEP]; the word tokenizer: the bare words), padded on the right (absolute
    # position embeddings) and at least one position wide (an all-empty batch).
    # Truncated to the Q-Former's text positions too (its tokenizer's model_max_length: 512 for
    # BERT, the preset's max_text_positions for ours): longer rows would overflow its embeddings.
    qformer_limit = min(max_length, processor.qformer_tokenizer.model_max_length)
    qformer_ids = processor.qformer_tokenizer(prompts, truncation=True, max_length=qformer_limit)["input_ids"]
    qformer_pad = processor.qformer_tokenizer.pad_token_id
    batch["qformer_input_ids"], batch["qformer_attention_mask"] = _pad(qformer_ids, qformer_pad, left=False)

    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    if not decoder_only:
        sequences = [placeholders + ids + [eos_id] for ids in prompt_ids]
        batch["input_ids"], batch["attention_mask"] = _pad(sequences, pad_id, left=False)
        if with_labels:
            labels, _ = _pad([ids + [eos_id] for ids in answer_ids], IGNORE_INDEX, left=False)
            batch["labels"] = labels  # (B, La); T5 builds decoder inputs by shifting them right
        return batch

    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    prefixes = [placeholders + bos + ids for ids in prompt_ids]
    if not with_labels:
        batch["input_ids"], batch["attention_mask"] = _pad(prefixes, pad_id, left=True)
        return batch
    sequences = [prefix + ids + [eos_id] for prefix, ids in zip(prefixes, answer_ids, strict=True)]
    batch["input_ids"], batch["attention_mask"] = _pad(sequences, pad_id, left=False)
    targets = [[IGNORE_INDEX] * len(prefix) + ids + [eos_id] for prefix, ids in zip(prefixes, answer_ids, strict=True)]
    batch["labels"], _ = _pad(targets, IGNORE_INDEX, left=False)  # (B, L), aligned with input_ids
    return batch


def generation_inputs(
    examples: list[Example], processor: InstructBlipProcessor, *, max_length: int, decoder_only: bool
) -> dict[str, Tensor]:
    """Inputs for ``model.generate``: no labels, and left padding for a decoder-only LM."""
    return collate(examples, processor, with_labels=False, max_length=max_length, decoder_only=decoder_only)


def _pad(sequences: list[list[int]], value: int, *, left: bool) -> tuple[Tensor, Tensor]:
    """Pad to the longest sequence (at least 1); return the (B, L) ids and the (B, L) 0/1 mask."""
    width = max(1, max(len(sequence) for sequence in sequences))
    ids = torch.full((len(sequences), width), value, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        if not sequence:
            continue
        span = slice(width - len(sequence), width) if left else slice(0, len(sequence))
        ids[row, span] = torch.tensor(sequence, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def to_model(batch: dict[str, Tensor], model) -> dict[str, Tensor]:
    """``batch`` on ``model``'s device, with the pixels in its dtype (bf16 / fp16 models on a GPU)."""
    moved = {name: tensor.to(model.device) for name, tensor in batch.items()}
    moved["pixel_values"] = moved["pixel_values"].to(model.dtype)
    return moved
