"""Fixtures for the model-layer tests: tiny InstructBLIPs (a few tens of thousands of parameters), images, examples.

With ``--import-mode=importlib`` test modules cannot import this file, so helpers are fixtures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from PIL import Image, ImageDraw
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor, PreTrainedTokenizerFast

from explore.data.example import Example
from explore.models.build import build_model, build_processor
from explore.models.tokenizer import build_word_tokenizer

WORDS = ["what", "colour", "is", "the", "square", "circle", "red", "blue", "green", "yes", "no", "a", "there"]
TINY_PRESETS = ["tiny-t5", "tiny-llama"]


@dataclass
class Tiny:
    """One tiny model with everything a test needs."""

    preset: str
    model: InstructBlipForConditionalGeneration
    processor: InstructBlipProcessor
    tokenizer: PreTrainedTokenizerFast
    decoder_only: bool


def make_tiny(preset: str, seed: int = 0) -> Tiny:
    tokenizer = build_word_tokenizer(WORDS)
    qformer_tokenizer = build_word_tokenizer(WORDS, image_token=False)
    model = build_model(preset, tokenizer, seed=seed)
    processor = build_processor(preset, tokenizer, qformer_tokenizer)
    return Tiny(preset, model, processor, tokenizer, bool(model.config.use_decoder_only_language_model))


def shape_image(colour: str, shape: str = "square", size: int = 32) -> Image.Image:
    """A white image with one coloured shape in the middle."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    box = [size // 4, size // 4, 3 * size // 4, 3 * size // 4]
    (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=colour)
    return image


def vqa(example_id: str, colour: str, prompt: str = "what colour is the square?", shape: str = "square") -> Example:
    return Example(
        id=example_id, task="vqa", image=shape_image(colour, shape), prompt=prompt, answers=[colour], source="test"
    )


@pytest.fixture(params=TINY_PRESETS)
def tiny(request: pytest.FixtureRequest) -> Tiny:
    """A fresh tiny model of each LM family (T5 encoder–decoder, LLaMA decoder-only)."""
    return make_tiny(request.param)


@pytest.fixture
def examples() -> list[Example]:
    """Four VQA examples with prompts of different lengths (so padding matters)."""
    return [
        vqa("a", "red"),
        vqa("b", "blue", prompt="colour?"),
        vqa("c", "green", prompt="what colour is the circle?", shape="circle"),
        Example(id="d", task="vqa", image=shape_image("red"), prompt="is there a square?", answers=["yes"]),
    ]


@pytest.fixture
def words() -> list[str]:
    """The test vocabulary."""
    return list(WORDS)


@pytest.fixture
def tiny_factory() -> Callable[..., Tiny]:
    """``tiny_factory(preset, seed=0)`` builds a fresh tiny model."""
    return make_tiny


@pytest.fixture
def image_factory() -> Callable[..., Image.Image]:
    """``image_factory(colour, shape="square", size=32)`` draws one shape on white."""
    return shape_image
