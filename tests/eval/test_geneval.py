"""world-geneval: real renders pass every category; extra objects fail counting; wrong colours and
relations fail; the run writes, resumes and refuses another run's folder."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from explore.diffusion.build import build_pipeline
from explore.diffusion.config import load_diffusion_config
from explore.diffusion.pipeline import set_scheduler
from explore.errors import ExploreError
from explore.eval.geneval import (
    CATEGORIES,
    IMAGES_PER_PROMPT,
    check_prompt,
    evaluate_geneval,
    geneval_examples,
    image_layout,
    paired_difference,
    score_image,
    summarize_geneval,
)
from explore.world.detect import calibrated_classifier, detect
from explore.world.layout import parse_prompt, prompt_layout
from explore.world.render import render
from explore.world.scene import HELD_OUT_PAIRS, Obj, Scene

TINY_GROUNDED = Path(__file__).resolve().parents[2] / "configs" / "diffusion" / "tiny-grounded.yaml"


@pytest.fixture(scope="module")
def classifier():
    return calibrated_classifier(64)


def _passes(scene: Scene, prompt: str, category: str, classifier) -> bool:
    return check_prompt(detect(render(scene, 64), classifier), parse_prompt(prompt), category)


def test_real_renders_pass_every_category(classifier):
    examples = geneval_examples(3, seed=31337)
    records = []
    for p, example in enumerate(examples):
        for i in range(2):
            layout = image_layout(example, 31337, i, p)
            records.append({"set": example.meta["set"], "category": example.category,
                            **score_image(render(layout, 64), example, layout, classifier)})  # fmt: skip
    summary = summarize_geneval(records)
    for prompt_set in ("seen", "held_out"):
        assert summary[prompt_set]["generated"]["overall"] == 1.0
        assert summary[prompt_set]["generated"]["full_scene_objects"] == 1.0
        assert summary[prompt_set]["generated"]["full_scene_colour_position"] == 1.0
    assert set(CATEGORIES) <= set(summary["seen"]["generated"])
    assert "single_object" not in summary["held_out"]["generated"]  # no colour stated, no held-out pair


def test_held_out_prompts_use_a_held_out_pair():
    for example in geneval_examples(4, seed=0):
        first = parse_prompt(example.prompt).groups[0]
        held = (first.colour, first.shape) in HELD_OUT_PAIRS
        if example.category != "full_scene":
            assert held == (example.meta["set"] == "held_out"), example.prompt


def test_an_extra_object_fails_counting_but_not_colors(classifier):
    scene = prompt_layout("two green stars", 0)
    assert _passes(scene, "two green stars", "counting", classifier)
    free = next((r, c) for r in range(3) for c in range(3) if (r, c) not in {o.cell for o in scene.objects})
    extra = Obj("star", "green", "large", (free[1] + 0.5) / 3, (free[0] + 0.5) / 3)
    crowded = dataclasses.replace(scene, objects=(*scene.objects, extra))
    assert not _passes(crowded, "two green stars", "counting", classifier)
    assert _passes(crowded, "a green star", "colors", classifier)  # extras are allowed outside counting
    too_few = dataclasses.replace(scene, objects=scene.objects[:1])
    assert not _passes(too_few, "two green stars", "counting", classifier)


def test_a_wrong_colour_fails_colour_attribution(classifier):
    scene = prompt_layout("a red star and a blue circle", 0)
    assert _passes(scene, "a red star and a blue circle", "color_attr", classifier)
    swapped = dataclasses.replace(scene, objects=(dataclasses.replace(scene.objects[0], colour="blue"),
                                                  dataclasses.replace(scene.objects[1], colour="red")))  # fmt: skip
    assert not _passes(swapped, "a red star and a blue circle", "color_attr", classifier)
    assert _passes(swapped, "a star and a circle", "two_object", classifier)


def test_a_wrong_relation_fails_position(classifier):
    scene = prompt_layout("a red circle above a blue square", 0)
    assert _passes(scene, "a red circle above a blue square", "position", classifier)
    assert not _passes(scene, "a red circle below a blue square", "position", classifier)


@pytest.fixture(scope="module")
def tiny_grounded_pipe():
    torch.manual_seed(0)
    return set_scheduler(build_pipeline(load_diffusion_config(TINY_GROUNDED)), "ddim")


def test_evaluate_writes_resumes_and_refuses_another_run(tiny_grounded_pipe, tmp_path):
    examples = geneval_examples(1, seed=3)
    summary = evaluate_geneval(tiny_grounded_pipe, examples, tmp_path, layout="auto", seed=3, steps=2,
                               progress=False)  # fmt: skip
    lines = (tmp_path / "predictions.jsonl").read_text().splitlines()
    assert len(lines) == len(examples) * IMAGES_PER_PROMPT == summary["images"]
    assert summary["seen"]["real"]["overall"] == 1.0
    assert len(list((tmp_path / "images").glob("*.png"))) == len(lines)
    again = evaluate_geneval(tiny_grounded_pipe, examples, tmp_path, layout="auto", seed=3, steps=2, progress=False)
    assert (tmp_path / "predictions.jsonl").read_text().splitlines() == lines  # nothing redone
    assert again["seen"] == summary["seen"]
    assert json.loads(lines[0])["id"].endswith("-0")
    with pytest.raises(ExploreError, match="new --out"):
        evaluate_geneval(tiny_grounded_pipe, examples, tmp_path, layout="none", seed=3, steps=2, progress=False)


def test_results_do_not_depend_on_the_batch_size(tiny_grounded_pipe, tmp_path):
    examples = geneval_examples(1, seed=4)[:2]
    for name, batch in (("a", 8), ("b", 3)):
        evaluate_geneval(tiny_grounded_pipe, examples, tmp_path / name, layout="auto", seed=4, steps=2,
                         batch_size=batch, progress=False)  # fmt: skip
    for image in (tmp_path / "a" / "images").glob("*.png"):  # float noise of batched kernels only: <= 1 level
        first = np.asarray(Image.open(image), dtype=int)
        second = np.asarray(Image.open(tmp_path / "b" / "images" / image.name), dtype=int)
        assert np.abs(first - second).max() <= 1


def _records(passed: dict[tuple[str, int], list[int]], prompt_set: str = "seen") -> list[dict]:
    return [{"id": f"{category}-{p}-{i}", "set": prompt_set, "category": category, "passed": bool(v), "real_passed": True}
            for (category, p), values in passed.items() for i, v in enumerate(values)]  # fmt: skip


def test_paired_difference_matches_the_overall_scores_and_brackets_them():
    rng = np.random.default_rng(0)
    first = {(c, p): rng.integers(0, 2, 4).tolist() for c in CATEGORIES for p in range(10)}
    second = {(c, p): rng.integers(0, 2, 4).tolist() for c in CATEGORIES for p in range(10)}
    a, b = _records(first), _records(second)
    difference, low, high = paired_difference(a, b)
    overall = [summarize_geneval(r)["seen"]["generated"]["overall"] for r in (a, b)]
    assert difference == pytest.approx(overall[0] - overall[1])
    assert low < difference < high  # random records: the prompt sample cannot pin the difference
    assert paired_difference(a, a) == (0.0, 0.0, 0.0)
    assert paired_difference(a, b) == (difference, low, high)  # seeded
    all_pass = _records({key: [1, 1, 1, 1] for key in first})
    none_pass = _records({key: [0, 0, 0, 0] for key in first})
    assert paired_difference(all_pass, none_pass) == (1.0, 1.0, 1.0)


def test_paired_difference_refuses_runs_of_other_prompts():
    a = _records({("colors", 0): [1, 0, 1, 1]})
    b = _records({("colors", 1): [1, 0, 1, 1]})
    with pytest.raises(ExploreError, match="same prompts"):
        paired_difference(a, b)
    with pytest.raises(ExploreError, match="held_out"):
        paired_difference(a, a, prompt_set="held_out")
