import itertools
import json
import math

import numpy as np
import pytest

from explore.world.render import render
from explore.world.scene import COLOURS, GRID, HELD_OUT_PAIRS, SHAPES, Scene, SceneSpec, sample_scene
from explore.world.splits import SPLITS, scene_seed, split_scene, split_scenes


def test_same_seed_same_scene_and_pixels():
    a, b = sample_scene(123), sample_scene(123)
    assert a == b
    assert np.array_equal(np.asarray(render(a)), np.asarray(render(b)))


def test_different_seeds_differ():
    scenes = [sample_scene(s) for s in range(20)]
    assert len({s.to_json() for s in scenes}) == 20
    assert not np.array_equal(np.asarray(render(scenes[0])), np.asarray(render(scenes[1])))


def test_noise_is_deterministic_and_changes_pixels():
    spec = SceneSpec(noise=12.0)
    noisy, noisy_again = sample_scene(5, spec), sample_scene(5, spec)
    clean = sample_scene(5)
    assert np.array_equal(np.asarray(render(noisy)), np.asarray(render(noisy_again)))
    diff = np.abs(np.asarray(render(noisy), dtype=int) - np.asarray(render(clean), dtype=int))
    assert diff.mean() > 3


def test_json_round_trip():
    for seed in range(30):
        scene = sample_scene(seed, SceneSpec(random_background=True, noise=3.0))
        again = Scene.from_json(json.dumps(json.loads(scene.to_json())))
        assert again == scene
        assert np.array_equal(np.asarray(render(again)), np.asarray(render(scene)))


def test_objects_never_overlap_and_stay_inside(many_scenes):
    for scene in many_scenes:
        for o in scene.objects:
            assert o.radius <= o.x <= 1 - o.radius and o.radius <= o.y <= 1 - o.radius
        for a, b in itertools.combinations(scene.objects, 2):
            assert math.hypot(a.x - b.x, a.y - b.y) > a.radius + b.radius
            assert a.cell != b.cell
            assert (a.colour, a.shape) != (b.colour, b.shape)


def test_vocabulary_sizes():
    assert len(SHAPES) >= 6 and len(COLOURS) >= 8


def test_object_counts_cover_the_spec_range():
    spec = SceneSpec(min_objects=1, max_objects=5)
    counts = {len(sample_scene(s, spec).objects) for s in range(200)}
    assert counts == {1, 2, 3, 4, 5}


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="max_objects"):
        SceneSpec(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match=str(GRID * GRID)):
        SceneSpec(max_objects=GRID * GRID + 1)


def test_rendered_pixels_match_the_scene_graph(many_scenes):
    """The pixel at each object's centre has that object's colour; a corner has the background."""
    for scene in many_scenes[:100]:
        pixels = np.asarray(render(scene, 64), dtype=int)
        for o in scene.objects:
            px = pixels[int(o.y * 64), int(o.x * 64)]
            assert np.abs(px - COLOURS[o.colour]).max() <= 40, (o, px)
        occupied = {o.cell for o in scene.objects}
        if (0, 0) not in occupied:
            assert np.abs(pixels[1, 1] - scene.background).max() <= 2


def test_resolution_is_configurable():
    scene = sample_scene(1)
    assert render(scene, 32).size == (32, 32) and render(scene, 96).size == (96, 96)
    with pytest.raises(ValueError, match="resolution"):
        render(scene, 8)


def test_splits_hold_out_compositional_pairs():
    for split in ("train", "val", "test"):
        for scene in split_scenes(split, 300):
            assert not {(o.colour, o.shape) for o in scene.objects} & HELD_OUT_PAIRS
    for scene in split_scenes("compositional", 100):
        assert {(o.colour, o.shape) for o in scene.objects} & HELD_OUT_PAIRS
    # held-out pairs still leave every colour and every shape in training
    train_pairs = {(o.colour, o.shape) for s in split_scenes("train", 500) for o in s.objects}
    assert {c for c, _ in train_pairs} == set(COLOURS) and {s for _, s in train_pairs} == set(SHAPES)


def test_split_seeds_are_distinct_and_reproducible():
    seeds = {scene_seed(split, i) for split in SPLITS for i in range(500)}
    assert len(seeds) == len(SPLITS) * 500
    assert split_scene("val", 17, seed=3) == split_scenes("val", 1, seed=3, start=17)[0]
    assert split_scene("val", 17, seed=3) != split_scene("val", 17, seed=4)
    with pytest.raises(ValueError, match="unknown split"):
        scene_seed("dev", 0)
