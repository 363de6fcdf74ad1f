import re

import numpy as np
import pytest

from explore.world import HELD_OUT_PAIRS
from explore.world.judge import JUDGE_KINDS, judge_pair
from explore.world.scene import COLOURS, SHAPES, SIZES
from explore.world.text import ask, parse_caption, scene_facts

_NUMBER = re.compile(r"There (?:are|is) (\d+) (.+)\.$")
_RELATION = re.compile(r"The (.+) is (left of|right of|above|below) the (.+)\.$")
_ATTRIBUTE = re.compile(r"The (.+) is (?:a )?(\w+)\.$")


@pytest.mark.parametrize("kind", sorted(JUDGE_KINDS))
def test_judge_pairs_differ_in_the_labelled_way(kind, many_scenes, oracle):
    rng = np.random.default_rng(0)
    made = 0
    for scene in many_scenes:
        pair = judge_pair(scene, kind, rng)
        if pair is None:
            continue
        made += 1
        assert pair.category == JUDGE_KINDS[kind] and pair.chosen != pair.rejected
        if kind in ("invented_object", "wrong_attribute_description"):
            chosen, rejected = parse_caption(pair.chosen), parse_caption(pair.rejected)
            assert chosen == scene_facts(scene)
            if kind == "invented_object":
                assert chosen < rejected and len(rejected - chosen) == 1
                (size, colour, shape, position), = rejected - chosen
                assert (colour, shape) not in {(o.colour, o.shape) for o in scene.objects}
                assert position not in {o.position for o in scene.objects}
            else:
                assert len(chosen) == len(rejected) and len(rejected - chosen) == 1
                (old,), (new,) = chosen - rejected, rejected - chosen
                assert old[3] == new[3]  # same object (same position) ...
                assert sum(a != b for a, b in zip(old[:3], new[:3])) == 1  # ... one attribute changed
        elif kind == "wrong_count":
            (n_chosen, noun_c), (n_rejected, _) = (_NUMBER.match(t).groups() for t in (pair.chosen, pair.rejected))
            assert int(n_chosen) == oracle.count_noun(scene, noun_c)
            assert int(n_rejected) != int(n_chosen) and int(n_rejected) >= 1
        elif kind == "wrong_relation":
            a_c, rel_c, b_c = _RELATION.match(pair.chosen).groups()
            a_r, rel_r, b_r = _RELATION.match(pair.rejected).groups()
            assert (a_c, b_c) == (a_r, b_r) and rel_c != rel_r
            (a,), (b,) = oracle.resolve(scene, a_c), oracle.resolve(scene, b_c)
            truth = {"left of": a.x < b.x, "right of": a.x > b.x, "above": a.y < b.y, "below": a.y > b.y}
            assert truth[rel_c] and not truth[rel_r]
        else:  # wrong_attribute
            ref, value = _ATTRIBUTE.match(pair.chosen).groups()
            ref_r, wrong = _ATTRIBUTE.match(pair.rejected).groups()
            assert ref == ref_r and value != wrong
            (obj,) = oracle.resolve(scene, ref)
            assert value in (obj.colour, obj.shape, obj.size)
            domain = next(d for d in (SIZES, tuple(COLOURS), SHAPES) if value in d)
            assert wrong in domain
    assert made >= len(many_scenes) // 3


def test_judge_examples_are_balanced_and_positions_random():
    from explore.world.examples import world_examples

    examples = world_examples("test", 300, "judge")
    categories = [e.category for e in examples]
    assert {c: categories.count(c) for c in set(categories)}.keys() == {"general", "hallucination", "reasoning"}
    preferred = [e.preferred for e in examples]
    assert 100 < sum(preferred) < 200  # the faithful answer is first or second at random
    for e in examples:
        assert e.responses[e.preferred] != e.responses[1 - e.preferred]


@pytest.mark.parametrize("kind", sorted(JUDGE_KINDS))
def test_every_pair_has_a_reason_that_states_the_truth_and_names_the_error(kind, many_scenes):
    from explore.world.judge import reason_words
    from explore.world.text import words
    from explore.world.vocabulary import vocabulary

    known = set(vocabulary()) | set(reason_words())
    checked = 0
    for i, scene in enumerate(many_scenes):
        pair = judge_pair(scene, kind, np.random.default_rng(i))
        if pair is None:
            continue
        checked += 1
        assert pair.reason and set(words(pair.reason)) <= known, pair.reason
        truth, wrong = pair.reason.split(", not ") if ", not " in pair.reason else (pair.reason, "")
        if kind == "invented_object":
            invented = pair.reason.removeprefix("the image shows no ").rstrip(".")
            assert invented in pair.rejected and invented not in pair.chosen
        elif kind == "wrong_relation":
            assert truth.removeprefix("the ").lower() in pair.chosen.lower()
        elif kind == "wrong_count":
            assert truth.split()[2] in pair.chosen and wrong.rstrip(".") in pair.rejected
        elif kind == "wrong_attribute_description":
            assert truth.removeprefix("the image shows a ") in pair.chosen
            assert wrong.rstrip(".").removeprefix("a ") in pair.rejected
        else:
            assert wrong.rstrip(".").split()[-1] in pair.rejected.lower()
    assert checked >= 10


def _named_pairs(text: str) -> set[tuple[str, str]]:
    """Colour-shape pairs a text names: "red square" or "the red object is a square" (an independent parse)."""
    text = text.lower()
    named = {(c, s) for c in COLOURS for s in SHAPES if re.search(rf"\b{c} (?:{s}|object is a {s})\b", text)}
    named |= {(c, s) for c in COLOURS for s in SHAPES if re.search(rf"\bthe (?:\w+ )?{s}(?: at the [\w ]+)? is {c}\b", text)}
    return named


def test_avoided_pairs_are_never_named_and_the_default_draws_are_unchanged(many_scenes):
    """``avoid``: no wrong answer, invented object or absent-object question names a held-out pair (without it,
    126 of 1,357 pairs here, always as false); an empty ``avoid`` draws exactly what the first recipes drew."""
    named = {"default": 0, "avoided": 0}
    for i, scene in enumerate(many_scenes):
        for kind in sorted(JUDGE_KINDS):
            plain = judge_pair(scene, kind, np.random.default_rng(i))
            assert plain == judge_pair(scene, kind, np.random.default_rng(i), frozenset())
            avoided = judge_pair(scene, kind, np.random.default_rng(i), HELD_OUT_PAIRS)
            if plain is None:
                assert avoided is None
                continue
            named["default"] += bool(_named_pairs(plain.rejected + " " + plain.reason) & HELD_OUT_PAIRS)
            assert not _named_pairs(avoided.rejected + " " + avoided.reason + " " + avoided.chosen) & HELD_OUT_PAIRS
        rng = np.random.default_rng(i)
        for _ in range(3):
            qa = ask(scene, "exist", rng, HELD_OUT_PAIRS)
            assert not _named_pairs(qa.question) & HELD_OUT_PAIRS, qa.question
    assert named["default"] > 20, named  # the leak the option closes is real
