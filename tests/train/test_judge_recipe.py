"""The second recipe of the embedded model: a grown vocabulary and Q-Former, weights copied from the
first recipe's model (model.init_from), relation-heavy VQA and judge pairs in the official prompt."""

from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError

from explore.data.example import Example
from explore.data.judge_prompt import JUDGE_PROMPT_TEMPLATE
from explore.eval.metrics.rewardbench import parse_judgment
from explore.models.loading import load_model
from explore.train import loop
from explore.train.config import TrainConfig
from explore.train.stream import (
    WorldStream,
    absent_judge_target,
    compared_judge_target,
    copy_judge_target,
    diff_judge_target,
    judge_claims,
    walk_judge_target,
    zip_judge_target,
)
from explore.world import HELD_OUT_PAIRS
from explore.world.scene import Scene
from explore.world.text import caption_objects, scene_facts

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


def test_a_stage_that_avoids_held_out_pairs_trains_on_a_stream_that_never_names_them(tmp_path, monkeypatch):
    """avoid_held_out_pairs reaches the stage's stream (explore.world.judge.judge_pair tests what it draws);
    another stage of the same run keeps the first recipes' data."""
    seen = []

    class Recording(WorldStream):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append(self.avoid_pairs)

    monkeypatch.setattr(loop, "WorldStream", Recording)
    stage = {"steps": 2, "batch_size": 4, "warmup_steps": 1, "trainable": ["qformer"], "tasks": {"vqa": 1.0}}
    loop.pretrain(config(tmp_path, stages=[{"name": "a", **stage}, {"name": "b", "avoid_held_out_pairs": True, **stage}]),
                  progress=False)  # fmt: skip
    assert seen == [frozenset(), HELD_OUT_PAIRS]
    stream = WorldStream({"judge_compared": 1.0, "vqa": 1.0}, templates=True, resolution=16, avoid_pairs=HELD_OUT_PAIRS)
    texts = [e.prompt + " " + " ".join(e.answers) for i in range(0, 400, 8) for e in stream.batch(i, 8)]
    assert not [t for t in texts if any(f"{c} {s}" in t.lower() for c, s in HELD_OUT_PAIRS)]


def test_init_components_copies_only_those_components(tmp_path):
    """model.init_components [vision]: the trained ViT is copied, the Q-Former and the LM keep the fresh weights of
    the same seed; without init_from or with an unknown component the config is refused."""
    first = loop.pretrain(config(tmp_path / "a"), progress=False)
    old = load_model(first)[0].state_dict()
    changes = {"model.init_from": str(first), "data.judge_vocabulary": True}
    partial, _ = loop.build_fresh(config(tmp_path / "b", **changes, **{"model.init_components": ["vision"]}))
    fresh, _ = loop.build_fresh(config(tmp_path / "c", **{"data.judge_vocabulary": True}))
    state, fresh_state = partial.state_dict(), fresh.state_dict()
    vision = [name for name in state if name.startswith(("vision_model.", "model.vision_model."))]
    assert vision and all(torch.equal(state[name], old[name]) for name in vision)
    others = [name for name in state if name not in vision]
    assert all(torch.equal(state[name], fresh_state[name]) for name in others)
    assert not all(torch.equal(old[name], fresh_state[name]) for name in others if name in old)
    with pytest.raises(ValidationError, match="init_components needs model.init_from"):
        config(tmp_path / "d", **{"model.init_components": ["vision"]})
    with pytest.raises(ValidationError, match=r"unknown \['vit'\]"):
        config(tmp_path / "e", **changes, **{"model.init_components": ["vit"]})


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


