"""FastV image-token pruning in the LM on tiny T5- and LLaMA-backed InstructBLIPs: it drops the image tokens
that receive the least attention at layer k, it equals masking those tokens out of every later layer, and
explore's load path restores it (a plain ``from_pretrained`` ignores it)."""

from dataclasses import replace

import pytest
import torch
from transformers import InstructBlipForConditionalGeneration

from explore.compress.fastv import prune_image_tokens
from explore.data.example import Example
from explore.errors import ExploreError
from explore.models.build import build_model, build_processor
from explore.models.collate import collate
from explore.models.fastv import kept_positions
from explore.models.generate import generate_answers
from explore.models.loading import load_model, save_model
from explore.models.presets import get_preset
from explore.models.tokenizer import build_word_tokenizer
from explore.world.render import render
from explore.world.splits import split_scene
from explore.world.vocabulary import vocabulary

FAMILIES = ["t5", "llama"]
QUERIES = 6  # image tokens in the LM input


def make(family: str):
    """Three LM layers (T5: three encoder blocks), six query tokens."""
    preset = replace(get_preset(f"tiny-{family}"), name=f"tiny-{family}-fastv", lm_layers=3, num_query_tokens=QUERIES)
    words = vocabulary()
    tokenizer, qtok = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    return build_model(preset, tokenizer, seed=0).eval(), build_processor(preset, tokenizer, qtok)


def examples(n: int = 3) -> list[Example]:
    prompts = ["What?", "What colour is the circle?", "Is there a red square left of the circle?"]
    return [Example(id=str(i), task="vqa", image=render(split_scene("test", i), 16), prompt=prompts[i % 3],
                    answers=["red"]) for i in range(n)]  # fmt: skip


def batch(model, processor, *, labels: bool):
    decoder_only = bool(model.config.use_decoder_only_language_model)
    inputs = collate(examples(), processor, with_labels=True, max_length=32, decoder_only=decoder_only)
    if decoder_only and not labels:
        inputs.pop("labels")  # a LLaMA forward under FastV has fewer positions than labels
    return inputs


def logits(model, inputs) -> torch.Tensor:
    with torch.no_grad():
        return model(**inputs).logits


def lm_blocks(model):
    lm = model.language_model
    return lm.model.layers if model.config.use_decoder_only_language_model else lm.encoder.block


