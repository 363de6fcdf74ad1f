"""Distillation from the original model: answer logits line up across query counts; the KL is 0 for a copy and falls."""

import copy

import pytest
import torch

from explore.adapt.distill import answer_logits, distillation_kl, distillation_loss
from explore.adapt.finetune import finetune
from explore.compress.queries import prune_queries
from explore.errors import ExploreError
from explore.models.collate import IGNORE_INDEX, collate

FAMILIES = ["t5", "llama"]


@pytest.mark.parametrize("family", FAMILIES)
def test_answer_logits_pick_the_answer_tokens_whatever_the_query_count(tiny_factory, fixed_examples, family):
    model, processor = tiny_factory(family)
    _, fewer = prune_queries(model, processor, 2)
    decoder_only = family == "llama"
    picked = []
    for proc in (processor, fewer):
        batch = collate(fixed_examples, proc, with_labels=True, max_length=32, decoder_only=decoder_only)
        labels = batch["labels"]
        # stand-in logits that put all mass on the token each position predicts (LLaMA: the next input token)
        targets = torch.cat([batch["input_ids"][:, 1:], batch["input_ids"][:, :1]], 1) if decoder_only else labels
        logits = torch.nn.functional.one_hot(targets.clamp(min=0), 200).float()
        picked.append(answer_logits(logits, labels, decoder_only=decoder_only).argmax(-1))
        answers = torch.cat([row[row != IGNORE_INDEX] for row in labels])
        assert torch.equal(picked[-1], answers)  # each answer token (and eos), in order
    if decoder_only:  # the prefixes differ by 2 placeholders, the picked answers do not
        assert picked[0].shape == picked[1].shape


def test_kl_is_zero_for_equal_logits_and_the_mix_follows_the_weight():
    student = torch.randn(5, 7)
    assert distillation_kl(student, student.clone(), 2.0).item() == pytest.approx(0.0, abs=1e-6)
    teacher = torch.randn(5, 7)
    ce = torch.tensor(3.0)
    loss, kl = distillation_loss(ce, student, teacher, weight=0.25, temperature=2.0)
    assert kl > 0 and loss.item() == pytest.approx(0.75 * 3.0 + 0.25 * 4.0 * kl.item())
    with pytest.raises(ExploreError, match="same LM tokenizer"):
        distillation_kl(student, torch.randn(4, 7), 1.0)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_copy_of_the_teacher_has_zero_kl(tiny_factory, fixed_data, quick_config, family):
    teacher, processor = tiny_factory(family)
    student = copy.deepcopy(teacher)
    result = finetune(student, processor, quick_config("full", steps=1, distill_weight=1.0), teacher=teacher,
                      data=fixed_data, progress=False)  # fmt: skip
    assert result.distill_losses[0] == pytest.approx(0.0, abs=1e-6)
    assert result.losses[0] == pytest.approx(0.0, abs=1e-5)  # w = 1: only the KL term


@pytest.mark.parametrize("family", FAMILIES)
def test_student_with_fewer_queries_learns_the_teacher(tiny_factory, fixed_data, quick_config, family):
    teacher, teacher_processor = tiny_factory(family, seed=0)
    other, other_processor = tiny_factory(family, seed=1)
    student, student_processor = prune_queries(other, other_processor, 2)
    config = quick_config("lora", steps=20, distill_weight=1.0, distill_temperature=1.0)
    result = finetune(student, student_processor, config, teacher=teacher, teacher_processor=teacher_processor,
                      data=fixed_data, progress=False)  # fmt: skip
    assert len(result.distill_losses) == 20 and result.distill_losses[0] > 0.05
    assert result.distill_losses[-1] < 0.7 * result.distill_losses[0], result.distill_losses
    assert teacher.query_tokens.shape[1] == 4 and not any(p.grad is not None for p in teacher.parameters())


def test_teacher_at_another_resolution_sees_its_own_renders(tiny_factory, quick_config, monkeypatch):
    from explore.adapt import finetune as finetune_module
    from explore.compress.resolution import change_resolution

    streams = []
    real = finetune_module._world_stream

    def recording(config, resolution):
        streams.append(resolution)
        return real(config, resolution)

    monkeypatch.setattr(finetune_module, "_world_stream", recording)
    teacher, teacher_processor = tiny_factory("t5")
    student, student_processor = change_resolution(*tiny_factory("t5"), 24)
    config = quick_config("lora", steps=2, distill_weight=0.5, tasks={"vqa": 1})
    result = finetune(student, student_processor, config, teacher=teacher, teacher_processor=teacher_processor,
                      progress=False)  # fmt: skip
    assert streams == [24, 16]  # the same scenes, rendered for each model at its own size
    assert len(result.distill_losses) == 2 and all(torch.isfinite(torch.tensor(result.losses)))


def test_teacher_with_another_tokenizer_is_refused(tiny_factory, fixed_data, quick_config):
    from explore.models.build import build_processor
    from explore.models.tokenizer import build_word_tokenizer

    student, processor = tiny_factory("t5")
    words = ["what", "colour", "is", "it"]
    other = build_processor("tiny-t5", build_word_tokenizer(words), build_word_tokenizer(words, image_token=False))
    with pytest.raises(ExploreError, match="share one LM tokenizer"):
        finetune(student, processor, quick_config("lora", distill_weight=0.5), teacher=copy.deepcopy(student),
                 teacher_processor=other, data=fixed_data, progress=False)  # fmt: skip


def test_kept_teacher_answers_train_exactly_as_computed_ones(tiny_factory, quick_config):
    """A sweep distils several students from one teacher on one data stream: the teacher's answer logits kept
    from the first fine-tune (at the teacher's resolution) give the second student (another resolution) the very
    weights and losses it gets when its teacher runs again."""
    from explore.adapt.distill import TeacherAnswers
    from explore.compress.resolution import change_resolution

    teacher, teacher_processor = tiny_factory("t5")
    config = quick_config("full", steps=3, distill_weight=0.5, tasks={"vqa": 1, "caption": 1})

    def distil(student, student_processor, kept):
        result = finetune(student, student_processor, config, teacher=teacher, teacher_processor=teacher_processor,
                          progress=False, teacher_answers=kept)  # fmt: skip
        return result.losses, result.distill_losses, {k: v.clone() for k, v in result.model.state_dict().items()}

    kept = TeacherAnswers()
    distil(*prune_queries(*tiny_factory("t5"), 2), kept)  # the first student fills it (same resolution as the teacher)
    assert kept.hits == 0 and len(kept.by_position) == 3
    fresh = distil(*change_resolution(*tiny_factory("t5"), 24), None)
    reused = distil(*change_resolution(*tiny_factory("t5"), 24), kept)
    assert kept.hits == 3  # every batch read, none computed
    assert fresh[0] == reused[0] and fresh[1] == reused[1]
    assert all(torch.equal(fresh[2][name], reused[2][name]) for name in fresh[2])