def test_compared_judge_targets_check_each_answer_last_then_give_the_official_verdict():
    examples = WorldStream({"judge_compared": 1.0}, templates=True, resolution=16).batch(0, 60)
    kinds = set()
    for example in examples:
        target = example.answers[0]
        assert example.prompt.startswith(JUDGE_PROMPT_TEMPLATE[:60])
        assert f"Answer 1: {example.responses[0]}" in example.prompt
        assert parse_judgment(target) == example.preferred
        assert target.startswith(example.meta["reason"])
        checks = ["yes" if k == example.preferred else "no" for k in range(2)]
        claims = judge_claims(example)
        for k in range(2):  # the check word ends its step, right after the two words it compares
            assert f"Answer {k + 1} : {claims[k]} compared to {claims[example.preferred]} . {checks[k]} ." in target
        verdict_line = f"Overall Judgment: Answer {example.preferred + 1} is better."
        assert target.endswith(f" {checks[0]} {checks[1]} . {verdict_line}")
        kinds.add(example.meta["kind"])
    assert kinds == {"wrong_attribute", "wrong_attribute_description", "invented_object", "wrong_count",
                     "wrong_relation"}  # fmt: skip


@pytest.mark.parametrize(
    ("responses", "kind", "reason", "claims"),
    [
        (["The circle is blue.", "The circle is red."], "wrong_attribute", "the circle is red, not blue.",
         ["blue", "red"]),
        (["There is 1 star.", "There are 3 stars."], "wrong_count", "there is 1 star, not 3.", ["1", "3"]),
        (["the image shows a small red star at the top", "the image shows a small red star at the top and a small "
          "pink square at the right"], "invented_object", "the image shows no small pink square at the right.",
         ["no pink square", "pink square"]),
    ],
)  # fmt: skip
def test_judge_claims_are_the_words_the_two_responses_differ_in(responses, kind, reason, claims):
    example = Example(id="x", task="judge", image=None, prompt="q", responses=responses, preferred=0,
                      meta={"kind": kind, "reason": reason})  # fmt: skip
    assert judge_claims(example) == claims


def test_judge_claims_refuses_responses_that_differ_in_more_than_one_word():
    example = Example(id="x", task="judge", image=None, prompt="q", preferred=0, meta={"kind": "wrong_attribute"},
                      responses=["The circle is blue.", "A square is red."])  # fmt: skip
    with pytest.raises(ValueError, match="one word"):
        judge_claims(example)


def test_located_judge_targets_name_the_wrong_claim_and_its_answer_then_the_official_verdict():
    examples = WorldStream({"judge_located": 1.0}, templates=True, resolution=16).batch(0, 40)
    for example in examples:
        target = example.answers[0]
        assert f"Answer 2: {example.responses[1]}" in example.prompt
        assert parse_judgment(target) == example.preferred
        wrong = 1 - example.preferred
        claim = judge_claims(example)[wrong]
        assert claim in example.responses[wrong]
        assert target == f"{example.meta['reason']} {claim} : Answer {wrong + 1} . Overall Judgment: Answer " \
                         f"{example.preferred + 1} is better."


