"""``world-geneval``: text-to-image faithfulness scored the way GenEval scores, exactly, on the shapes world.

GenEval (Ghosh et al. 2023) asks for objects, counts, colours and positions in six categories, draws 4
images per prompt, checks every clause of the prompt with a detector and reports the mean of the category
accuracies. Here the prompts come from the world's grammar (:mod:`explore.world.layout`) and the detector
is :mod:`explore.world.detect`, exact on real renders:

====================  =====================================  =============================================
category              prompt                                 passes when the image has
====================  =====================================  =============================================
single_object         "a star"                               at least one star
two_object            "a star and a circle"                  a star and a circle
counting              "three green stars"                    exactly three green stars (an extra one fails)
colors                "a red circle"                         a red circle
position              "a red circle above a blue square"     both, the circle's cell above the square's
color_attr            "a red star and a blue circle"         a red star and a blue circle
full_scene            a canonical caption with cells         (reported apart) objects found, exact scene
====================  =====================================  =============================================

Each prompt is checked only for what it states: other objects are allowed, except in counting, where
more objects of the counted kind fail (GenEval's exclude clause). Two prompt sets are reported apart:
``seen`` (colour–shape pairs of the training distribution; full scenes from the test split) and
``held_out`` (every coloured prompt uses a held-out pair; full scenes from the compositional split;
single_object and two_object state no colour, so they are not part of it). Overall = the mean over the
categories of a set, as GenEval's.

Real renders of each image's layout are checked the same way; they bound what any generator can score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from explore.data.example import Example
from explore.errors import ExploreError
from explore.runs import (JsonlLog, atomic_path, check_header, config_hash, model_fingerprint, remove_temporaries,
                          write_json)  # fmt: skip
from explore.world.detect import Detection, calibrated_classifier, check_scene, detect, detected_scene
from explore.world.layout import NUMBER_WORDS, Group, ParsedPrompt, parse_prompt, sample_layout
from explore.world.render import render
from explore.world.scene import COLOURS, HELD_OUT_PAIRS, SHAPES, Scene, SceneSpec
from explore.world.splits import split_scenes
from explore.world.text import PLURAL, RELATION_PHRASE, caption, holds

CATEGORIES: tuple[str, ...] = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
HELD_OUT_CATEGORIES: tuple[str, ...] = ("counting", "colors", "position", "color_attr")
PROMPT_SETS: tuple[str, ...] = ("seen", "held_out")
IMAGES_PER_PROMPT = 4
DEFAULT_PROMPTS = 12  # per category and set
SEEN_PAIRS = tuple((c, s) for c in COLOURS for s in SHAPES if (c, s) not in HELD_OUT_PAIRS)
HELD_PAIRS = tuple(sorted(HELD_OUT_PAIRS))


def _pair(rng: np.random.Generator, pairs, avoid_shape: str | None = None, avoid_colour: str | None = None):
    choices = [(c, s) for c, s in pairs if s != avoid_shape and c != avoid_colour]
    return choices[int(rng.integers(len(choices)))]


def category_prompt(category: str, prompt_set: str, rng: np.random.Generator) -> str:
    """One prompt of ``category``; in the ``held_out`` set its first object uses a held-out pair."""
    first_pairs = HELD_PAIRS if prompt_set == "held_out" else SEEN_PAIRS
    colour, shape = _pair(rng, first_pairs)
    other_colour, other_shape = _pair(rng, SEEN_PAIRS, avoid_shape=shape, avoid_colour=colour)
    if category == "single_object":
        return f"a {shape}"
    if category == "two_object":
        return f"a {shape} and a {other_shape}"
    if category == "counting":
        n = int(rng.integers(2, 5))
        return f"{NUMBER_WORDS[n]} {colour} {PLURAL[shape]}"
    if category == "colors":
        return f"a {colour} {shape}"
    if category == "position":
        relation = RELATION_PHRASE[("left", "right", "above", "below")[int(rng.integers(4))]]
        return f"a {colour} {shape} {relation} a {other_colour} {other_shape}"
    if category == "color_attr":
        return f"a {colour} {shape} and a {other_colour} {other_shape}"
    raise ValueError(f"unknown category {category!r}; expected one of {CATEGORIES}")


def geneval_examples(n: int, seed: int, full_scene_split: str = "test") -> list[Example]:
    """``n`` prompts per category and prompt set (prompts drawn from ``seed``), plus ``n`` full scenes per set
    (canonical captions of ``full_scene_split`` and of the compositional split)."""
    examples = []
    for set_index, prompt_set in enumerate(PROMPT_SETS):
        categories = CATEGORIES if prompt_set == "seen" else HELD_OUT_CATEGORIES
        for category in categories:
            rng = np.random.default_rng([seed, set_index, CATEGORIES.index(category)])
            for i in range(n):
                examples.append(Example(id=f"{prompt_set}-{category}-{i:04d}", task="caption", image=None,
                                        prompt=category_prompt(category, prompt_set, rng), category=category,
                                        source="shapes-world", meta={"set": prompt_set}))  # fmt: skip
        split = full_scene_split if prompt_set == "seen" else "compositional"
        for i, scene in enumerate(split_scenes(split, n, seed=seed, spec=SceneSpec(max_objects=4))):
            examples.append(Example(id=f"{prompt_set}-full_scene-{i:04d}", task="caption", image=None,
                                    prompt=caption(scene), category="full_scene", source="shapes-world",
                                    meta={"set": prompt_set, "scene": scene.to_dict()}))  # fmt: skip
    return examples


def _matches(detection: Detection, group: Group) -> bool:
    return (detection.shape == group.shape and group.colour in (None, detection.colour)
            and group.size in (None, detection.size)
            and (group.cell is None or detected_scene([detection]).objects[0].cell == group.cell))  # fmt: skip


def check_prompt(detections: list[Detection], parsed: ParsedPrompt, category: str) -> bool:
    """Whether ``detections`` satisfy every clause of the prompt (GenEval's rule; see the module docstring)."""
    for group in parsed.groups:
        found = sum(_matches(d, group) for d in detections)
        if found < group.count or (category == "counting" and found != group.count):
            return False
    for relation in parsed.relations:
        subjects = [d for d in detections if _matches(d, parsed.groups[relation.subject])]
        references = [d for d in detections if _matches(d, parsed.groups[relation.reference])]
        pairs = [detected_scene([a, b]).objects for a in subjects for b in references]
        if not any(holds(a, relation.relation, b) for a, b in pairs):
            return False
    return True


def score_image(image, example: Example, layout: Scene, classifier) -> dict:
    """The checks of one generated image (and, for comparison, of the real render of its layout)."""
    side = image.size[0]
    real = render(layout, side)
    if example.category == "full_scene":
        scene = Scene.from_dict(example.meta["scene"])
        generated = check_scene(detect(image, classifier), scene)
        bound = check_scene(detect(real, classifier), scene)
        return {"passed": bool(generated["exact"]), "object": generated["object"], "real_passed": bool(bound["exact"]),
                "real_object": bound["object"], "colour_position": generated["colour_position"],
                "real_colour_position": bound["colour_position"]}  # fmt: skip
    parsed = parse_prompt(example.prompt)
    return {"passed": check_prompt(detect(image, classifier), parsed, example.category),
            "real_passed": check_prompt(detect(real, classifier), parsed, example.category)}  # fmt: skip


def image_layout(example: Example, seed: int, image_index: int, prompt_index: int) -> Scene:
    """The layout of one image: the full scene itself, or one sampled from the prompt (seeded)."""
    if example.category == "full_scene":
        return Scene.from_dict(example.meta["scene"])
    return sample_layout(parse_prompt(example.prompt), [seed, prompt_index, image_index])


def evaluate_geneval(pipe, examples: list[Example], out_dir: Path, *, layout: str, seed: int, steps: int = 20,
                     guidance: float = 2.0, batch_size: int = 16, progress: bool = True,
                     layout_text: str = "caption") -> dict:  # fmt: skip
    """Generate ``IMAGES_PER_PROMPT`` images per example, check them and write ``predictions.jsonl`` (one
    record per image, resumable), ``images/`` and ``summary.json`` to ``out_dir``.

    ``layout``: "auto" (grounded: each image gets a layout sampled from its prompt, seeded by ``seed``, the
    prompt and the image) or "none" (the free-text path). ``layout_text`` (grounded only): what the text encoder
    reads beside the layout, its caption or the prompt (``WorldDiffusionPipeline.__call__``). Noise is seeded per image the same way, so a
    result does not depend on the batch size.
    """
    if layout not in ("auto", "none"):
        raise ExploreError(f"--layout must be auto or none, got {layout!r}")
    if layout == "auto" and not pipe.grounded:
        raise ExploreError("this diffusion pipeline has no layout input; evaluate it with --layout none")
    path = out_dir / "predictions.jsonl"
    header = {"layout": layout, "seed": seed, "steps": steps, "guidance": guidance,
              "scheduler": type(pipe.scheduler).__name__}  # fmt: skip
    if layout == "auto":
        header["layout_text"] = layout_text
    log = JsonlLog(path)  # a line cut off by a kill is truncated away and redone
    # another generator, layout, seed or sampler in the same folder is refused, naming the key
    check_header(out_dir, {"task": "world-geneval", "pipeline": _pipeline_fingerprint(pipe), **header},
                 has_outputs=bool(log.records))  # fmt: skip
    (out_dir / "images").mkdir(exist_ok=True)
    remove_temporaries(out_dir / "images")
    done = {record["id"] for record in log.records}
    jobs = [(p, i) for p in range(len(examples)) for i in range(IMAGES_PER_PROMPT)
            if f"{examples[p].id}-{i}" not in done]  # fmt: skip
    classifier = calibrated_classifier(pipe.image_size)
    columns = (TextColumn("[bold]world-geneval"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())  # fmt: skip
    total = len(examples) * IMAGES_PER_PROMPT
    with Progress(*columns, disable=not progress) as bar:
        job = bar.add_task("geneval", total=total, completed=total - len(jobs))
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start : start + batch_size]
            layouts = [image_layout(examples[p], seed, i, p) for p, i in batch]
            generators = [torch.Generator().manual_seed(seed * 1_000_003 + p * IMAGES_PER_PROMPT + i) for p, i in batch]
            images = pipe([examples[p].prompt for p, _ in batch], num_inference_steps=steps, guidance_scale=guidance,
                          generator=generators, layout=layouts if layout == "auto" else "none",
                          layout_text=layout_text).images  # fmt: skip
            records = []
            for (p, i), image, scene in zip(batch, images, layouts):
                example = examples[p]
                name = f"{example.id}-{i}"
                with atomic_path(out_dir / "images" / f"{name}.png") as tmp:
                    image.save(tmp)
                records.append({"id": name, "prompt": example.prompt, "category": example.category,
                                "set": example.meta["set"], "layout": scene.to_dict(),
                                **score_image(image, example, scene, classifier)})  # fmt: skip
            log.append(records)
            bar.update(job, advance=len(batch))
    summary = summarize_geneval(log.records)
    summary.update(task="world-geneval", prompts=len(examples), images=total, **header)
    write_json(out_dir / "summary.json", summary)
    return summary


def paired_difference(first: list[dict], second: list[dict], prompt_set: str = "seen", rounds: int = 2000,
                      seed: int = 0) -> tuple[float, float, float]:  # fmt: skip
    """``overall`` of ``first`` minus that of ``second`` (two generators' world-geneval records of the same prompts,
    layouts and seeds), with a 95% paired bootstrap interval: prompts are resampled with replacement within each
    category, the same prompts for both (their images, 4 per prompt, stay together), and the difference of the two
    category means is taken in every round. Returns (difference, low, high). A difference whose interval holds 0 is
    within what the prompt sample can tell apart. Written here because no library we use offers a bootstrap over
    stratified, paired records (scipy.stats.bootstrap resamples observations, not prompts within categories)."""
    by_prompt = [{}, {}]
    for side, records in zip(by_prompt, (first, second)):
        for r in records:
            if r["set"] == prompt_set:
                side.setdefault((r["category"], r["id"].rsplit("-", 1)[0]), []).append(float(r["passed"]))
    if set(by_prompt[0]) != set(by_prompt[1]):
        raise ExploreError("the two world-geneval runs do not hold the same prompts; evaluate both with the same "
                           "--limit and --seed")  # fmt: skip
    if not by_prompt[0]:
        raise ExploreError(f"no world-geneval records of the {prompt_set!r} prompts to compare")
    rng = np.random.default_rng(seed)
    categories = [c for c in CATEGORIES if any(key[0] == c for key in by_prompt[0])]
    point, samples = [], []
    for category in categories:
        keys = sorted(key for key in by_prompt[0] if key[0] == category)
        # per prompt: first's pass rate minus second's (equal images per prompt, so the category means subtract)
        delta = np.array([np.mean(by_prompt[0][k]) - np.mean(by_prompt[1][k]) for k in keys])
        point.append(delta.mean())
        samples.append(delta[rng.integers(len(keys), size=(rounds, len(keys)))].mean(axis=1))
    spread = np.mean(samples, axis=0)
    low, high = np.percentile(spread, [2.5, 97.5])
    return float(np.mean(point)), float(low), float(high)


def _pipeline_fingerprint(pipe) -> str:
    """The generator's identity: a hash of its modules' weights."""
    return config_hash({name: model_fingerprint(part) for name, part in sorted(pipe.components.items())
                        if isinstance(part, torch.nn.Module)})  # fmt: skip


def summarize_geneval(records: list[dict]) -> dict:
    """Per prompt set: each category's accuracy (generated and real renders), overall = their mean, and the
    full scenes' objects found and exact-scene rate."""
    if not records:
        raise ExploreError("no world-geneval predictions to summarise")
    summary: dict = {}
    for prompt_set in PROMPT_SETS:
        rows = [r for r in records if r["set"] == prompt_set]
        if not rows:
            continue
        part: dict = {}
        for which, key in (("generated", "passed"), ("real", "real_passed")):
            categories = {c: float(np.mean([r[key] for r in rows if r["category"] == c]))
                          for c in CATEGORIES if any(r["category"] == c for r in rows)}  # fmt: skip
            scenes = [r for r in rows if r["category"] == "full_scene"]
            part[which] = {"overall": float(np.mean(list(categories.values()))) if categories else float("nan"),
                           **categories}  # fmt: skip
            if scenes:
                objects = "object" if which == "generated" else "real_object"
                part[which]["full_scene_objects"] = float(np.mean([r[objects] for r in scenes]))
                part[which]["full_scene_exact"] = float(np.mean([r[key] for r in scenes]))
                placed = "colour_position" if which == "generated" else "real_colour_position"
                if all(placed in r for r in scenes):  # recorded since the first runs
                    part[which]["full_scene_colour_position"] = float(np.mean([r[placed] for r in scenes]))
        part["images"] = len(rows)
        summary[prompt_set] = part
    return summary

