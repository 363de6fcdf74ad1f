"""How much of the original model's score a compressed / adapted model keeps.

A plain ratio suits metrics whose floor is 0 (VQA accuracy, CIDEr-D). A pairwise judge scores
50% by guessing, and many open models score below that on VL-RewardBench, so there the part
above chance is compared instead: :func:`chance_corrected_retention`.
"""

from __future__ import annotations

import math

__all__ = ["chance_corrected_retention", "retention"]


def retention(score: float, original: float) -> float:
    """``score / original``: 1.0 = everything kept, 0.5 = half of it.

    Raises:
        ValueError: ``original`` is not a positive finite number (no ratio to report), or
            ``score`` is not finite.
    """
    if not (math.isfinite(original) and original > 0):
        raise ValueError(f"retention: original score must be positive and finite, got {original!r}")
    if not math.isfinite(score):
        raise ValueError(f"retention: score must be finite, got {score!r}")
    return score / original


def chance_corrected_retention(acc: float, acc_original: float, chance: float = 0.5) -> float:
    """``(acc - chance) / (acc_original - chance)``: the share of the above-chance accuracy kept.

    1.0 = as far above chance as the original, 0.0 = at chance, negative = below chance.
    Accuracies and chance are fractions in [0, 1] (0.658, not 65.8).

    Raises:
        ValueError: a value outside [0, 1], or ``acc_original <= chance`` (the original model is
            no better than guessing, so there is nothing to retain; report plain accuracies).
    """
    for name, value in (("acc", acc), ("acc_original", acc_original), ("chance", chance)):
        if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
            raise ValueError(
                f"chance_corrected_retention: {name} must be a fraction in [0, 1], got {value!r}"
                f"{' (pass percentages divided by 100)' if isinstance(value, (int, float)) and value > 1 else ''}"
            )
    if acc_original <= chance:
        raise ValueError(
            f"chance_corrected_retention: the original accuracy {acc_original} is not above chance "
            f"{chance}, so there is no above-chance accuracy to retain; compare plain accuracies instead"
        )
    return (acc - chance) / (acc_original - chance)
