"""Layer-wise distillation: hidden-state and attention transfer from the teacher's LM to the student's, beside
the logit KL of :mod:`explore.adapt.distill` (TinyBERT arXiv 1909.10351, MiniLM arXiv 2002.10957).

The student may have fewer layers (depth), fewer heads or FFN channels (width) and fewer image tokens (queries)
than the teacher, but the same LM width and the same text. So:

- student layer i (of Ls) is matched to teacher layer (i + 1) · Lt // Ls - 1 (TinyBERT's uniform map: the last
  layers meet);
- hidden states are compared at the text positions only (the prompt and answer tokens, not the image tokens,
  whose number may differ): normalised MSE ‖s − t‖² / ‖t‖², so layers of any scale weigh alike;
- attention is compared as the head-averaged distribution of each text query over [all image tokens as one
  bucket, each text token]: the same support whatever the head or image-token counts; KL(teacher ‖ student)
  per query row. Attention probabilities need eager attention (SDPA does not return them).

T5 contributes its encoder and decoder (self-attention) stacks, LLaMA its decoder.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from explore.errors import ExploreError
from explore.models.collate import IGNORE_INDEX
from explore.models.fastv import kept_positions


def layer_map(student_layers: int, teacher_layers: int) -> list[int]:
    """The teacher layer (0-based) matched to each student layer: TinyBERT's uniform map, last meets last."""
    if not 0 < student_layers <= teacher_layers:
        raise ExploreError(f"layer-wise distillation: a student with {student_layers} layers cannot be matched to a "
                           f"teacher with {teacher_layers}; the student needs between 1 and {teacher_layers} layers")  # fmt: skip
    return [(i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)]


def lm_streams(output, batch: dict, *, decoder_only: bool, image_token_id: int, kept: Tensor | None = None) -> list[dict]:
    """The LM stacks of an InstructBLIP output run with ``output_hidden_states`` (and ``output_attentions``).

    Each stream: ``hidden`` (the layers' outputs, embeddings left out, or None), ``attentions`` (or None), ``text``
    (B, T) True at the text positions compared, ``image`` (B, T) True at image tokens (or None), ``kept`` (B, T')
    the positions FastV kept after its layer (:func:`explore.models.fastv.kept_positions`; None without FastV):
    layers that read T' tokens are compared at the kept text positions (FastV drops image tokens only).
    """
    lm = output.language_model_outputs
    valid = batch["attention_mask"].bool()
    image = batch["input_ids"] == image_token_id

    def layers(states):  # the layers' outputs, without the embeddings (None when not asked for)
        return None if states is None else states[1:]

    if decoder_only:
        return [{"hidden": layers(lm.hidden_states), "attentions": lm.attentions, "text": valid & ~image,
                 "image": image, "kept": kept}]  # fmt: skip
    answers = batch["labels"] != IGNORE_INDEX
    return [
        {"hidden": layers(lm.encoder_hidden_states), "attentions": lm.encoder_attentions, "text": valid & ~image,
         "image": image, "kept": kept},
        {"hidden": layers(lm.decoder_hidden_states), "attentions": lm.decoder_attentions, "text": answers,
         "image": None, "kept": None},
    ]  # fmt: skip


def _masks(stream: dict, length: int) -> tuple[Tensor, Tensor | None]:
    """(text, image) masks of ``stream`` for a layer that reads ``length`` tokens (all, or the FastV-kept ones)."""
    text, image, kept = stream["text"], stream["image"], stream["kept"]
    if length == text.shape[1]:
        return text, image
    if kept is not None and length == kept.shape[1]:
        return text.gather(1, kept), None if image is None else image.gather(1, kept)
    raise ExploreError(f"layer-wise distillation: a layer reads {length} tokens, the input has {text.shape[1]}; "
                       "pass the FastV kept positions (kept=) for a student with FastV")  # fmt: skip


def _check_same_text(student: Tensor, teacher: Tensor) -> None:
    if not torch.equal(student.sum(dim=1).cpu(), teacher.sum(dim=1).cpu()):
        raise ExploreError("layer-wise distillation: the student's and the teacher's text positions differ; both need "
                           "the same prompts and answers, tokenized alike")  # fmt: skip


