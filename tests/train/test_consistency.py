"""The colour-word consistency loss (explore.train.consistency): which objects it draws and a stage that trains it."""

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from explore.data.example import Example
from explore.models.loading import load_model
from explore.train import loop
from explore.train.consistency import colour_consistency_loss, single_object_scenes
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
