"""Knowledge distillation on the answer tokens: the student matches the teacher's softened distribution.

The teacher (the uncompressed model) and the student (the compressed one) may differ in the
number of query tokens, layers or image size, so each collates the same examples with its own
processor. Their answers are the same tokens, and this module finds the logits that predict them:

- T5: the decoder logits (B, La, V) line up with the labels (B, La) one to one;
- LLaMA: labels (B, L) are aligned with ``input_ids`` and the answer is at the end of each
  row, after the ``<image>`` placeholders and the prompt, so its position depends on the
  query count; the logits at position t predict token t + 1, so the answer's logits are
  ``logits[:, :-1]`` where ``labels[:, 1:]`` is not ignored. Taking them row by row in order
  gives the same (N, V) layout for teacher and student whatever their prefix lengths.

The loss (Hinton et al., arXiv 1503.02531) is ``(1 - w) · CE + w · T² · KL(p_teacher ‖ p_student)``
with both distributions softened at temperature T; T² keeps the gradient scale independent of T.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from explore.errors import ExploreError
from explore.models.collate import IGNORE_INDEX


def answer_logits(logits: Tensor, labels: Tensor, *, decoder_only: bool) -> Tensor:
    """The logits that predict each answer token, (N, V), rows in batch order and tokens in order.

    Args:
        logits: (B, La, V) T5 decoder logits, or (B, L, V) decoder-only logits.
        labels: the labels the logits were computed with (see :func:`explore.models.collate.collate`).
        decoder_only: True for a LLaMA-style LM.
    """
    if decoder_only:
        mask = labels[:, 1:] != IGNORE_INDEX  # (B, L - 1): the token at t + 1 is an answer token
        return logits[:, :-1][mask]
    return logits[labels != IGNORE_INDEX]


def distillation_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Mean over N tokens of KL(softmax(teacher / T) ‖ softmax(student / T)); inputs (N, V), output a scalar.

    Computed in float32. Raises ExploreError when the shapes differ (other answers or another vocabulary).
    """
    if student.shape != teacher.shape:
        raise ExploreError(
            f"distillation: student answer logits {tuple(student.shape)} and teacher's {tuple(teacher.shape)} differ; "
            "teacher and student need the same LM tokenizer and the same max_length"
        )
    if student.shape[0] == 0:
        return student.sum() * 0.0  # no answer tokens (every label ignored): nothing to match
    log_student = F.log_softmax(student.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher.float() / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean")


def distillation_loss(
    task_loss: Tensor, student: Tensor, teacher: Tensor, *, weight: float, temperature: float
) -> tuple[Tensor, Tensor]:
    """``(1 - w) · task_loss + w · T² · KL`` and the KL term; ``student`` / ``teacher`` are (N, V) answer logits."""
    kl = distillation_kl(student, teacher, temperature)
    return (1.0 - weight) * task_loss + weight * temperature**2 * kl, kl


def same_answer_tokens(student_labels: Tensor, teacher_labels: Tensor) -> bool:
    """True when both label tensors hold the same answer tokens row by row (the alignment the KL needs)."""
    if student_labels.shape[0] != teacher_labels.shape[0]:
        return False
    for student_row, teacher_row in zip(student_labels, teacher_labels, strict=True):
        if not torch.equal(student_row[student_row != IGNORE_INDEX], teacher_row[teacher_row != IGNORE_INDEX]):
            return False
    return True


class TeacherAnswers:
    """The teacher's answer logits (N, V) and labels by data position, kept between fine-tunes that share one
    teacher and one data stream (a sweep's points with the same recovery recipe), so the teacher's forward pass
    runs once per batch instead of once per batch and point. The logits are kept as computed (float32 on the
    CPU), so a fine-tune that reads them trains exactly as one that computes them. At most ``max_bytes`` are
    kept; later batches are computed as usual."""

    def __init__(self, max_bytes: int = 2 * 2**30) -> None:
        self.by_position: dict[int, tuple[Tensor, Tensor]] = {}
        self.bytes, self.max_bytes = 0, max_bytes
        self.hits = 0  # batches read instead of computed

    def get(self, position: int) -> tuple[Tensor, Tensor] | None:
        """(answer logits, labels) of the batch at ``position``, or None when not kept."""
        found = self.by_position.get(position)
        self.hits += found is not None
        return found

    def put(self, position: int, answers: Tensor, labels: Tensor) -> None:
        """Keep the batch at ``position`` unless that would pass ``max_bytes``."""
        size = answers.numel() * answers.element_size() + labels.numel() * labels.element_size()
        if position not in self.by_position and self.bytes + size <= self.max_bytes:
            self.by_position[position] = (answers.detach().to("cpu", copy=True), labels.detach().to("cpu", copy=True))
            self.bytes += size

