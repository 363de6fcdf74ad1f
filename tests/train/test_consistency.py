"""The colour-word consistency loss (explore.train.consistency): which objects it draws and a stage that trains it."""

import copy
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from explore.data.example import Example
from explore.models.loading import load_model
from explore.train import loop
from explore.train.consistency import colour_consistency_loss, consistency_views, single_object_scenes
from explore.world.scene import Obj, Scene


def example(scene: Scene | None, **meta) -> Example:
    return Example(id="x", task="vqa", image=None, prompt="q", answers=["a"],
                   meta={**({"scene": scene.to_dict()} if scene else {}), **meta})  # fmt: skip


def test_one_object_per_example_drawn_alone_never_a_recoloured_or_avoided_one():
    red_star, blue_circle = Obj("star", "red", "large", 0.2, 0.2), Obj("circle", "blue", "small", 0.8, 0.8)
    scene = Scene(objects=(red_star, blue_circle), background=(24, 24, 24))
    examples = [example(scene), example(scene), example(None), example(scene, colours=[(1, 2, 3), (4, 5, 6)])]
    assert [s.objects for s in single_object_scenes(examples)] == [(red_star,), (blue_circle,)]
    assert [s.objects for s in single_object_scenes(examples, avoid=frozenset({("red", "star")}))] == [(blue_circle,)]


def test_whole_scene_views_name_an_object_its_colour_picks_out_and_draw_it_alone_beside():
    red_star, blue_circle = Obj("star", "red", "large", 0.2, 0.2), Obj("circle", "blue", "small", 0.8, 0.8)
    blue_cross = Obj("cross", "blue", "small", 0.5, 0.5)
    one_blue = Scene(objects=(red_star, blue_circle), background=(24, 24, 24))
    two_blue = Scene(objects=(red_star, blue_circle, blue_cross), background=(24, 24, 24))
    named, alone = consistency_views([example(one_blue), example(one_blue), example(two_blue)], whole_scene=True)
    assert named == [one_blue, one_blue] and [s.objects for s in alone] == [(red_star,), (blue_circle,)]
    # the third example's object is the scene's third, a blue cross beside a blue circle: "the blue object" is ambiguous
    assert consistency_views([example(two_blue)] * 3, whole_scene=False)[0][2].objects == (blue_cross,)


def test_the_loss_pulls_the_named_instruction_to_the_unnamed_one(tmp_path: Path, tiny_config):
    stage = {"name": "vqa", "steps": 4, "batch_size": 8, "warmup_steps": 1, "colour_consistency": 1.0,
             "trainable": ["vision", "qformer", "query_tokens", "projection", "lm"], "tasks": {"vqa": 1.0}}  # fmt: skip
    trained = tiny_config(tmp_path / "a", [stage])
    model, processor = loop.build_fresh(trained)
    scene = Scene(objects=(Obj("star", "red", "large", 0.3, 0.6),), background=(24, 24, 24))
    loss = colour_consistency_loss(model, processor, [example(scene)] * 2, resolution=16)
    loss.backward()
    assert loss.item() > 0 and model.query_tokens.grad.abs().sum() > 0
    assert colour_consistency_loss(model, processor, [example(None)], resolution=16).item() == 0.0
    after = load_model(loop.pretrain(trained, progress=False))[0].state_dict()
    plain = load_model(
        loop.pretrain(tiny_config(tmp_path / "b", [{**stage, "colour_consistency": 0.0}]), progress=False)
    )[0]
    assert any(not torch.equal(t, after[n]) for n, t in plain.state_dict().items())  # the loss reaches the weights
    with pytest.raises(ValidationError):
        tiny_config(tmp_path / "c", [{**stage, "colour_consistency": -1.0}])


def test_anchored_to_a_frozen_teacher_both_reads_move_towards_its_colourless_read(tmp_path: Path, tiny_config):
    stage = {"name": "vqa", "steps": 3, "batch_size": 8, "warmup_steps": 1, "colour_consistency": 1.0,
             "trainable": ["vision", "qformer", "query_tokens", "projection", "lm"], "tasks": {"vqa": 1.0}}  # fmt: skip
    model, processor = loop.build_fresh(tiny_config(tmp_path / "a", [stage]))
    teacher = copy.deepcopy(model).requires_grad_(False)
    examples = [example(Scene(objects=(Obj("star", "red", "large", 0.3, 0.6),), background=(24, 24, 24)))] * 2
    own = colour_consistency_loss(model, processor, examples, resolution=16)
    # the teacher equals the model: its colourless read is the model's, so only the named read's error is left
    assert colour_consistency_loss(model, processor, examples, 16, teacher=teacher).item() == pytest.approx(own.item())
    with torch.no_grad():
        model.query_tokens.add_(0.5)  # the student moves; the teacher's read stays, so both errors count
    anchored = colour_consistency_loss(model, processor, examples, 16, teacher=teacher)
    assert anchored.item() > colour_consistency_loss(model, processor, examples, 16).item()
    anchored.backward()
    assert teacher.query_tokens.grad is None and model.query_tokens.grad.abs().sum() > 0

    with pytest.raises(ValidationError, match="init_from"):  # the target needs a model to come from
        tiny_config(tmp_path / "b", [{**stage, "consistency_target": "init_from"}])
    with pytest.raises(ValidationError, match="consistency_scene"):
        tiny_config(tmp_path / "b", [{**stage, "colour_consistency": 0.0, "consistency_scene": True}])
    two = Scene(objects=(Obj("star", "red", "large", 0.3, 0.6), Obj("circle", "blue", "small", 0.7, 0.2)),
                background=(24, 24, 24))  # fmt: skip
    whole = colour_consistency_loss(model, processor, [example(two)] * 2, 16, teacher=teacher, whole_scene=True)
    assert whole.item() != colour_consistency_loss(model, processor, [example(two)] * 2, 16, teacher=teacher).item()
    first = loop.pretrain(tiny_config(tmp_path / "c", [stage]), progress=False)
    model_section = {**tiny_config(tmp_path, [stage]).model.model_dump(), "init_from": str(first)}
    runs = [tiny_config(tmp_path / target, [{**stage, "consistency_target": target}], model=model_section)
            for target in ("self", "init_from")]  # fmt: skip
    own_run, anchored_run = (load_model(loop.pretrain(run, progress=False))[0].state_dict() for run in runs)
    # the teacher's read reaches the weights
    assert any(not torch.equal(t, anchored_run[n]) for n, t in own_run.items())
