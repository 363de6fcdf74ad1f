"""Layer-wise distillation (hidden states, attention) on tiny T5- and LLaMA-backed InstructBLIPs: zero for a copy,
aligned across query counts and depths, and a shallower student learns the teacher's states."""

import copy
from dataclasses import replace

import pytest
import torch

from explore.adapt.finetune import finetune
from explore.adapt.layerwise import (
    attention_loss,
    eager_attention,
    forward_options,
    hidden_state_loss,
    layer_map,
    lm_streams,
)
from explore.compress.depth import drop_layers
from explore.compress.queries import prune_queries
from explore.errors import ConfigError, ExploreError
from explore.models.build import build_model, build_processor
from explore.models.collate import collate
from explore.models.presets import get_preset
from explore.models.tokenizer import build_word_tokenizer
from explore.world.vocabulary import vocabulary

FAMILIES = ["t5", "llama"]


def make_deep(family: str):
    """Two LM layers in each stack (T5: encoder and decoder), so that a student can lose one."""
    preset = replace(get_preset(f"tiny-{family}"), name=f"tiny-{family}-2", lm_layers=2,
                     lm_decoder_layers=2 if family == "t5" else 0)  # fmt: skip
    words = vocabulary()
    tokenizer, qtok = build_word_tokenizer(words), build_word_tokenizer(words, image_token=False)
    return build_model(preset, tokenizer, seed=0), build_processor(preset, tokenizer, qtok)


def shallower(model, family: str):
    """The model without its first LM layer (T5: of the encoder and of the decoder)."""
    if family == "llama":
        return drop_layers(model, "lm_decoder", [0])
    return drop_layers(drop_layers(model, "lm_encoder", [0]), "lm_decoder", [0])


@pytest.mark.parametrize("student, teacher, expected", [(2, 4, [1, 3]), (3, 3, [0, 1, 2]), (1, 3, [2]),
                                                        (2, 3, [0, 2]), (3, 4, [0, 1, 3])])  # fmt: skip
def test_layer_map_is_uniform_and_last_meets_last(student, teacher, expected):
    assert layer_map(student, teacher) == expected


def test_layer_map_refuses_a_deeper_student():
    with pytest.raises(ExploreError, match="between 1 and 2 layers"):
        layer_map(3, 2)


def streams(model, processor, examples):
    decoder_only = bool(model.config.use_decoder_only_language_model)
    batch = collate(examples, processor, with_labels=True, max_length=32, decoder_only=decoder_only)
    with torch.no_grad(), eager_attention(model):
        output = model(**batch, **forward_options(hidden=True, attention=True))
    return lm_streams(output, batch, decoder_only=decoder_only, image_token_id=model.config.image_token_id)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_copy_has_zero_transfer_loss_and_another_model_does_not(tiny_factory, fixed_examples, family):
    teacher, processor = tiny_factory(family, seed=0)
    same = streams(copy.deepcopy(teacher), processor, fixed_examples)
    reference = streams(teacher, processor, fixed_examples)
    assert hidden_state_loss(same, reference).item() == pytest.approx(0.0, abs=1e-10)
    assert attention_loss(same, reference).item() == pytest.approx(0.0, abs=1e-7)
    other, other_processor = tiny_factory(family, seed=1)
    different = streams(other, other_processor, fixed_examples)
    assert hidden_state_loss(different, reference).item() > 0.1
    assert attention_loss(different, reference).item() > 1e-3
    assert teacher.config._attn_implementation == "sdpa"  # eager only inside the block


@pytest.mark.parametrize("family", FAMILIES)
def test_transfer_lines_up_across_query_counts_and_depths(tiny_factory, fixed_examples, family):
    """Fewer image tokens and fewer LM layers in the student: the text positions and the layer map still line up;
    keeping every query and layer gives zero, so only the alignment is tested."""
    teacher, processor = tiny_factory(family)
    student, student_processor = prune_queries(teacher, processor, 2)
    fewer = streams(student, student_processor, fixed_examples)
    reference = streams(teacher, processor, fixed_examples)
    assert [s["text"].sum().item() for s in fewer] == [t["text"].sum().item() for t in reference]
    assert torch.isfinite(hidden_state_loss(fewer, reference)) and hidden_state_loss(fewer, reference) > 0
    assert torch.isfinite(attention_loss(fewer, reference)) and attention_loss(fewer, reference) > 0
    deep, deep_processor = make_deep(family)
    shallow_streams = streams(shallower(deep, family), deep_processor, fixed_examples)
    deep_streams = streams(deep, deep_processor, fixed_examples)
    assert [len(s["hidden"]) for s in shallow_streams] == [1] * len(deep_streams)
    assert [len(s["hidden"]) for s in deep_streams] == [2] * len(deep_streams)
    assert 0 < hidden_state_loss(shallow_streams, deep_streams) < float("inf")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("hidden, attention", [(1.0, 0.0), (0.0, 100.0)])  # attention KL starts ~3e-3: weigh it up
