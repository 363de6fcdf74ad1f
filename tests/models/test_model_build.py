import math

import pytest
import torch
from PIL import Image

from explore.data.example import Example
from explore.errors import ConfigError
from explore.models.build import build_model
from explore.models.collate import collate
from explore.models.generate import generate_answers
from explore.models.presets import get_preset
from explore.models.tokenizer import build_word_tokenizer


def test_forward_with_labels_gives_a_finite_loss_near_uniform(tiny, examples):
    batch = collate(examples, tiny.processor, with_labels=True, max_length=16, decoder_only=tiny.decoder_only)
    output = tiny.model(**batch)
    assert torch.isfinite(output.loss)
    # a fresh model guesses close to uniformly: not the √d_model-sized logits of HF's T5 head init
    assert abs(output.loss.item() - math.log(len(tiny.tokenizer))) < 1.0
    output.loss.backward()
    assert tiny.model.query_tokens.grad.abs().sum() > 0
    assert tiny.model.vision_model.embeddings.patch_embedding.weight.grad.abs().sum() > 0


def test_generate_returns_words_for_every_example(tiny, examples):
    answers = generate_answers(tiny.model, tiny.processor, examples, max_length=16, max_new_tokens=3)
    assert len(answers) == len(examples)
    assert all(isinstance(answer, str) and "<image>" not in answer for answer in answers)


def test_batched_generation_equals_one_by_one(tiny, examples):
    """Left padding (decoder-only) and right padding (T5) must not change any answer."""
    together = generate_answers(tiny.model, tiny.processor, examples, max_length=16, max_new_tokens=4)
    alone = [generate_answers(tiny.model, tiny.processor, [e], max_length=16, max_new_tokens=4)[0] for e in examples]
    assert together == alone


def test_processor_inserts_num_query_tokens_image_placeholders(tiny, image_factory):
    inputs = tiny.processor(images=image_factory("red"), text="what colour is the square?", return_tensors="pt")
    image_id = tiny.model.config.image_token_id
    assert image_id == tiny.tokenizer.convert_tokens_to_ids("<image>")
    count = int((inputs["input_ids"] == image_id).sum())
    assert count == tiny.model.config.num_query_tokens == tiny.processor.num_query_tokens
    assert count == get_preset(tiny.preset).num_query_tokens
    assert inputs["pixel_values"].shape[-1] == get_preset(tiny.preset).image_size


def test_the_image_changes_the_output(tiny, image_factory):
    """The trap: HF's vision init (1e-10) and zero query tokens make a model blind to its image."""
    prompt = "what colour is the square?"
    real = Example(id="real", task="vqa", image=image_factory("red"), prompt=prompt, answers=["red"])
    blank = Example(id="blank", task="vqa", image=Image.new("RGB", (32, 32), "white"), prompt=prompt, answers=["red"])
    batches = [collate([e], tiny.processor, with_labels=True, max_length=16, decoder_only=tiny.decoder_only)
               for e in (real, blank)]  # fmt: skip
    with torch.no_grad():
        logits = [tiny.model(**batch).logits for batch in batches]
    relative = ((logits[0] - logits[1]).norm() / logits[1].norm()).item()
    assert relative > 1e-3


def test_every_part_is_initialised_deliberately(tiny):
    model, std = tiny.model, get_preset(tiny.preset).init_std
    assert model.config.vision_config.initializer_range == std  # not HF's 1e-10
    embeddings = model.vision_model.embeddings
    for tensor in (embeddings.patch_embedding.weight, embeddings.position_embedding, embeddings.class_embedding,
                   model.query_tokens, model.language_projection.weight):  # fmt: skip
        assert 0.5 * std < tensor.std().item() < 1.5 * std
    queries = model.query_tokens[0]  # (num_query_tokens, hidden): distinct, not HF's zeros
    assert torch.cdist(queries, queries).add(torch.eye(len(queries))).min() > 0


def test_same_seed_same_weights_and_global_rng_untouched(tiny_factory):
    state = torch.random.get_rng_state()
    first, second = tiny_factory("tiny-t5", seed=3).model, tiny_factory("tiny-t5", seed=3).model
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(
        torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )
    other = tiny_factory("tiny-t5", seed=4).model
    assert not torch.equal(first.query_tokens, other.query_tokens)


def test_build_model_needs_an_lm_tokenizer_with_the_image_token(words):
    with pytest.raises(ConfigError, match="<image>"):
        build_model("tiny-t5", build_word_tokenizer(words, image_token=False), seed=0)