def hidden_state_loss(student: list[dict], teacher: list[dict]) -> Tensor:
    """Mean over matched layers (all stacks) of ‖s − t‖² / ‖t‖² at the text positions; a scalar."""
    losses = []
    for s, t in zip(student, teacher, strict=True):
        if s["hidden"] is None or t["hidden"] is None:
            raise ExploreError("hidden-state transfer needs hidden states: run both models with output_hidden_states=True")
        _check_same_text(s["text"], t["text"])
        for i, j in enumerate(layer_map(len(s["hidden"]), len(t["hidden"]))):
            mine_states, target_states = s["hidden"][i], t["hidden"][j]
            mine = mine_states[_masks(s, mine_states.shape[1])[0]].float()
            target = target_states[_masks(t, target_states.shape[1])[0]].float().to(mine.device)
            losses.append((mine - target).pow(2).sum() / target.pow(2).sum().clamp(min=1e-12))
    return torch.stack(losses).mean()


def _text_attention(attention: Tensor, stream: dict) -> list[Tensor]:
    """Per row: (text queries, 1 + text keys) attention with all image keys summed into the first column."""
    text, image = _masks(stream, attention.shape[-1])
    probs = attention.float().mean(dim=1)  # (B, T, T), mean over heads
    rows = []
    for b in range(probs.shape[0]):
        queries = probs[b][text[b]]  # (n, T)
        bucket = queries[:, image[b]].sum(dim=-1, keepdim=True) if image is not None else queries[:, :0]
        rows.append(torch.cat([bucket, queries[:, text[b]]], dim=-1))
    return rows


def attention_loss(student: list[dict], teacher: list[dict]) -> Tensor:
    """Mean over matched layers and text query rows of KL(teacher ‖ student) between head-averaged attention
    distributions over [image bucket, text keys] (renormalised); a scalar. Needs ``output_attentions``."""
    losses = []
    for s, t in zip(student, teacher, strict=True):
        if s["attentions"] is None or t["attentions"] is None:
            raise ExploreError("attention transfer needs attention probabilities: run both models with eager "
                               "attention and output_attentions=True")  # fmt: skip
        _check_same_text(s["text"], t["text"])
        for i, j in enumerate(layer_map(len(s["attentions"]), len(t["attentions"]))):
            per_query = []  # rows differ in their text length, so the KL is taken row by row
            for mine, target in zip(_text_attention(s["attentions"][i], s), _text_attention(t["attentions"][j], t),
                                    strict=True):  # fmt: skip
                log_mine = (mine / mine.sum(-1, keepdim=True)).clamp(min=1e-12).log()
                target = target.to(mine.device)
                log_target = (target / target.sum(-1, keepdim=True)).clamp(min=1e-12).log()
                per_query.append(F.kl_div(log_mine, log_target, log_target=True, reduction="none").sum(-1))  # (n,)
            losses.append(torch.cat(per_query).mean())
    return torch.stack(losses).mean()


def forward_options(*, hidden: bool, attention: bool) -> dict:
    """Extra ``model(...)`` arguments that return what the layer-wise terms compare."""
    options = {}
    if hidden:
        options["output_hidden_states"] = True
    if attention:
        options["output_attentions"] = True
    return options


def layerwise_loss(student_output, student_batch: dict, student_model, teacher_output, teacher_batch: dict,
                   teacher_model, *, hidden_weight: float, attention_weight: float) -> Tensor:  # fmt: skip
    """``hidden_weight · hidden_state_loss + attention_weight · attention_loss`` between two InstructBLIP outputs
    run with :func:`forward_options` (``*_model``: the InstructBLIPs, for their LM family and image token)."""

    def streams(output, batch, model):
        config = model.config
        return lm_streams(output, batch, decoder_only=bool(config.use_decoder_only_language_model),
                          image_token_id=int(config.image_token_id), kept=kept_positions(model))  # fmt: skip

    student = streams(student_output, student_batch, student_model)
    teacher = streams(teacher_output, teacher_batch, teacher_model)
    loss = student_output.logits.new_zeros((), dtype=torch.float32)
    if hidden_weight > 0:
        loss = loss + hidden_weight * hidden_state_loss(student, teacher)
    if attention_weight > 0:
        loss = loss + attention_weight * attention_loss(student, teacher)
    return loss


@contextmanager
def eager_attention(*models):
    """Run ``models`` (InstructBLIPs) with eager attention inside the block, so that ``output_attentions``
    returns probabilities; each model's own implementation is restored afterwards."""
    before = [model.config._attn_implementation for model in models]
    try:
        for model in models:
            model.set_attn_implementation("eager")
        yield
    finally:
        for model, implementation in zip(models, before, strict=True):
            model.set_attn_implementation(implementation)
