"""The answer-slot auxiliary loss of judge training (issue 14).

A generative judge must know which answer of the official prompt says what. Measured in session 10
(text-only, a T5 of the embedded model's shape, official prompts of world judge pairs, target "Answer 1 : c1 .
Answer 2 : c2 ."): the first answer's claim stays at chance for 600+ steps, and the encoder cannot be probed for the
slot either — nothing in T5 (no absolute positions; a relative bias shared by both answers) marks a word as
Answer 1's. A linear head on the LM encoder's last states that must tell, for every token of the two answers, which
one it belongs to puts the slot into the states (probe: 0.90 after 450 steps from scratch); the decoder's reading of
the first claim then rises above chance (0.50 -> 0.65 at 600 steps). The head is trained with the model and
discarded: the saved folder is a plain InstructBLIP. Written by hand: neither transformers nor peft has auxiliary
token-classification losses on an encoder inside a seq2seq model.

The difference loss (session 26) is the same kind of help for the step the judge still misses: in a pair of
descriptions that differ in one object, the reason must name that object, and the judge finds it at chance, on
training pairs as well as unseen ones (benchmarks/judge_locate.py). A second discarded head must tell, for every token
of the two answers, whether it lies where the answers differ (outside their longest common blocks), so the encoder's
states say where the difference is.
"""

from __future__ import annotations

import difflib

import torch
from torch import Tensor, nn

from explore.errors import ExploreError

SLOT_HEAD_FILE = "slot_head.safetensors"
DIFFERENCE_HEAD_FILE = "difference_head.safetensors"
# the official prompt's "Answer 1: … Answer 2: …" and the sentence after them ("Please evaluate …"), as words
MARKS = ("answer", "1", "2", ":", "please")


def slot_token_ids(tokenizer) -> dict[str, int]:
    """The ids of :data:`MARKS` in ``tokenizer`` (a word-level one with the judge vocabulary).

    Raises:
        ExploreError: a mark is not a single token (another tokenizer, or no ``data.judge_vocabulary``).
    """
    ids = {word: tokenizer.convert_tokens_to_ids(word) for word in MARKS}
    missing = [word for word, i in ids.items() if i is None or i == tokenizer.unk_token_id]
    if missing:
        raise ExploreError(f"slot_loss needs the official prompt's words as tokens; {missing} are not in the LM "
                           "tokenizer: set data.judge_vocabulary: true (the project's word tokenizer)")  # fmt: skip
    return ids


def answer_slots(input_ids: Tensor, ids: dict[str, int]) -> Tensor:
    """(B, L) labels of ``input_ids`` (official judge prompts): 1 on the tokens of "Answer 1: …", 2 on those of
    "Answer 2: …" (up to "Please evaluate"), 0 elsewhere; a row without both answers is all 0."""
    slots = torch.zeros_like(input_ids)
    for row, tokens in enumerate(input_ids.tolist()):
        marks = [i for i in range(len(tokens) - 2)
                 if tokens[i] == ids["answer"] and tokens[i + 2] == ids[":"] and tokens[i + 1] in (ids["1"], ids["2"])]  # fmt: skip
        first = next((i for i in marks if tokens[i + 1] == ids["1"]), None)
        second = next((i for i in marks if tokens[i + 1] == ids["2"] and first is not None and i > first), None)
        if second is None:
            continue
        end = next((i for i in range(second, len(tokens)) if tokens[i] == ids["please"]), len(tokens))
        slots[row, first + 3 : second] = 1
        slots[row, second + 3 : end] = 2
    return slots


class SlotHead(nn.Module):
    """A linear head from the LM encoder's states to the answer slot (1 or 2); trained, then discarded."""

    file = SLOT_HEAD_FILE

    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(hidden_size, 2)

    def accuracy(self, states: Tensor, slots: Tensor) -> tuple[int, int]:
        """(tokens assigned to their answer, answer tokens) over the tokens with ``slots`` > 0."""
        inside = slots > 0
        return int((self.proj(states[inside]).argmax(-1) + 1 == slots[inside]).sum()), int(inside.sum())

    def loss(self, states: Tensor, slots: Tensor) -> Tensor:
        """Cross-entropy over the answers' tokens (``slots`` > 0); 0 when a batch has none."""
        inside = slots > 0
        if not inside.any():
            return states.sum() * 0.0
        return nn.functional.cross_entropy(self.proj(states[inside]).float(), slots[inside] - 1)


def answer_differences(input_ids: Tensor, slots: Tensor) -> Tensor:
    """(B, L) labels of ``input_ids`` (official judge prompts) given their :func:`answer_slots`: 1 on the tokens of
    either answer outside the longest matching blocks of the two answers (``difflib``: the word, count or invented
    object in which they differ, and a verb's number that changes with it), 0 on the answers' other tokens, -1 outside
    the answers; a row without both answers is all -1."""
    labels = torch.full_like(input_ids, -1)
    for row in range(input_ids.shape[0]):
        spans = [(slots[row] == k).nonzero().flatten() for k in (1, 2)]
        if not all(len(span) for span in spans):
            continue
        first, second = (input_ids[row, span].tolist() for span in spans)
        labels[row, spans[0]] = 0
        labels[row, spans[1]] = 0
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, first, second, autojunk=False).get_opcodes():
            if tag != "equal":
                labels[row, spans[0][i1:i2]] = 1
                labels[row, spans[1][j1:j2]] = 1
    return labels


class DifferenceHead(nn.Module):
    """A linear head from the LM encoder's states to "this answer token is where the answers differ"; trained, then
    discarded."""

    file = DIFFERENCE_HEAD_FILE

    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)

    def accuracy(self, states: Tensor, labels: Tensor) -> tuple[int, int]:
        """(differing tokens the head ranks first in their answer pair, rows with a difference): per row, whether the
        answers' token the head scores highest is one of the differing ones."""
        hits = rows = 0
        for row in range(labels.shape[0]):
            inside = labels[row] >= 0
            if not (labels[row] == 1).any():
                continue
            scores = self.proj(states[row][inside]).squeeze(-1)
            hits += int(labels[row][inside][scores.argmax()] == 1)
            rows += 1
        return hits, rows

    def loss(self, states: Tensor, labels: Tensor) -> Tensor:
        """Binary cross-entropy, the differing and the other answer tokens weighted equally (a pair of descriptions
        has one differing word among some 60 answer tokens); 0 when a batch has no answers."""
        parts = []
        for value in (1, 0):
            chosen = labels == value
            if chosen.any():
                logits = self.proj(states[chosen]).squeeze(-1).float()
                parts.append(nn.functional.binary_cross_entropy_with_logits(logits, torch.full_like(logits, value)))
        return sum(parts) / len(parts) if parts else states.sum() * 0.0
