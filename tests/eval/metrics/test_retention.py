"""explore.eval.metrics.retention: plain and chance-corrected retention."""

from __future__ import annotations

import math

import pytest

from explore.eval.metrics.retention import chance_corrected_retention, retention


def test_retention_is_a_plain_ratio() -> None:
    assert retention(0.3, 0.6) == pytest.approx(0.5)
    assert retention(120.0, 100.0) == pytest.approx(1.2)  # CIDEr scale works too


@pytest.mark.parametrize("original", [0.0, -1.0, math.nan, math.inf])
def test_retention_needs_a_positive_original(original: float) -> None:
    with pytest.raises(ValueError, match="original score must be positive"):
        retention(0.5, original)


@pytest.mark.parametrize(
    ("acc", "acc_original", "chance", "expected"),
    [
        (0.6, 0.7, 0.5, (0.6 - 0.5) / (0.7 - 0.5)),  # 0.5: half the above-chance accuracy kept
        (0.7, 0.7, 0.5, 1.0),
        (0.5, 0.7, 0.5, 0.0),  # at chance
        (0.4, 0.7, 0.5, (0.4 - 0.5) / (0.7 - 0.5)),  # -0.5: below chance
        (0.625, 1.0, 0.25, (0.625 - 0.25) / (1.0 - 0.25)),  # 0.5 with four options
    ],
)
def test_chance_corrected_retention(acc: float, acc_original: float, chance: float, expected: float) -> None:
    assert chance_corrected_retention(acc, acc_original, chance) == pytest.approx(expected)


@pytest.mark.parametrize("acc_original", [0.5, 0.283])  # at chance; Qwen2-VL-7B's 28.3% overall
def test_chance_corrected_retention_needs_an_original_above_chance(acc_original: float) -> None:
    with pytest.raises(ValueError, match="not above chance"):
        chance_corrected_retention(0.6, acc_original)


def test_chance_corrected_retention_rejects_percentages() -> None:
    with pytest.raises(ValueError, match="divided by 100"):
        chance_corrected_retention(60.0, 65.8)