def test_answer_slots_mark_each_answers_tokens_in_the_official_prompt(tmp_path):
    from explore.train.slots import answer_slots, slot_token_ids

    _, processor = loop.build_fresh(config(tmp_path, **{"data.judge_vocabulary": True}))
    tokenizer = processor.tokenizer
    example = WorldStream({"judge_compared": 1.0}, templates=True, resolution=16).batch(0, 1)[0]
    ids = tokenizer(example.prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    slots = answer_slots(ids, slot_token_ids(tokenizer))[0]
    words = tokenizer.convert_ids_to_tokens(ids[0])
    for k, response in enumerate(example.responses):  # exactly the response's words carry its slot
        marked = [w for w, s in zip(words, slots.tolist(), strict=True) if s == k + 1]
        assert marked == tokenizer.tokenize(response), (k, marked)
    assert answer_slots(tokenizer("Answer 1: a circle.", return_tensors="pt")["input_ids"], slot_token_ids(tokenizer)).sum() == 0
    from explore.models.tokenizer import build_word_tokenizer

    with pytest.raises(Exception, match="judge_vocabulary"):  # a tokenizer without the prompt's words: one clear error
        slot_token_ids(build_word_tokenizer(["circle", "square"]))


def test_a_slot_loss_stage_trains_keeps_its_head_for_a_resume_and_saves_a_plain_model(tmp_path):
    """The answer-slot head trains beside the model, is kept in checkpoints for a resume and never enters the model
    folder; the loss reaches the model's weights."""
    from safetensors.torch import load_file

    from explore.errors import ExploreError
    from explore.train.slots import SLOT_HEAD_FILE

    stage = {"name": "judge", "steps": 4, "batch_size": 4, "warmup_steps": 1, "slot_loss": 1.0,
             "trainable": ["qformer", "query_tokens", "projection", "lm"], "tasks": {"judge_compared": 1.0}}  # fmt: skip
    whole = config(tmp_path / "whole", **{"data.judge_vocabulary": True, "stages": [stage], "checkpoint_every": 2})
    final = loop.pretrain(whole, progress=False)
    checkpoint = tmp_path / "whole/run/checkpoints/step-0000004"
    assert not list(final.glob("slot_head*")) and (checkpoint / SLOT_HEAD_FILE).is_file()
    model = load_model(final)[0]
    head = loop._slot_head(model, whole, checkpoint)  # what a resume of this stage loads
    saved = load_file(checkpoint / SLOT_HEAD_FILE)
    assert all(torch.equal(head.state_dict()[k], saved[k]) for k in saved)
    assert not torch.equal(loop._slot_head(model, whole, None).proj.weight, saved["proj.weight"])  # it trained
    with pytest.raises(ExploreError, match="slot_loss stage"):
        loop._slot_head(model, whole, final)
    plain = config(tmp_path / "plain", **{"data.judge_vocabulary": True, "stages": [{**stage, "slot_loss": 0.0}]})
    reference = model.state_dict()
    other = load_model(loop.pretrain(plain, progress=False))[0].state_dict()
    assert any(not torch.equal(reference[n], other[n]) for n in reference)  # the loss reaches the LM's weights
    with pytest.raises(ValidationError, match="slot_loss"):
        config(tmp_path / "x", **{"data.judge_vocabulary": True, "stages": [{**stage, "tasks": {"vqa": 1.0}}]})


def test_description_judge_examples_are_compared_targets_of_description_pairs_only():
    stream = WorldStream({"judge_description": 1.0}, templates=True, resolution=16)
    compared = WorldStream({"judge_compared": 1.0}, templates=True, resolution=16)
    preferred, same = set(), 0
    for index in range(30):
        example = stream.example(index, "judge_description")
        assert example.meta["kind"] == "wrong_attribute_description" and example.category == "hallucination"
        assert example.prompt.startswith(JUDGE_PROMPT_TEMPLATE[:60]) and parse_judgment(example.answers[0]) == example.preferred
        claims = judge_claims(example)
        assert f"Answer 1 : {claims[0]} compared to {claims[example.preferred]} ." in example.answers[0]
        preferred.add(example.preferred)
        other = compared.example(index, "judge_compared")
        if other.meta["kind"] == "wrong_attribute_description":  # the same pair, the same target
            assert (other.prompt, other.answers) == (example.prompt, example.answers)
            same += 1
    assert preferred == {0, 1} and same >= 3


def test_world_examples_refuse_unknown_judge_kinds():
    from explore.world.examples import world_examples

    with pytest.raises(ValueError, match="unknown judge kinds"):
        world_examples("train", 1, "judge", kinds=("wrong_colour",))


def description_pairs(task: str, n: int = 80) -> list[Example]:
    """The description pairs among the first ``n`` examples of a mix of ``task`` and judge_compared; the mix's other
    pairs keep the compared target (one target format per prompt)."""
    stream = WorldStream({task: 1.0, "judge_compared": 1.0}, templates=True, resolution=16)
    pairs, compared = [], 0
    for index in range(n):
        example = stream.example(index, stream.task_of(index))
        if example.meta["kind"] in ("wrong_attribute_description", "invented_object"):
            pairs.append(example)
        else:
            assert "compared to" in example.answers[0]
            compared += 1
    assert compared >= 5 and len(pairs) >= 10
    return pairs


def test_checklist_judge_targets_walk_answer_1_and_stop_at_its_first_unfaithful_object():
    kinds, preferred = set(), set()
    for example in description_pairs("judge_checklist"):
        target = example.answers[0]
        assert example.prompt.startswith(JUDGE_PROMPT_TEMPLATE[:60])
        assert parse_judgment(target) == example.preferred
        truth = scene_facts(Scene.from_dict(example.meta["scene"]))
        named = caption_objects(example.responses[0])
        steps = target.removeprefix("Answer 1 : ").split(" Overall Judgment:")[0].split(" . ")
        checks = [step.rstrip(" .").rsplit(" ", 1) for step in steps]
        for (phrase, check), obj in zip(checks, named):  # Answer 1's objects, in its order, each checked
            assert phrase == "a {} {} {} at the {}".format(*obj) and phrase in example.responses[0]
            assert check == ("yes" if obj in truth else "no")
        # the walk ends at the first object the image does not show, or after the last when Answer 1 is faithful
        assert len(checks) == (len(named) if example.preferred == 0 else [o in truth for o in named].index(False) + 1)
        kinds.add(example.meta["kind"])
        preferred.add(example.preferred)
    assert kinds == {"wrong_attribute_description", "invented_object"} and preferred == {0, 1}


def test_checklist_judge_target_refuses_a_pair_that_is_not_two_descriptions():
    example = Example(id="x", task="judge", image=None, prompt="q", preferred=0, meta={"kind": "wrong_attribute"},
                      responses=["The circle is blue.", "The circle is red."])  # fmt: skip
    with pytest.raises(ValueError, match="not a world description pair"):
        walk_judge_target(example)


def test_read_judge_targets_write_what_the_image_shows_in_each_objects_cell_before_the_check():
    stream = WorldStream({"judge_read": 1.0}, templates=True, resolution=16)
    empty, preferred = 0, set()
    for index in range(60):
        example = stream.example(index, "judge_read")
        target = example.answers[0]
        assert parse_judgment(target) == example.preferred
        cells = {obj.position: obj for obj in Scene.from_dict(example.meta["scene"]).objects}
        steps = target.removeprefix("Answer 1 : ").split(" Overall Judgment:")[0].split(" . ")
        named = caption_objects(example.responses[0])
        assert [s.rstrip(" .") for s in steps[1::2]] == (["yes"] * (len(steps) // 2 - 1) + ["yes" if example.preferred == 0 else "no"])
        for said, (size, colour, shape, position) in zip(steps[0::2], named):
            there = cells.get(position)
            shown = "no object" if there is None else f"a {there.size} {there.colour} {there.shape}"
            assert said == f"a {size} {colour} {shape} at the {position} , the image shows {shown}"
            empty += there is None
        preferred.add(example.preferred)
    assert preferred == {0, 1} and empty >= 1
    with pytest.raises(ValidationError, match="two target formats"):
        config(ROOT, **{"data.judge_vocabulary": True,
                        "stages": [{"name": "s", "steps": 2, "batch_size": 2, "lr": 1e-4,
                                    "tasks": {"judge_checklist": 1.0, "judge_read": 1.0}}]})  # fmt: skip


def test_cell_judge_targets_read_each_cell_before_the_answers_words():
    preferred = set()
    for example in description_pairs("judge_cell", 60):
        target = example.answers[0]
        assert parse_judgment(target) == example.preferred
        cells = {obj.position: obj for obj in Scene.from_dict(example.meta["scene"]).objects}
        steps = target.removeprefix("Answer 1 : ").split(" Overall Judgment:")[0].split(" . ")
        for said, check, (size, colour, shape, position) in zip(steps[0::2], steps[1::2], caption_objects(example.responses[0])):
            there = cells.get(position)
            shown = "no object" if there is None else f"a {there.size} {there.colour} {there.shape}"
            assert said == f"at the {position} : the image shows {shown} , the answer has a {size} {colour} {shape}"
            assert check.rstrip(" .") == ("yes" if shown == f"a {size} {colour} {shape}" else "no")
        preferred.add(example.preferred)
    assert preferred == {0, 1}
    with pytest.raises(ValidationError, match="two target formats"):
        config(ROOT, **{"data.judge_vocabulary": True,
                        "stages": [{"name": "s", "steps": 2, "batch_size": 2, "lr": 1e-4,
                                    "tasks": {"judge_read": 1.0, "judge_cell": 1.0}}]})  # fmt: skip


def test_diff_judge_targets_state_the_differing_object_of_both_answers_then_read_its_cell():
    kinds, preferred = set(), set()
    for example in description_pairs("judge_diff"):
        target = example.answers[0]
        assert parse_judgment(target) == example.preferred
        stated = [set(caption_objects(response)) for response in example.responses]
        (first, second, read, checks) = target.split(" Overall Judgment:")[0].rstrip(" .").split(" . ")
        # each answer's version of the one object they differ in, in the prompt's order ("no ..." if it has none)
        for k, step in enumerate((first, second)):
            (obj,) = stated[k] - stated[1 - k] or stated[1 - k] - stated[k]
            said = "a {} {} {} at the {}".format(*obj)
            assert step == f"Answer {k + 1} : " + (said if obj in stated[k] else "no" + said.removeprefix("a"))
        there = next((o for o in Scene.from_dict(example.meta["scene"]).objects if o.position == obj[3]), None)
        shown = "no object" if there is None else f"a {there.size} {there.colour} {there.shape}"
        assert read == f"at the {obj[3]} the image shows {shown}"
        assert checks.split() == ["yes" if k == example.preferred else "no" for k in range(2)]
        kinds.add(example.meta["kind"])
        preferred.add(example.preferred)
    assert kinds == {"wrong_attribute_description", "invented_object"} and preferred == {0, 1}
    with pytest.raises(ValueError, match="not a world description pair"):
        diff_judge_target(Example(id="x", task="judge", image=None, prompt="q", preferred=0,
                                  meta={"kind": "wrong_attribute"}, responses=["The circle is blue.", "The circle is red."]))  # fmt: skip
    with pytest.raises(ValueError, match="unknown step 'diff'"):
        walk_judge_target(example, "diff")
    with pytest.raises(ValidationError, match="two target formats"):
        config(ROOT, **{"data.judge_vocabulary": True,
                        "stages": [{"name": "s", "steps": 2, "batch_size": 2, "lr": 1e-4,
                                    "tasks": {"judge_cell": 1.0, "judge_diff": 1.0}}]})  # fmt: skip


def test_zip_judge_targets_walk_both_answers_side_by_side_to_their_first_difference():
    stream = WorldStream({"judge_zip": 1.0}, templates=True, resolution=16)
    kinds, preferred, walked = set(), set(), 0
    for index in range(60):
        example = stream.example(index, "judge_zip")
        target = example.answers[0]
        assert parse_judgment(target) == example.preferred
        stated = [caption_objects(response) for response in example.responses]
        cells = {obj.position: obj for obj in Scene.from_dict(example.meta["scene"]).objects}
        steps = target.split(" Overall Judgment:")[0].split(" . Answer 1 : ")
        for k, step in enumerate(steps):  # step k: both answers' k-th objects, then "both" or the read and checks
            said = ["a {} {} {} at the {}".format(*objects[k]) if k < len(objects) else "no object" for objects in stated]
            head = f"Answer 1 : {said[0]} . Answer 2 : {said[1]}".removeprefix("Answer 1 : " if k else "")
            assert step.startswith(head)
            if said[0] == said[1]:
                assert step == head + " . both"
                walked += 1
                continue
            assert k == len(steps) - 1  # the walk stops at the first difference
            (cell,) = {objects[k][3] for j, objects in enumerate(stated) if k < len(objects) and objects[k] not in stated[1 - j]}
            there = cells.get(cell)
            shown = "no object" if there is None else f"a {there.size} {there.colour} {there.shape}"
            checks = " ".join("yes" if j == example.preferred else "no" for j in range(2))
            assert step == f"{head} . at the {cell} the image shows {shown} . {checks} ."
        kinds.add(example.meta["kind"])
        preferred.add(example.preferred)
    assert kinds == {"wrong_attribute_description", "invented_object"} and preferred == {0, 1} and walked >= 10
    with pytest.raises(ValueError, match="not a world description pair"):
        zip_judge_target(Example(id="x", task="judge", image=None, prompt="q", preferred=0,
                                 meta={"kind": "wrong_count"}, responses=["There is 1 star.", "There are 3 stars."]))  # fmt: skip


def test_copy_judge_targets_copy_the_faithful_description_then_give_the_official_verdict():
    preferred = set()
    for example in description_pairs("judge_copy"):
        copied, _ = example.answers[0].split(" . Overall Judgment:")
        assert copied == example.responses[example.preferred] != example.responses[1 - example.preferred]
        assert set(caption_objects(copied)) == scene_facts(Scene.from_dict(example.meta["scene"]))
        assert parse_judgment(example.answers[0]) == example.preferred
        preferred.add(example.preferred)
    assert preferred == {0, 1}
    with pytest.raises(ValueError, match="not a world description pair"):
        copy_judge_target(Example(id="x", task="judge", image=None, prompt="q", preferred=0,
                                  meta={"kind": "wrong_count"}, responses=["There is 1 star.", "There are 3 stars."]))  # fmt: skip


def test_absent_judge_targets_name_the_object_the_image_does_not_show_first():
    kinds, preferred = set(), set()
    for example in description_pairs("judge_absent"):
        target = example.answers[0]
        reason, _ = target.split(". Answer 1 : ")
        facts = scene_facts(Scene.from_dict(example.meta["scene"]))
        unfaithful = caption_objects(example.responses[1 - example.preferred])
        (fake,) = [obj for obj in unfaithful if obj not in facts]
        assert reason.startswith("the image shows no {} {} {} at the {}".format(*fake))
        if example.meta["kind"] == "wrong_attribute_description":
            (true,) = [obj for obj in facts if obj[3] == fake[3]]
            assert reason == "the image shows no {} {} {} at the {}, it shows a {} {} {} there".format(*fake, *true[:3])
        else:  # an invented object keeps the compared target
            assert target == compared_judge_target(example)
        assert parse_judgment(target) == example.preferred
        kinds.add(example.meta["kind"])
        preferred.add(example.preferred)
    assert kinds == {"wrong_attribute_description", "invented_object"} and preferred == {0, 1}
    with pytest.raises(ValueError, match="not a world description pair"):
        absent_judge_target(Example(id="x", task="judge", image=None, prompt="q", preferred=0,
                                    meta={"kind": "wrong_count"}, responses=["There is 1 star.", "There are 3 stars."]))  # fmt: skip
    with pytest.raises(ValueError, match="do not differ in one object's attribute"):
        absent_judge_target(Example(id="x", task="judge", image=None, prompt="q", preferred=0,
                                    meta={"kind": "wrong_attribute_description"},
                                    responses=["a small red star at the top", "a small red star at the top"]))  # fmt: skip


def test_answer_differences_mark_the_tokens_where_the_two_answers_differ(tmp_path):
    from explore.train.slots import answer_differences, answer_slots, slot_token_ids

    _, processor = loop.build_fresh(config(tmp_path, **{"data.judge_vocabulary": True}))
    tokenizer = processor.tokenizer
    stream = WorldStream({"judge_compared": 1.0}, templates=True, resolution=16)
    kinds = set()
    for example in stream.batch(0, 40):
        ids = tokenizer(example.prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        labels = answer_differences(ids, answer_slots(ids, slot_token_ids(tokenizer)))[0]
        words = tokenizer.convert_ids_to_tokens(ids[0])
        marked = [w for w, label in zip(words, labels.tolist(), strict=True) if label == 1]
        assert (labels >= 0).sum() == sum(len(tokenizer.tokenize(r)) for r in example.responses)  # the answers only
        if example.meta["kind"] == "invented_object":  # the invented object's colour and shape, in one answer only
            claim = judge_claims(example)[1 - example.preferred].split()
            assert all(w in marked for w in claim)
        else:  # the changed word (or count) of each answer, and nothing they share
            claims = judge_claims(example)
            assert all(c in marked for c in claims) and len(marked) <= 6, (marked, claims)
        kinds.add(example.meta["kind"])
    assert len(kinds) == 5
    one = tokenizer("Answer 1: a circle.", return_tensors="pt")["input_ids"]
    assert (answer_differences(one, answer_slots(one, slot_token_ids(tokenizer))) == -1).all()


def test_a_difference_loss_stage_trains_its_head_keeps_it_for_a_resume_and_saves_a_plain_model(tmp_path):
    from explore.train.slots import DIFFERENCE_HEAD_FILE

    stage = {"name": "judge", "steps": 4, "batch_size": 4, "warmup_steps": 1, "difference_loss": 1.0,
             "trainable": ["lm"], "tasks": {"judge_compared": 1.0}}  # fmt: skip
    whole = config(tmp_path / "whole", **{"data.judge_vocabulary": True, "stages": [stage], "checkpoint_every": 2})
    final = loop.pretrain(whole, progress=False)
    checkpoint = tmp_path / "whole/run/checkpoints/step-0000004"
    assert not list(final.glob("difference_head*")) and (checkpoint / DIFFERENCE_HEAD_FILE).is_file()
    model = load_model(final)[0]
    head = loop._difference_head(model, whole, checkpoint)
    assert not torch.equal(loop._difference_head(model, whole, None).proj.weight, head.proj.weight)  # it trained
    plain = config(tmp_path / "plain", **{"data.judge_vocabulary": True, "stages": [{**stage, "difference_loss": 0.0}]})
    reference = model.state_dict()
    other = load_model(loop.pretrain(plain, progress=False))[0].state_dict()
    assert any(not torch.equal(reference[n], other[n]) for n in reference)  # the loss reaches the LM's weights
    with pytest.raises(ValidationError, match="difference_loss"):
        config(tmp_path / "x", **{"data.judge_vocabulary": True, "stages": [{**stage, "tasks": {"vqa": 1.0}}]})


def test_the_difference_head_loss_weighs_both_classes_and_its_accuracy_ranks_each_row():
    from explore.train.slots import DifferenceHead

    head = DifferenceHead(2)
    with torch.no_grad():
        head.proj.weight.copy_(torch.tensor([[1.0, 0.0]]))
        head.proj.bias.zero_()
    states = torch.tensor([[[5.0, 0], [-5.0, 0], [-5.0, 0], [0.0, 0]], [[-5.0, 0], [5.0, 0], [0.0, 0], [0.0, 0]]])
    labels = torch.tensor([[1, 0, 0, -1], [1, 0, 0, -1]])
    assert head.accuracy(states, labels) == (1, 2)  # row 2 ranks a shared token first
    assert head.loss(states[:1], labels[:1]) < 0.01 < head.loss(states[1:], labels[1:])
    assert head.loss(states, torch.full_like(labels, -1)) == 0
