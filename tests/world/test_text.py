import re

import numpy as np
import pytest

from explore.world.scene import COLOURS, SHAPES, SIZES
from explore.world.text import (
    CAPTION_STYLES,
    DIRECTIONS,
    POSITIONS,
    QUESTION_TEMPLATES,
    QUESTION_TYPES,
    ask,
    caption,
    parse_caption,
    scene_facts,
    words,
)
from explore.world.vocabulary import vocabulary


def _fill(template: str, question: str) -> dict | None:
    """Invert a question template: the values of its placeholders in `question`, or None."""
    pattern = re.escape(template)
    pattern = pattern.replace(re.escape("{rel}"), "(?P<rel>left of|right of|above|below)")
    for name in ("ref", "x", "obj", "a", "b"):
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>.+?)")
    m = re.fullmatch(pattern, question)
    return m.groupdict() if m else None


def _parse(qtype: str, question: str) -> dict:
    keys = ("relation_where", "relation_yesno") if qtype == "relation" else (qtype,)
    for key in keys:
        for template in sorted(QUESTION_TEMPLATES[key], key=len, reverse=True):  # most specific first
            values = _fill(template, question)
            if values is not None:
                return {"form": key, **values}
    raise AssertionError(f"question matches no template: {question!r}")


@pytest.mark.parametrize("qtype", QUESTION_TYPES)
def test_every_question_type_is_answered_correctly(qtype, many_scenes, oracle):
    """An independent oracle parses each question, finds its objects and recomputes the answer."""
    rng = np.random.default_rng(0)
    answered = 0
    for scene in many_scenes:
        qa = ask(scene, qtype, rng)
        if qa is None:
            assert qtype == "relation"
            continue
        answered += 1
        p = _parse(qtype, qa.question)
        if qtype in ("colour", "shape", "size", "position"):
            objs = oracle.resolve(scene, p["ref"])
            assert len(objs) == 1, (qa, scene)
            expected = {"colour": objs[0].colour, "shape": objs[0].shape, "size": objs[0].size,
                        "position": objs[0].position}[qtype]  # fmt: skip
        elif qtype == "count":
            expected = str(oracle.count_noun(scene, p["x"]))
        elif qtype == "exist":
            expected = "yes" if oracle.resolve(scene, p["obj"]) else "no"
        else:
            (a,), (b,) = oracle.resolve(scene, p["a"]), oracle.resolve(scene, p["b"])
            if p["form"] == "relation_yesno":
                rel = {"left of": "left", "right of": "right", "above": "above", "below": "below"}[p["rel"]]
                truth = {"left": a.x < b.x, "right": a.x > b.x, "above": a.y < b.y, "below": a.y > b.y}[rel]
                expected = "yes" if truth else "no"
            else:  # where: a and b share a row or a column, the answer names the other axis
                if a.cell[0] == b.cell[0]:
                    expected = "left" if a.x < b.x else "right"
                else:
                    assert a.cell[1] == b.cell[1]
                    expected = "above" if a.y < b.y else "below"
        assert qa.answer == expected, (qa, scene)
    assert answered >= len(many_scenes) // 2


def test_answers_cover_their_domains(many_scenes):
    rng = np.random.default_rng(1)
    seen = {q: set() for q in QUESTION_TYPES}
    for scene in many_scenes:
        for qtype in QUESTION_TYPES:
            qa = ask(scene, qtype, rng)
            if qa:
                seen[qtype].add(qa.answer)
    assert seen["colour"] == set(COLOURS) and seen["shape"] == set(SHAPES) and seen["size"] == set(SIZES)
    assert seen["exist"] == {"yes", "no"} and seen["position"] == set(POSITIONS)
    assert seen["relation"] == {"yes", "no", *DIRECTIONS}
    assert {"0", "1", "2", "3", "4"} <= seen["count"]


@pytest.mark.parametrize("style", CAPTION_STYLES)
def test_captions_recover_the_scene_exactly(style, many_scenes):
    for scene in many_scenes:
        assert parse_caption(caption(scene, style)) == scene_facts(scene)


def test_vocabulary_covers_generated_text(many_scenes):
    from explore.world.examples import world_examples

    vocab = set(vocabulary())
    for task in ("vqa", "caption", "judge"):
        for ex in world_examples("train", 200, task):
            for text in [ex.prompt, *ex.answers, *ex.responses]:
                assert set(words(text)) <= vocab, text


def test_unknown_question_type():
    from explore.world.scene import sample_scene

    with pytest.raises(ValueError, match="unknown question type"):
        ask(sample_scene(0), "texture", np.random.default_rng(0))
