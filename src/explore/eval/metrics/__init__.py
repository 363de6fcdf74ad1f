"""Model-free scoring: pure functions from predictions and references to numbers.

- :mod:`.vqa`: VQAv2 accuracy and exact match with the official answer normalisation;
- :mod:`.captions`: corpus BLEU-4 and CIDEr-D as coco-caption computes them
  (:mod:`.caption_tokens` imitates its PTB tokenisation);
- :mod:`.rewardbench`: VL-RewardBench's official judge prompt, parsing, swaps, vote, aggregation;
- :mod:`.retention`: plain and chance-corrected retention against an original model.
"""

from explore.eval.metrics.caption_tokens import tokenize_caption
from explore.eval.metrics.captions import bleu4, cider_d, cider_d_per_example
from explore.eval.metrics.retention import chance_corrected_retention, retention
from explore.eval.metrics.rewardbench import (
    JUDGE_PROMPT_TEMPLATE,
    JUDGMENT_PATTERN,
    aggregate,
    judge_prompt,
    majority_vote,
    parse_judgment,
    swap_pairs,
)
from explore.eval.metrics.vqa import exact_match, normalize_vqa_answer, vqa_accuracy

__all__ = [
    "JUDGE_PROMPT_TEMPLATE", "JUDGMENT_PATTERN", "aggregate", "bleu4", "chance_corrected_retention",
    "cider_d", "cider_d_per_example", "exact_match", "judge_prompt", "majority_vote",
    "normalize_vqa_answer", "parse_judgment", "retention", "swap_pairs", "tokenize_caption",
    "vqa_accuracy",
]  # fmt: skip
