"""Query-token and depth operators on tiny T5- and LLaMA-backed InstructBLIPs."""

from dataclasses import replace

import pytest
import torch

from explore.compress.depth import drop_layers
from explore.compress.queries import prune_queries, select_queries
from explore.data.example import Example
from explore.errors import ExploreError
from explore.models.build import build_model, build_processor
from explore.models.collate import collate
from explore.models.generate import generate_answers
from explore.models.loading import load_model, save_model
from explore.models.presets import get_preset
from explore.models.tokenizer import build_word_tokenizer
from explore.world.render import render
from explore.world.splits import split_scene
from explore.world.vocabulary import vocabulary


def make(family: str, layers: int = 3):
    base = get_preset(f"tiny-{family}")
    preset = replace(base, name=f"tiny-{family}-deep", vision_layers=layers, qformer_layers=layers, lm_layers=layers,
                     lm_decoder_layers=layers if family == "t5" else 0, num_query_tokens=6)  # fmt: skip
    words = vocabulary()
    tokenizer, qtok = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    return build_model(preset, tokenizer, seed=0), build_processor(preset, tokenizer, qtok)


def inputs(model, processor):
    examples = [Example(id=str(i), task="vqa", image=render(split_scene("test", i), 16), prompt="What colour is the circle?",
                        answers=["red"]) for i in range(3)]  # fmt: skip
    return collate(examples, processor, with_labels=True, max_length=32,
                   decoder_only=bool(model.config.use_decoder_only_language_model))  # fmt: skip


def logits(model, processor):
    with torch.no_grad():
        return model(**inputs(model, processor)).logits


def test_select_queries_strategies():
    q = torch.arange(8.0).view(1, 8, 1)
    assert select_queries(q, 3, "first").flatten().tolist() == [0, 1, 2]
    assert select_queries(q, 3, "even").flatten().tolist() == [0, 4, 7]  # rint(linspace(0, 7, 3)) = 0, 3.5→4, 7
    assert select_queries(q, 3, "merge").flatten().tolist() == [1.0, 4.0, 6.5]  # means of [0,1,2], [3,4,5], [6,7]
    with pytest.raises(ExploreError, match="choose 1 <= k <= 8"):
        select_queries(q, 9, "first")
    with pytest.raises(ExploreError, match="unknown query strategy"):
        select_queries(q, 2, "random")


@pytest.mark.parametrize("family", ["t5", "llama"])
@pytest.mark.parametrize("strategy", ["first", "even", "merge"])
def test_prune_queries_keeps_config_processor_and_weights_consistent(family, strategy, tmp_path):
    model, processor = make(family)
    small, small_processor = prune_queries(model, processor, 2, strategy)
    assert small.query_tokens.shape == (1, 2, model.query_tokens.shape[-1])
    assert small.config.num_query_tokens == small_processor.num_query_tokens == 2
    assert model.config.num_query_tokens == 6  # the original is untouched
    batch = inputs(small, small_processor)
    image_id = small.config.image_token_id
    assert (batch["input_ids"] == image_id).sum(dim=1).tolist() == [2, 2, 2]
    out = logits(small, small_processor)
    assert torch.isfinite(out).all()
    save_model(small, small_processor, tmp_path / "m")
    again, again_processor = load_model(tmp_path / "m")
    assert again_processor.num_query_tokens == 2
    assert torch.equal(logits(again, again_processor), out)


@pytest.mark.parametrize("family, component", [("t5", "vision"), ("t5", "qformer"), ("t5", "lm_encoder"),
                                               ("t5", "lm_decoder"), ("llama", "lm_decoder"), ("llama", "vision")])
