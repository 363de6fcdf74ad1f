"""Prompt → layout with the world's grammar: captions round-trip, relations and counts hold, errors name words."""

import numpy as np
import pytest

from explore.errors import ExploreError
from explore.world.layout import LAYOUT_CHANNELS, layout_map, parse_prompt, prompt_layout, sample_layout
from explore.world.splits import split_scenes
from explore.world.text import CAPTION_STYLES, caption, holds


def _facts(scene):
    return sorted((o.colour, o.shape, o.size, o.cell) for o in scene.objects)


@pytest.mark.parametrize("style", CAPTION_STYLES)
def test_every_caption_style_parses_back_to_its_scene(style):
    for scene in split_scenes("test", 30):
        assert _facts(prompt_layout(caption(scene, style), 0)) == _facts(scene)


@pytest.mark.parametrize("relation", ["left of", "right of", "above", "below", "to the left of"])
def test_a_relation_prompt_samples_layouts_where_it_holds(relation):
    name = {"left of": "left", "right of": "right", "above": "above", "below": "below", "to the left of": "left"}
    layouts = [prompt_layout(f"a red circle {relation} a blue square", seed) for seed in range(40)]
    for layout in layouts:
        circle, square = layout.objects
        assert (circle.colour, circle.shape, square.colour, square.shape) == ("red", "circle", "blue", "square")
        assert holds(circle, name[relation], square)
    assert len({(a.cell, b.cell) for a, b in (layout.objects for layout in layouts)}) > 3  # really sampled


def test_layouts_are_seeded():
    assert prompt_layout("three green stars", 5) == prompt_layout("three green stars", 5)
    assert prompt_layout("three green stars", 5) != prompt_layout("three green stars", 6)


def test_counts_and_open_attributes():
    layout = prompt_layout("there are three green stars", 0)
    assert [(o.colour, o.shape) for o in layout.objects] == [("green", "star")] * 3
    assert len({o.cell for o in layout.objects}) == 3
    parsed = parse_prompt("a photo of a star and a circle")
    assert [(g.shape, g.colour, g.size) for g in parsed.groups] == [("star", None, None), ("circle", None, None)]


def test_words_outside_the_grammar_are_named():
    with pytest.raises(ExploreError, match="unknown words 'cat', 'dog'"):
        parse_prompt("a dog above a cat")


@pytest.mark.parametrize("prompt", ["three star", "a red", "a circle a square", "two stars at the top", ""])
def test_known_words_in_a_wrong_order_fail(prompt):
    with pytest.raises(ExploreError, match="grammar"):
        parse_prompt(prompt)


def test_impossible_layouts_fail():
    with pytest.raises(ExploreError, match="one cell"):
        prompt_layout("a red circle at the top and a blue square at the top", 0)
    with pytest.raises(ExploreError, match="at most 9"):
        parse_prompt("nine red circles and a blue square")


def test_layout_map_is_one_hot_per_occupied_cell():
    scene = prompt_layout("a small red circle at the top left and a large blue square at the center", 0)
    grid = layout_map(scene)
    assert grid.shape == (LAYOUT_CHANNELS, 3, 3) == (17, 3, 3)
    assert grid[0].sum() == 2 and grid[0, 0, 0] == 1 and grid[0, 1, 1] == 1
    assert np.array_equal(grid[1:].sum(0), 3 * grid[0])  # one shape, one colour, one size per object
    other = layout_map(sample_layout(parse_prompt("a small blue circle at the top left"), 0))
    assert not np.array_equal(grid[:, 0, 0], other[:, 0, 0])  # the colour is in the map