@pytest.mark.parametrize("family", FAMILIES)
def test_ratio_zero_changes_nothing(family):
    """Dropping no token runs every gather with the identity: same logits, same answers."""
    model, processor = make(family)
    pruned = prune_image_tokens(model, 0.0, 1)
    inputs = batch(model, processor, labels=family == "t5")
    torch.testing.assert_close(logits(pruned, inputs), logits(model, inputs), rtol=1e-5, atol=1e-5)
    assert kept_positions(pruned).shape[1] == inputs["input_ids"].shape[1]
    assert generate_answers(pruned, processor, examples()) == generate_answers(model, processor, examples())


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("layer", [0, 1])
def test_fastv_keeps_the_most_attended_image_tokens_and_equals_masking_the_rest(family, layer):
    """The kept image tokens are the top ones by the attention HF's eager attention says they receive at layer
    k; and FastV gives the logits of the full model whose later layers (and T5's cross-attention) mask the
    dropped tokens out as keys, which is what dropping them means."""
    model, processor = make(family)
    model.set_attn_implementation("eager")  # to read HF's own attention probabilities
    pruned = prune_image_tokens(model, 0.5, layer)
    inputs = batch(model, processor, labels=family == "t5")
    fast = logits(pruned, inputs)
    kept = kept_positions(pruned)  # (B, T')
    image = inputs["input_ids"] == model.config.image_token_id
    valid = inputs["attention_mask"].bool()
    batch_size, length = image.shape
    assert kept.shape == (batch_size, length - QUERIES // 2)

    with torch.no_grad():
        out = model(**inputs, output_attentions=True).language_model_outputs
    attentions = out.attentions if family == "llama" else out.encoder_attentions
    probs = attentions[layer].mean(dim=1)  # (B, T, T)
    received = (probs * valid[:, :, None]).sum(dim=1) / valid.sum(dim=1, keepdim=True)
    expected = torch.topk(received.masked_fill(~image, -1.0), QUERIES // 2, dim=1).indices
    for row in range(batch_size):
        kept_images = {int(i) for i in kept[row] if image[row, i]}
        assert kept_images == {int(i) for i in expected[row]}
        assert {int(i) for i in kept[row] if not image[row, i]} == set(range(length)) - set(torch.where(image[row])[0].tolist())

    keys = torch.zeros(batch_size, length, dtype=torch.bool).scatter(1, kept, True) & valid  # attended keys after k
    if family == "llama":
        keys = keys[:, None, :] & torch.ones(length, length, dtype=torch.bool).tril()  # (B, T, T) with causality
    else:
        keys = keys[:, None, :].expand(-1, length, -1)
    additive = torch.zeros(batch_size, 1, length, length).masked_fill(~keys[:, None], torch.finfo(torch.float32).min)

    def mask_later_block(module, args, kwargs):
        if family == "llama":
            return args, {**kwargs, "attention_mask": additive}
        return (args[0], additive, *args[2:]), kwargs

    def mask_cross_attention(module, args, kwargs):
        return args, {**kwargs, "encoder_attention_mask": (keys[:, 0] if family == "t5" else None)}

    handles = [b.register_forward_pre_hook(mask_later_block, with_kwargs=True) for b in lm_blocks(model)[layer + 1 :]]
    if family == "t5":
        handles.append(model.language_model.decoder.register_forward_pre_hook(mask_cross_attention, with_kwargs=True))
    try:
        reference = logits(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    full = logits(model, inputs)
    if family == "llama":  # the prefill's logits exist only at the kept positions; padding rows are noise
        at_kept = valid.gather(1, kept)
        reference = torch.gather(reference, 1, kept[:, :, None].expand(-1, -1, reference.shape[-1]))[at_kept]
        full = torch.gather(full, 1, kept[:, :, None].expand(-1, -1, full.shape[-1]))[at_kept]
        fast = fast[at_kept]
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(fast, full, rtol=1e-3, atol=1e-3)  # and dropping the tokens did change the output


@pytest.mark.parametrize("family", FAMILIES)
def test_saved_fastv_is_restored_by_explore_and_ignored_by_plain_from_pretrained(family, tmp_path):
    model, processor = make(family)
    pruned = prune_image_tokens(model, 0.5, 0)
    inputs = batch(model, processor, labels=family == "t5")
    before, answers = logits(pruned, inputs), generate_answers(pruned, processor, examples())
    save_model(pruned, processor, tmp_path / "m")
    again, again_processor = load_model(tmp_path / "m")
    assert again.config.explore_fastv == {"ratio": 0.5, "layer": 0}
    assert torch.equal(logits(again, inputs), before)
    assert generate_answers(again, again_processor, examples()) == answers
    plain = InstructBlipForConditionalGeneration.from_pretrained(tmp_path / "m").eval()  # no hooks: the full model
    torch.testing.assert_close(logits(plain, inputs), logits(model, inputs), rtol=0, atol=0)
    if family == "t5":
        assert not torch.allclose(logits(plain, inputs), before)


@pytest.mark.parametrize("family", FAMILIES)
def test_fastv_generates_the_same_answers_batched_and_one_by_one(family):
    """Padding (LLaMA: left, T5: right) is no query in the ranking, and the KV cache of the later layers holds
    only the kept tokens: each answer is the same alone as in a padded batch."""
    model, processor = make(family)
    pruned = prune_image_tokens(model, 0.5, 0)
    batched = generate_answers(pruned, processor, examples(), max_new_tokens=6)
    alone = [generate_answers(pruned, processor, [example], max_new_tokens=6)[0] for example in examples()]
    assert batched == alone


def test_fastv_errors():
    llama, processor = make("llama")
    with pytest.raises(ExploreError, match="choose 0 <= layer <= 1"):
        prune_image_tokens(llama, 0.5, 2)  # after the last of 3 decoder layers nothing is saved
    with pytest.raises(ExploreError, match="must be in \\[0, 1\\)"):
        prune_image_tokens(llama, 1.0, 0)
    pruned = prune_image_tokens(llama, 0.5, 0)
    with pytest.raises(ExploreError, match="fine-tune without FastV"):
        logits(pruned, batch(llama, processor, labels=True))
    t5, _ = make("t5")
    prune_image_tokens(t5, 0.5, 2)  # T5: after the last encoder block the decoder still reads fewer tokens