@pytest.mark.parametrize("drop", [[0], [1, 2]])
def test_drop_layers_saves_and_reloads(family, component, drop, tmp_path):
    model, processor = make(family)
    small = drop_layers(model, component, drop)
    counts = {"vision": small.config.vision_config.num_hidden_layers,
              "qformer": small.config.qformer_config.num_hidden_layers,
              "lm_encoder": getattr(small.config.text_config, "num_layers", None),
              "lm_decoder": (small.config.text_config.num_hidden_layers if family == "llama"
                             else small.config.text_config.num_decoder_layers)}  # fmt: skip
    assert counts[component] == 3 - len(drop)
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in model.parameters())
    out = logits(small, processor)
    assert torch.isfinite(out).all() and not torch.equal(out, logits(model, processor))
    save_model(small, processor, tmp_path / "m")
    again, again_processor = load_model(tmp_path / "m")
    assert torch.equal(logits(again, again_processor), out)
    examples = [Example(id="0", task="vqa", image=render(split_scene("test", 0), 16), prompt="What colour is it?")]
    assert len(generate_answers(again, again_processor, examples, max_new_tokens=3)) == 1  # KV cache still works


def test_drop_layers_errors():
    model, _ = make("t5")
    with pytest.raises(ExploreError, match="cannot drop \\[5\\]"):
        drop_layers(model, "vision", [5])
    with pytest.raises(ExploreError, match="keep at least one"):
        drop_layers(model, "qformer", [0, 1, 2])
    with pytest.raises(ExploreError, match="unknown component"):
        drop_layers(model, "projection", [0])
    llama, _ = make("llama")
    with pytest.raises(ExploreError, match="no encoder"):
        drop_layers(llama, "lm_encoder", [0])
    model.config.qformer_config.cross_attention_frequency = 2
    for i, layer in enumerate(model.qformer.encoder.layer):
        layer.has_cross_attention = i % 2 == 0
    with pytest.raises(ExploreError, match="breaks its pattern"):
        drop_layers(model, "qformer", [1])


@pytest.mark.parametrize("family", ["t5", "llama"])
def test_change_resolution_interpolates_and_reloads(family, tmp_path):
    from explore.compress.resolution import change_resolution

    model, processor = make(family)
    big, big_processor = change_resolution(model, processor, 32)  # 16 px → 32 px: 4 → 16 patches
    assert big.vision_model.embeddings.position_embedding.shape[1] == 17
    assert big_processor.image_processor.size == {"height": 32, "width": 32}
    batch = inputs(big, big_processor)
    assert batch["pixel_values"].shape[-1] == 32
    out = logits(big, big_processor)
    save_model(big, big_processor, tmp_path / "m")
    again, again_processor = load_model(tmp_path / "m")
    assert torch.equal(logits(again, again_processor), out)
    # back to the original size gives the original table exactly (bicubic at the same grid is the identity)
    same, _ = change_resolution(model, processor, 16)
    assert torch.allclose(same.vision_model.embeddings.position_embedding, model.vision_model.embeddings.position_embedding)
    with pytest.raises(ExploreError, match="multiple of the patch size"):
        change_resolution(model, processor, 20)


@pytest.mark.parametrize("family, component", [("t5", "vision"), ("t5", "qformer"), ("t5", "lm_encoder"),
                                               ("t5", "lm_decoder"), ("llama", "lm_decoder")])
def test_block_influence_ranks_every_block(family, component):
    from explore.compress.depth import block_influence, drop_least_influential

    model, processor = make(family)
    batch = inputs(model, processor)
    influence = block_influence(model, batch, component)
    assert len(influence) == 3 and all(0 <= x <= 2 for x in influence)
    small, dropped = drop_least_influential(model, batch, component, 1)
    assert dropped == [min(range(3), key=lambda i: influence[i])]
    assert len(block_influence(small, batch, component)) == 2


def test_block_influence_of_an_identity_block_is_zero():
    from explore.compress.depth import block_influence

    model, processor = make("t5")
    block = model.vision_model.encoder.layers[1]
    for p in (block.self_attn.projection.weight, block.self_attn.projection.bias, block.mlp.fc2.weight, block.mlp.fc2.bias):
        torch.nn.init.zeros_(p)  # both residual branches add zero: output = input
    influence = block_influence(model, inputs(model, processor), "vision")
    assert influence[1] == pytest.approx(0.0, abs=1e-6) and influence[0] > 1e-4