def test_a_shallower_student_learns_the_teachers_states(tiny_factory, fixed_data, quick_config, family, hidden,
                                                        attention):  # fmt: skip
    teacher, processor = make_deep(family)
    student = shallower(teacher, family)
    config = quick_config("full", steps=12, components=["lm"], lr=1e-2, distill_weight=0.0,
                          distill_hidden_weight=hidden, distill_attention_weight=attention)  # fmt: skip
    result = finetune(student, processor, config, teacher=teacher, data=fixed_data, progress=False)
    losses = result.layerwise_losses
    assert len(losses) == 12 and losses[0] > 0
    assert losses[-1] < 0.7 * losses[0], losses
    assert result.summary()["layerwise_loss_end"] is not None
    assert student.config._attn_implementation == teacher.config._attn_implementation == "sdpa"  # restored


def test_layerwise_weights_need_a_teacher(tiny_factory, fixed_data, quick_config):
    model, processor = tiny_factory("t5")
    config = quick_config("full", steps=1, distill_hidden_weight=1.0)
    assert config.needs_teacher
    with pytest.raises(ConfigError, match="no teacher was given"):
        finetune(model, processor, config, data=fixed_data, progress=False)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_student_with_fastv_is_compared_at_its_kept_text_positions(fixed_examples, family):
    """FastV drops image tokens inside the student's LM: its later layers read fewer tokens, and the text
    positions among the kept ones line up with the teacher's. T5 with FastV after its last encoder block has
    the teacher's encoder states exactly (only the decoder's cross-attention reads fewer tokens)."""
    from explore.compress.fastv import prune_image_tokens
    from explore.models.fastv import kept_positions

    teacher, processor = make_deep(family)
    student = prune_image_tokens(teacher, 0.5, 1 if family == "t5" else 0)
    decoder_only = family == "llama"
    batch = collate(fixed_examples, processor, with_labels=True, max_length=32, decoder_only=decoder_only)
    if decoder_only:
        batch.pop("labels")  # a LLaMA forward under FastV has fewer positions than labels
        batch["labels"] = None
    options = forward_options(hidden=True, attention=True)
    with torch.no_grad(), eager_attention(student, teacher):
        mine, theirs = student(**batch, **options), teacher(**batch, **options)
    kept = kept_positions(student)
    assert kept is not None and kept.shape[1] < batch["input_ids"].shape[1]
    image_token = teacher.config.image_token_id
    if not decoder_only:
        student_streams = lm_streams(mine, batch, decoder_only=False, image_token_id=image_token, kept=kept)
        teacher_streams = lm_streams(theirs, batch, decoder_only=False, image_token_id=image_token)
        assert hidden_state_loss(student_streams[:1], teacher_streams[:1]).item() == pytest.approx(0.0, abs=1e-10)
        assert hidden_state_loss(student_streams[1:], teacher_streams[1:]).item() > 0
    else:
        student_streams = lm_streams(mine, {**batch, "labels": None}, decoder_only=True, image_token_id=image_token,
                                     kept=kept)  # fmt: skip
        teacher_streams = lm_streams(theirs, batch, decoder_only=True, image_token_id=image_token)
        assert 0 < hidden_state_loss(student_streams, teacher_streams).item() < float("inf")
    assert torch.isfinite(attention_loss(student_streams, teacher_streams))
    with pytest.raises(ExploreError, match="pass the FastV kept positions"):
        hidden_state_loss(lm_streams(mine, batch, decoder_only=decoder_only, image_token_id=image_token),
                          teacher_streams)  # fmt: skip
