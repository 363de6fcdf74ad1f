"""VL-RewardBench's official judge prompt and verdict line, stored once for the whole project.

Source: github.com/vl-rewardbench/VL_RewardBench, prompt.py (commit
e492d6548558d9fcac8959de60be8f4e8a640dc8). Evaluation (:mod:`explore.eval.metrics.rewardbench`) asks
judges with it, and training (:mod:`explore.train.stream`) renders world judge pairs with the same
text, so the embedded model learns the benchmark's own format. It lives in the data layer because
both build on it.
"""

from __future__ import annotations

import re

# prompt.py, verbatim (including the leading space); {query}, {answer_1}, {answer_2} stand for the
# f-string fields data_obj["query"], answers[0], answers[1].
JUDGE_PROMPT_TEMPLATE = """ You are a highly capable multimodal AI assistant tasked with evaluating answers to visual questions. Please analyze the following image and question, then determine which of the two provided answers is better.

Question: {query}

Answer 1: {answer_1}

Answer 2: {answer_2}

Please evaluate both answers based on the following criteria:
1. Accuracy: How well does the answer align with the visual information in the image?
2. Completeness: Does the answer fully address all aspects of the question?
3. Clarity: Is the answer easy to understand and well-articulated?
4. Relevance: Does the answer directly relate to the question and the image?

After your evaluation, please:
1. Explain your reasoning for each criterion.
2. Provide an overall judgment on which answer is better (Answer 1 or Answer 2). For example: Overall Judgment: Answer X is better.

Your response should be structured and detailed, demonstrating your understanding of both the visual and textual elements of the task."""  # noqa: E501

# The line the official prompt asks for ("For example: Overall Judgment: Answer X is better.").
VERDICT_TEMPLATE = "Overall Judgment: Answer {n} is better."


def judge_prompt(query: str, first: str, second: str) -> str:
    """The official judge prompt with ``first`` as "Answer 1" and ``second`` as "Answer 2".

    As in inference_hf.py, every "<image>\\n" is then removed from the prompt. The caller decides
    the order; the image is passed to the model separately.
    """
    prompt = JUDGE_PROMPT_TEMPLATE.format(query=query, answer_1=first, answer_2=second)
    return prompt.replace("<image>\n", "")


def verdict(position: int) -> str:
    """The official verdict line for the answer shown at ``position`` (0 → "Answer 1", 1 → "Answer 2")."""
    if position not in (0, 1):
        raise ValueError(f"verdict: position must be 0 or 1, got {position!r}")
    return VERDICT_TEMPLATE.format(n=position + 1)


def prompt_words() -> list[str]:
    """The words and punctuation of the official prompt (without its fields), lowercased: what a
    word-level tokenizer needs to read it without ``<unk>``."""
    text = re.sub(r"\{\w+\}", " ", JUDGE_PROMPT_TEMPLATE + " " + VERDICT_TEMPLATE)
    return sorted(set(re.findall(r"\w+|[^\w\s]", text.lower())))
