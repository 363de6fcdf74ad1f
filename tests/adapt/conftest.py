"""Fixtures for the fine-tuning tests: tiny InstructBLIPs with the world's vocabulary, a fixed batch.

With ``--import-mode=importlib`` test modules cannot import this file, so helpers are fixtures.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

from explore.adapt.config import FinetuneConfig
from explore.data.example import Example
from explore.models.build import build_model, build_processor
from explore.models.tokenizer import build_word_tokenizer
from explore.world.examples import world_examples
from explore.world.vocabulary import vocabulary

FAMILIES = ["t5", "llama"]
# per method, a learning rate at which 15 steps clearly lower the loss of a tiny model on one batch
FAST_LR = {"lora": 1e-2, "dora": 1e-2, "ia3": 1e-1, "full": 3e-3}


def make_tiny(family: str, seed: int = 0) -> tuple[InstructBlipForConditionalGeneration, InstructBlipProcessor]:
    words = vocabulary()  # the world's prompts and answers, so WorldStream examples tokenize fully
    tokenizer, qformer_tokenizer = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    preset = f"tiny-{family}"
    return build_model(preset, tokenizer, seed=seed), build_processor(preset, tokenizer, qformer_tokenizer)


class FixedBatch:
    """A data source that returns the same examples at every position (to watch the loss fall)."""

    def __init__(self, examples: list[Example]) -> None:
        self.examples = examples

    def batch(self, start: int, size: int) -> list[Example]:
        return self.examples[:size]


@pytest.fixture
def tiny_factory() -> Callable[..., tuple[InstructBlipForConditionalGeneration, InstructBlipProcessor]]:
    """``tiny_factory(family, seed=0)``: a fresh tiny ``(model, processor)``, family ``"t5"`` or ``"llama"``."""
    return make_tiny


@pytest.fixture(scope="session")
def fixed_examples() -> list[Example]:
    """Four 16 px VQA training examples of the shapes world."""
    return world_examples("train", 4, "vqa", resolution=16)


@pytest.fixture
def fixed_data(fixed_examples) -> FixedBatch:
    """A data source that always gives the same four examples."""
    return FixedBatch(fixed_examples)


@pytest.fixture
def quick_config() -> Callable[..., FinetuneConfig]:
    """``quick_config(method, **changes)``: a few constant-lr steps of batch 4 at a high lr for ``method``."""

    def make(method: str, **changes) -> FinetuneConfig:
        values = {"method": method, "components": ["qformer", "lm"], "steps": 15, "batch_size": 4,
                  "lr": FAST_LR.get(method, 1e-2), "warmup_steps": 0, "schedule": "constant",
                  "max_length": 32}  # fmt: skip
        values.update(changes)
        return FinetuneConfig(**values)

    return make
