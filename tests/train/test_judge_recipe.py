"""The second recipe of the embedded model: a grown vocabulary and Q-Former, weights copied from the
first recipe's model (model.init_from), relation-heavy VQA and judge pairs in the official prompt."""

from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError

from explore.data.judge_prompt import JUDGE_PROMPT_TEMPLATE
from explore.eval.metrics.rewardbench import parse_judgment
from explore.models.loading import load_model
from explore.train import loop
from explore.train.config import TrainConfig
from explore.train.stream import WorldStream

ROOT = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, **changes) -> TrainConfig:
    data = yaml.safe_load((ROOT / "configs/pretrain/tiny-t5.yaml").read_text())
    data["stages"] = data["stages"][:1]
    data["output_dir"] = str(tmp_path / "run")
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if field:
            data[section][field] = value
        else:
            data[section] = value
    return TrainConfig.model_validate(data)


def test_official_judge_examples_parse_to_the_faithful_answer_in_both_orders():
    stream = WorldStream({"judge_official": 1.0}, templates=True, resolution=16)
    examples = stream.batch(0, 40)
    positions = set()
    for example in examples:
        assert example.prompt.startswith(JUDGE_PROMPT_TEMPLATE[:60])
        assert f"Answer 1: {example.responses[0]}" in example.prompt
        assert f"Answer 2: {example.responses[1]}" in example.prompt
        assert parse_judgment(example.answers[0]) == example.preferred
        positions.add(example.preferred)
    assert positions == {0, 1}


def test_relation_task_asks_relations_where_the_scene_allows():
    examples = WorldStream({"relation": 1.0}, templates=True, resolution=16).batch(0, 40)
    relations = [e for e in examples if e.category == "relation"]
    # a scene that cannot support one (one object; no aligned pair for a "where" question) falls back
    # to the usual question cycle
    assert len(relations) >= 20
    assert not any(e.category == "relation" for e in examples if len(e.meta["scene"]["objects"]) == 1)


def test_init_from_copies_the_old_weights_into_the_grown_model_and_trains(tmp_path):
    first = loop.pretrain(config(tmp_path / "a"), progress=False)
    old, old_processor = load_model(first)
    second = config(tmp_path / "b", **{"model.init_from": str(first), "data.judge_vocabulary": True,
                                       "stages": [{"name": "judge", "steps": 3, "batch_size": 4, "warmup_steps": 1,
                                                   "trainable": ["qformer", "query_tokens", "projection", "lm"],
                                                   "tasks": {"relation": 0.5, "judge_official": 0.5}}]})  # fmt: skip
    grown, processor = loop.build_fresh(second)
    assert len(processor.tokenizer) > len(old_processor.tokenizer)
    assert processor.tokenizer.unk_token_id not in processor.tokenizer("Overall Judgment: Answer 2 is better.")["input_ids"]
    new_state = grown.state_dict()
    for name, tensor in old.state_dict().items():
        assert torch.equal(new_state[name][: tensor.shape[0]], tensor), name
    final = loop.pretrain(second, progress=False)
    trained, _ = load_model(final)
    assert trained.language_model.shared.weight.shape[0] == len(processor.tokenizer)


def test_judge_official_needs_the_judge_vocabulary(tmp_path):
    stages = [{"name": "j", "steps": 2, "warmup_steps": 1, "trainable": ["lm"], "tasks": {"judge_official": 1.0}}]
    with pytest.raises(ValidationError, match="judge_vocabulary"):
        config(tmp_path, stages=stages)


def test_init_from_refuses_a_model_whose_tensors_cannot_grow(tmp_path):
    first = loop.pretrain(config(tmp_path / "a"), progress=False)
    other = config(tmp_path / "b", **{"model.init_from": str(first), "model.preset": "tiny-llama"})
    with pytest.raises(Exception, match="init_from"):
        loop.build_fresh(other)


def test_a_finished_recipe_extended_by_a_stage_resumes_and_equals_the_whole_run(tmp_path):
    """The embedded model's recipe grew a stage after its first stage had run: `--resume latest` with the
    longer config runs only the new stage, and ends with the weights of the longer config run at once."""
    first_stage = yaml.safe_load((ROOT / "configs/pretrain/tiny-t5.yaml").read_text())["stages"][0]
    added = {"name": "judge", "steps": 3, "batch_size": 4, "warmup_steps": 1,
             "trainable": ["qformer", "query_tokens", "projection", "lm"], "tasks": {"judge_stepwise": 1.0}}  # fmt: skip
    short = config(tmp_path / "extended", **{"data.judge_vocabulary": True})
    loop.pretrain(short, progress=False)
    longer = config(tmp_path / "extended", **{"data.judge_vocabulary": True, "stages": [first_stage, added]})
    extended = load_model(loop.pretrain(longer, resume="latest", progress=False))[0].state_dict()
    whole = config(tmp_path / "whole", **{"data.judge_vocabulary": True, "stages": [first_stage, added]})
    reference = load_model(loop.pretrain(whole, progress=False))[0].state_dict()
    assert all(torch.equal(reference[name], extended[name]) for name in reference)
    changed = config(tmp_path / "extended", **{"data.judge_vocabulary": True,
                                               "stages": [{**first_stage, "lr": 0.5}, added]})  # fmt: skip
    with pytest.raises(Exception, match="lr"):
        loop.pretrain(changed, resume="latest", progress=False)


def test_stepwise_judge_targets_check_each_answer_then_give_the_official_verdict():
    examples = WorldStream({"judge_stepwise": 1.0}, templates=True, resolution=16).batch(0, 20)
    for example in examples:
        target = example.answers[0]
        assert parse_judgment(target) == example.preferred
        for k, response in enumerate(example.responses):
            accurate = "yes" if k == example.preferred else "no"
            assert f"Answer {k + 1}: {response} Accuracy: {accurate}." in target
