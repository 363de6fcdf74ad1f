"""The relation_stepwise training task (issue 14): relation questions whose target states both objects'
positions, the relation along the asked axis, then the short answer."""

import pytest
from pydantic import ValidationError

from explore.eval.scoring import final_answer
from explore.train.config import StageSection
from explore.train.stream import WorldStream
from explore.world.scene import Obj, Scene
from explore.world.text import RELATION_PHRASE, holds, relation_steps, words
from explore.world.vocabulary import vocabulary

PHRASE_TO_RELATION = {phrase: rel for rel, phrase in RELATION_PHRASE.items()}


def objects_of(example) -> tuple[Obj, Obj]:
    by_name = {obj.name: obj for obj in Scene.from_dict(example.meta["scene"]).objects}
    return by_name[example.meta["a"]], by_name[example.meta["b"]]


def test_stepwise_targets_parse_back_to_the_short_answer_for_random_scenes():
    stepwise = WorldStream({"relation_stepwise": 1.0}, templates=True, resolution=16)
    short = WorldStream({"relation": 1.0}, templates=True, resolution=16)
    forms = set()
    for index in range(60):
        example, plain = stepwise.example(index, "relation_stepwise"), short.example(index, "relation")
        assert example.prompt == plain.prompt  # same question; only the target differs
        if example.category != "relation":  # a one-object scene: the usual question cycle, short answer
            assert example.answers == plain.answers
            continue
        forms.add(example.meta["form"])
        a, b = objects_of(example)
        positions, relation, answer = example.answers[0].split(" . ")
        assert answer == plain.answers[0]
        assert positions == f"the {a.name} is at the {a.position} and the {b.name} is at the {b.position}"
        subject, _, rest = relation.removeprefix("the ").partition(" is ")
        phrase, _, reference = rest.partition(" the ")
        rel = PHRASE_TO_RELATION[phrase]
        assert (subject, reference) == (a.name, b.name) and holds(a, rel, b)
        asked = example.meta["relation"]
        if asked is None:  # a where-question: the relation sentence is the answer
            assert rel == answer
        else:  # a yes/no question: the stated relation is on the asked axis and decides the answer
            assert holds(a, asked, b) is not None and answer == ("yes" if rel == asked else "no")
    assert forms == {"yesno", "where"}


def test_stepwise_targets_use_only_the_world_vocabulary():
    known = set(vocabulary())
    stream = WorldStream({"relation_stepwise": 1.0}, templates=True, resolution=16)
    for example in stream.batch(0, 40):
        assert set(words(example.answers[0])) <= known


def test_vqa_relation_questions_are_stepwise_in_a_stepwise_mix():
    stream = WorldStream({"relation_stepwise": 0.5, "vqa": 0.5}, templates=True, resolution=16)
    examples = [stream.example(index, "vqa") for index in range(30)]
    assert any(e.category == "relation" for e in examples)
    for example in examples:
        assert (" . " in example.answers[0]) == (example.category == "relation")


def test_a_stage_refuses_relation_and_relation_stepwise_together():
    with pytest.raises(ValidationError, match="two target formats"):
        StageSection(name="s", steps=10, warmup_steps=1, trainable=["lm"], tasks={"relation": 1, "relation_stepwise": 1})


def test_relation_steps_refuses_an_axis_that_does_not_separate_the_pair():
    a = Obj("circle", "red", "small", x=0.1, y=0.1)
    b = Obj("square", "blue", "small", x=0.1, y=0.9)  # same column
    assert relation_steps(a, b, "above", "yes").endswith(" . the red circle is above the blue square . yes")
    with pytest.raises(ValueError, match="not separated"):
        relation_steps(a, b, "left", "no")


def test_relation_steps_refuses_an_unknown_sentence():
    a, b = Obj("circle", "red", "small", x=0.1, y=0.1), Obj("square", "blue", "small", x=0.9, y=0.1)
    assert relation_steps(a, b, "right", "no", "relation_last_compared").endswith(
        " . relative to the blue square the red circle is left . left compared to right . no")
    assert relation_steps(a, b, None, "left", "relation_last_compared").endswith(  # a where-question
        " . relative to the blue square the red circle is left . left")
    with pytest.raises(ValueError, match="unknown relation sentence"):
        relation_steps(a, b, "right", "no", "relation_last")


def test_relation_last_compared_yes_no_targets_compare_the_stated_and_the_asked_word():
    stepwise = WorldStream({"relation_stepwise": 1.0}, templates=True, resolution=16,
                           relation_sentence="relation_last_compared")  # fmt: skip
    short = WorldStream({"relation": 1.0}, templates=True, resolution=16)
    for index in range(60):
        example, plain = stepwise.example(index, "relation_stepwise"), short.example(index, "relation")
        if example.category != "relation":
            continue
        assert final_answer(example.answers[0]) == plain.answers[0]  # explore eval scores the last step
        asked = example.meta["relation"]
        if asked is None:
            assert len(example.answers[0].split(" . ")) == 3
            continue
        a, b = objects_of(example)
        *_, relation, compared, answer = example.answers[0].split(" . ")
        stated = relation.rsplit(" ", 1)[-1]
        assert holds(a, stated, b) and compared == f"{stated} compared to {asked}"
        assert answer == ("yes" if stated == asked else "no")
