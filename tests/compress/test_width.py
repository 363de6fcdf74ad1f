"""Width pruning (heads, FFN channels) on tiny T5- and LLaMA-backed InstructBLIPs: the config states the new
sizes, a plain ``from_pretrained`` reloads the same model, and importance removes what matters least."""

from dataclasses import replace

import pytest
import torch
from transformers import InstructBlipForConditionalGeneration

from explore.compress.width import prune_width, width_importance
from explore.data.example import Example
from explore.errors import ExploreError
from explore.models.build import build_model, build_processor
from explore.models.collate import collate
from explore.models.generate import generate_answers
from explore.models.loading import save_model
from explore.models.presets import get_preset
from explore.models.tokenizer import build_word_tokenizer
from explore.world.render import render
from explore.world.splits import split_scene
from explore.world.vocabulary import vocabulary


def make(family: str):
    """Two layers per part, 4 heads in the LM (width 16, head size 4)."""
    preset = replace(get_preset(f"tiny-{family}"), name=f"tiny-{family}-wide", qformer_layers=2, lm_layers=2,
                     lm_decoder_layers=2 if family == "t5" else 0, lm_heads=4)  # fmt: skip
    words = vocabulary()
    tokenizer, qtok = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    return build_model(preset, tokenizer, seed=0).eval(), build_processor(preset, tokenizer, qtok)


def batch(model, processor):
    examples = [Example(id=str(i), task="vqa", image=render(split_scene("test", i), 16), prompt="What colour is the circle?",
                        answers=["red"]) for i in range(3)]  # fmt: skip
    return collate(examples, processor, with_labels=True, max_length=32,
                   decoder_only=bool(model.config.use_decoder_only_language_model))  # fmt: skip


def logits(model, processor):
    with torch.no_grad():
        return model(**batch(model, processor)).logits


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def configured(model, family: str, component: str, part: str) -> int:
    """The size the config states for ``part`` of ``component``."""
    text = model.config.text_config
    if part == "heads":
        return text.num_heads if family == "t5" else text.num_attention_heads
    if component == "vision":
        return model.config.vision_config.intermediate_size
    if component == "qformer":
        return model.config.qformer_config.intermediate_size
    return text.d_ff if family == "t5" else text.intermediate_size


# (family, component, ffn_keep, heads_keep, expected sizes)
CASES = [
    ("t5", "vision", 0.5, 1.0, {"ffn": 16}),
    ("t5", "qformer", 0.25, 1.0, {"ffn": 8}),
    ("t5", "lm", 0.5, 1.0, {"ffn": 16}),
    ("t5", "lm", 1.0, 0.5, {"heads": 2}),
    ("t5", "lm", 0.5, 0.25, {"ffn": 16, "heads": 1}),
    ("llama", "vision", 0.5, 1.0, {"ffn": 16}),
    ("llama", "lm", 0.5, 1.0, {"ffn": 16}),
    ("llama", "lm", 1.0, 0.5, {"heads": 2}),
    ("llama", "lm", 0.75, 0.5, {"ffn": 24, "heads": 2}),
]


@pytest.mark.parametrize("family, component, ffn_keep, heads_keep, sizes", CASES)
def test_prune_width_states_sizes_and_reloads_with_plain_from_pretrained(family, component, ffn_keep, heads_keep,
                                                                        sizes, tmp_path):  # fmt: skip
    model, processor = make(family)
    small, got = prune_width(model, batch(model, processor), component, ffn_keep=ffn_keep, heads_keep=heads_keep)
    assert got == sizes
    for part, size in sizes.items():
        assert configured(small, family, component, part) == size
    assert configured(model, family, component, "ffn") == 32  # the original is untouched
    assert n_params(small) < n_params(model)
    out = logits(small, processor)
    assert torch.isfinite(out).all() and not torch.equal(out, logits(model, processor))
    save_model(small, processor, tmp_path / "m")
    again = InstructBlipForConditionalGeneration.from_pretrained(tmp_path / "m").eval()  # plain transformers
    assert n_params(again) == n_params(small)
    assert torch.equal(logits(again, processor), out)
    examples = [Example(id="0", task="vqa", image=render(split_scene("test", 0), 16), prompt="What colour is it?")]
    assert generate_answers(again, processor, examples) == generate_answers(small, processor, examples)


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_pruning_a_silent_head_and_channel_changes_nothing(family):
    """A head whose output-projection columns are zero, and an FFN channel whose down-projection column is
    zero, add nothing to the residual stream: importance ranks them last, and removing them keeps the logits."""
    model, processor = make(family)
    lm = model.language_model
    layers = list(lm.encoder.block) + list(lm.decoder.block) if family == "t5" else list(lm.model.layers)
    with torch.no_grad():
        for layer in layers:
            if family == "t5":
                attentions = [sub.SelfAttention if hasattr(sub, "SelfAttention") else sub.EncDecAttention
                              for sub in layer.layer[:-1]]  # fmt: skip
                outs = [a.o for a in attentions]
                down = layer.layer[-1].DenseReluDense.wo
            else:
                outs, down = [layer.self_attn.o_proj], layer.mlp.down_proj
            for out in outs:
                out.weight[:, 4:8] = 0  # head 1 of 4 (head size 4)
            for channel in (3, 7, 20):
                down.weight[:, channel] = 0
    inputs = batch(model, processor)
    heads = width_importance(model, inputs, "lm", "heads")
    assert all(int(score.argmin()) == 1 and score[1] == 0 for score in heads)
    ffn = width_importance(model, inputs, "lm", "ffn")
    assert all(set(torch.argsort(score)[:3].tolist()) == {3, 7, 20} for score in ffn)
    # T5 takes any head count (d_kv is explicit); LLaMA needs one that divides its width: drop 2 heads there
    if family == "llama":
        with torch.no_grad():
            for layer in layers:
                layer.self_attn.o_proj.weight[:, 12:16] = 0  # head 3 too
    heads_keep = 0.75 if family == "t5" else 0.5
    small, sizes = prune_width(model, inputs, "lm", heads_keep=heads_keep, ffn_keep=29 / 32)
    assert sizes == {"heads": 3 if family == "t5" else 2, "ffn": 29}
    torch.testing.assert_close(logits(small, processor), logits(model, processor), rtol=1e-5, atol=1e-5)


def test_prune_width_errors():
    model, processor = make("t5")
    inputs = batch(model, processor)
    with pytest.raises(ExploreError, match="unknown component"):
        prune_width(model, inputs, "lm_encoder", ffn_keep=0.5)
    with pytest.raises(ExploreError, match="hidden_size / num_attention_heads"):
        prune_width(model, inputs, "vision", heads_keep=0.5)
    with pytest.raises(ExploreError, match="must be in \\(0, 1\\]"):
        prune_width(model, inputs, "lm", ffn_keep=0.0)
    llama, llama_processor = make("llama")
    with pytest.raises(ExploreError, match="one of \\[1, 2, 4\\] heads"):  # 3 heads do not divide width 16
        prune_width(llama, batch(llama, llama_processor), "lm", heads_keep=0.75)
    llama.language_model.config.num_key_value_heads = 2
    with pytest.raises(ExploreError, match="grouped-query"):
        prune_width(llama, batch(llama, llama_processor), "lm", heads_keep=0.5)
