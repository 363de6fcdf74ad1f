"""The query-attribute auxiliary loss (explore.train.attributes): its targets, its head and a stage that trains it."""

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file

from explore.data.example import Example
from explore.errors import ExploreError
from explore.models.loading import load_model
from explore.train import loop
from explore.train.attributes import ATTRIBUTE_HEAD_FILE, COLOUR_NAMES, IGNORE, AttributeHead, attribute_targets
from explore.world import SHAPES


def vqa(category: str, prompt: str, answer: str) -> Example:
    return Example(id="x", task="vqa", image=None, prompt=prompt, answers=[answer], category=category)


def test_targets_name_the_one_object_a_question_is_about_and_ignore_the_rest():
    examples = [
        vqa("shape", "What shape is the cyan object?", "circle"),  # the answer and the named colour
        vqa("colour", "The star is what colour?", "orange"),  # the answer and the named shape
        vqa("size", "Tell me the size of the purple square.", "small"),  # both from the question
        vqa("position", "Where is the blue triangle located?", "bottom right"),
        vqa("exist", "Does the picture show a green diamond?", "yes"),
        vqa("exist", "Does the picture show a green diamond?", "no"),  # not in the scene: nothing
        vqa("shape", "Name the shape of the object at the bottom right.", "triangle"),  # no colour named
        vqa("relation", "Is the blue square above the red diamond?", "no"),  # two objects: nothing
        vqa("count", "Count the red objects.", "2"),
        vqa("colour", "What colour is the object at the left?", "teal"),  # not a named colour: nothing
        Example(id="c", task="caption", image=None, prompt="Describe the image.", answers=["a red circle"]),
    ]
    shapes, colours = attribute_targets(examples)
    s, c = SHAPES.index, COLOUR_NAMES.index
    assert shapes.tolist() == [s("circle"), s("star"), s("square"), s("triangle"), s("diamond"), IGNORE, s("triangle"),
                               IGNORE, IGNORE, IGNORE, IGNORE]  # fmt: skip
    assert colours.tolist() == [c("cyan"), c("orange"), c("purple"), c("blue"), c("green"), IGNORE, IGNORE, IGNORE,
                                IGNORE, IGNORE, IGNORE]  # fmt: skip


def test_the_head_reads_both_attributes_linearly_and_is_zero_without_targets():
    head = AttributeHead(num_query_tokens=2, hidden_size=3)
    queries = torch.randn(4, 2, 3, requires_grad=True)
    shapes, colours = torch.tensor([0, IGNORE, 2, IGNORE]), torch.tensor([1, 3, IGNORE, IGNORE])
    flat = queries.flatten(1)
    expected = torch.nn.functional.cross_entropy(head.shape(flat[[0, 2]]), shapes[[0, 2]]) + \
        torch.nn.functional.cross_entropy(head.colour(flat[[0, 1]]), colours[[0, 1]])  # fmt: skip
    assert torch.allclose(head.loss(queries, shapes, colours), expected)
    none = head.loss(queries, torch.full((4,), IGNORE), torch.full((4,), IGNORE))
    none.backward()  # a batch without targets still has a graph
    assert none.item() == 0.0 and queries.grad is not None and not queries.grad.any()


def test_an_attribute_loss_stage_trains_keeps_its_head_for_a_resume_and_saves_a_plain_model(
    tmp_path: Path, tiny_config
):
    stage = {"name": "vqa", "steps": 4, "batch_size": 8, "warmup_steps": 1, "attribute_loss": 1.0,
             "trainable": ["qformer", "query_tokens", "projection", "lm"], "tasks": {"vqa": 1.0}}  # fmt: skip
    whole = tiny_config(tmp_path / "whole", [stage], checkpoint_every=2, keep_checkpoints=2)
    final = loop.pretrain(whole, progress=False)
    checkpoints = tmp_path / "whole/run/checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-0000002", "step-0000004"]  # keep_checkpoints: 2
    checkpoint = checkpoints / "step-0000004"
    assert not list(final.glob("attribute_head*")) and (checkpoint / ATTRIBUTE_HEAD_FILE).is_file()
    model = load_model(final)[0]
    head = loop._attribute_head(model, whole, checkpoint)  # what a resume of this stage loads
    saved = load_file(checkpoint / ATTRIBUTE_HEAD_FILE)
    assert all(torch.equal(head.state_dict()[k], saved[k]) for k in saved)
    assert not torch.equal(loop._attribute_head(model, whole, None).shape.weight, saved["shape.weight"])  # it trained
    with pytest.raises(ExploreError, match="attribute_loss stage"):
        loop._attribute_head(model, whole, final)
    # a resume from the earlier checkpoint reloads its head and ends with the uninterrupted run's weights
    resumed = load_model(loop.pretrain(whole, resume=str(checkpoints / "step-0000002"), progress=False))[0].state_dict()
    assert all(torch.equal(resumed[n], t) for n, t in model.state_dict().items())
    plain = tiny_config(tmp_path / "plain", [{**stage, "attribute_loss": 0.0}])
    other = load_model(loop.pretrain(plain, progress=False))[0].state_dict()
    assert any(not torch.equal(t, other[n]) for n, t in model.state_dict().items())  # the loss reaches the weights
    with pytest.raises(ValidationError, match="attribute_loss"):
        tiny_config(tmp_path / "x", [{**stage, "tasks": {"caption": 1.0}}])
