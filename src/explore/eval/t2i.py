"""``world-t2i``: how faithful are generated images to their prompt? Three measures, no downloaded network.

For each held-out scene the prompt is its canonical caption (the full scene graph: size, colour,
shape, cell of every object). The image generated from it is scored

- **exactly**, as GenEval does with a detector, but here without one to train: the world is
  rendered, so :mod:`explore.world.detect` finds the objects by colour masks, connected components
  and shape descriptors and checks count, colour, shape, size and cell against the scene graph.
  The same detector on the real render is the upper bound of this check;
- **by the VLM**, as TIFA does: questions derived from the scene graph (:func:`judge_questions`,
  phrased with the world's question templates) answered by the embedded VLM on the generated
  image; the same questions on the real render give the upper bound. Each question also gets the
  answer the *detector's* scene implies, so the rate at which the VLM judge and the exact check
  agree (right / wrong on the same question) is measured; that rate is the evidence that a VLM can
  stand in as the metric where no exact check exists;
- **by the VLM with dependencies**, as Davidsonian Scene Graph does (DSG, Cho et al., arXiv 2310.18235): a
  question about an object's cell or size, or about a relation, is a child of that object's existence question,
  and when the VLM says the object is not there, its children count as failed whatever it answers them ("no
  motorcycle, but the motorcycle is blue" is not a pass). The exact check already works that way (a missing
  object answers "none"), so the DSG agreement compares two raters that follow the same rule;
- **by distribution**: a Fréchet distance between generated and real images on the VLM vision
  encoder's pooled features (torchmetrics' FID with a custom feature extractor: no Inception
  weights exist offline). Real-vs-real (other scenes of the split) is reported as the floor.

Per-example records go to ``predictions.jsonl`` (resumable: a line cut by a kill is truncated and redone),
images to ``images/``, scores to ``summary.json``, and ``header.json`` names the generator, judge and sampler
that wrote the folder (a resume with another is refused); all through :mod:`explore.runs`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torchmetrics.functional.classification import binary_cohen_kappa

from explore.data.example import Example
from explore.errors import ExploreError
from explore.eval.scoring import RELATION_MAX_NEW_TOKENS, final_answer
from explore.eval.world import normalize_answer
from explore.models.features import VisionFeatures
from explore.models.generate import generate_answers
from explore.runs import (JsonlLog, atomic_path, check_header, config_hash, model_fingerprint, remove_temporaries,
                          write_json)  # fmt: skip
from explore.world.detect import calibrated_classifier, check_scene, detect, detected_scene
from explore.world.render import render
from explore.world.scene import COLOURS, SHAPES, Obj, Scene, SceneSpec
from explore.world.splits import scene_seed, split_scenes
from explore.world.text import DIRECTIONS, QUESTION_TEMPLATES, RELATION_PHRASE, caption, holds

DEFAULT_T2I_EXAMPLES = 200
MAX_RELATION_QUESTIONS = 3  # object pairs asked about, each in two directions
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
CHECK_KEYS = ("count", "colour_position", "object", "object_size", "exact")


@dataclass(frozen=True)
class JudgeQuestion:
    """A question about the prompt's scene graph, its answer, and what it asks about."""

    qtype: str  # exist / position / size / count / relation
    question: str
    answer: str
    objects: tuple[tuple[str, str], ...] = ()  # (colour, shape) of the objects it is about
    relation: str | None = None  # for relation questions: left / right / above / below


def judge_questions(scene: Scene) -> list[JudgeQuestion]:
    """TIFA-style questions from ``scene``: count; existence, cell and size of every object; one object
    the prompt does not name (answer "no"); and, for up to three object pairs separated along an axis,
    their relation (answer "yes") and the opposite one (answer "no"). The "no" questions catch a judge
    that says "yes" to everything. Phrasings are the first template of each question type; the absent
    object is drawn from a generator seeded by the scene, so the questions of a scene never change."""
    t = QUESTION_TEMPLATES
    questions = [JudgeQuestion("count", t["count"][0].format(x="objects"), str(len(scene.objects)))]
    ordered = scene.in_reading_order()
    for obj in ordered:
        key = ((obj.colour, obj.shape),)
        questions.append(JudgeQuestion("exist", t["exist"][0].format(obj=obj.name), "yes", key))
        questions.append(JudgeQuestion("position", t["position"][0].format(ref=obj.name), obj.position, key))
        questions.append(JudgeQuestion("size", t["size"][0].format(ref=obj.name), obj.size, key))
    absent = [(c, s) for c in COLOURS for s in SHAPES if scene.find(c, s) is None]
    colour, shape = absent[int(np.random.default_rng([scene.seed, 11]).integers(len(absent)))]
    questions.append(JudgeQuestion("exist", t["exist"][0].format(obj=f"{colour} {shape}"), "no", ((colour, shape),)))
    pairs = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :]]
    relations = 0
    for a, b in pairs:
        rel = next((r for r in DIRECTIONS if holds(a, r, b)), None)
        if rel is None or relations == MAX_RELATION_QUESTIONS:
            continue
        keys = ((a.colour, a.shape), (b.colour, b.shape))
        for direction, answer in ((rel, "yes"), (OPPOSITE[rel], "no")):
            text = t["relation_yesno"][0].format(a=a.name, b=b.name, rel=RELATION_PHRASE[direction])
            questions.append(JudgeQuestion("relation", text, answer, keys, direction))
        relations += 1
    return questions


def exact_answer(question: JudgeQuestion, found: Scene) -> str:
    """The answer to ``question`` that the detected scene ``found`` implies ("none" for a missing object)."""
    if question.qtype == "count":
        return str(len(found.objects))
    objects: list[Obj | None] = [found.find(colour, shape) for colour, shape in question.objects]
    if question.qtype == "exist":
        return "yes" if objects[0] is not None else "no"
    if any(obj is None for obj in objects):
        return "none"
    if question.qtype == "position":
        return objects[0].position
    if question.qtype == "size":
        return objects[0].size
    if question.qtype == "relation":
        return "yes" if holds(objects[0], question.relation, objects[1]) else "no"
    raise ValueError(f"unknown question type {question.qtype!r}")


def t2i_examples(split: str, n: int, seed: int = 0, resolution: int = 32, max_objects: int = 4) -> list[Example]:
    """``n`` held-out prompts (canonical captions) with their real render and scene."""
    scenes = split_scenes(split, n, seed=seed, spec=SceneSpec(max_objects=max_objects))
    return [Example(id=f"{split}-t2i-{i:06d}", task="caption", image=render(scene, resolution), prompt=caption(scene),
                    category=f"{len(scene.objects)}_objects", source="shapes-world",
                    meta={"scene": scene.to_dict(), "seed": scene_seed(split, i, seed)})
            for i, scene in enumerate(scenes)]  # fmt: skip


def vlm_answers(vlm, processor, images: list[Image.Image], questions: list[str], batch_size: int = 64) -> list[str]:
    """The VLM's greedy short answer to ``questions[i]`` about ``images[i]``.

    A model that works a relation question out step by step is scored by its last step, as world-vqa
    scores it (:func:`explore.eval.scoring.final_answer`); the token budget leaves room for the steps, and
    generation stops once every answer of a batch has ended, so a short-answer model pays nothing for it."""
    answers = []
    for start in range(0, len(questions), batch_size):
        batch = [Example(id=str(i), task="vqa", image=images[i], prompt=questions[i])
                 for i in range(start, min(start + batch_size, len(questions)))]  # fmt: skip
        texts = generate_answers(vlm, processor, batch, max_new_tokens=RELATION_MAX_NEW_TOKENS)
        answers.extend(final_answer(text) for text in texts)
    return answers


def run_header(pipe, vlm, *, steps: int, guidance: float, layout: str | None = None) -> dict:
    """What identifies a world-t2i run: the generator (its weights and sampler), the VLM judge and the
    sampling settings. Resuming a folder with any of them changed is refused (:func:`explore.runs.check_header`)."""
    modules = {name: model_fingerprint(part) for name, part in sorted(pipe.components.items())
               if isinstance(part, torch.nn.Module)}  # fmt: skip
    return {"command": "eval", "task": "world-t2i", "pipeline": config_hash(modules), "judge": model_fingerprint(vlm),
            "scheduler": type(pipe.scheduler).__name__, "steps": steps, "guidance": guidance,
            **({"layout": layout} if layout is not None else {})}  # fmt: skip  (no key for the default: old folders resume)


def evaluate_t2i(
    pipe,
    vlm,
    processor,
    examples: list[Example],
    out_dir: Path,
    *,
    steps: int = 20,
    guidance: float = 3.0,
    batch_size: int = 16,
    progress: bool = True,
    layout: str | None = None,
) -> dict:
    """Generate an image per example (seeded by the example's scene seed), score it three ways and
    write ``predictions.jsonl``, ``images/`` and ``summary.json`` to ``out_dir``; resumes from it.
    ``layout``: the pipeline's path, "auto" or "none" (free text); None: the pipeline's default."""
    if not examples:
        raise ExploreError("world-t2i has no examples; check --limit")
    path = out_dir / "predictions.jsonl"
    log = JsonlLog(path)  # a line cut off by a kill is truncated away and redone
    check_header(out_dir, run_header(pipe, vlm, steps=steps, guidance=guidance, layout=layout), has_outputs=bool(log.records))
    (out_dir / "images").mkdir(exist_ok=True)
    remove_temporaries(out_dir / "images")
    done = {record["id"] for record in log.records}
    unknown = done - {example.id for example in examples}
    if unknown:
        raise ExploreError(f"{path} holds predictions for ids not in this task ({sorted(unknown)[:3]} ...); "
                           "use a new --out folder")  # fmt: skip
    todo = [example for example in examples if example.id not in done]
    resolution = pipe.image_size
    classifier = calibrated_classifier(resolution)
    columns = (TextColumn("[bold]world-t2i"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())  # fmt: skip
    vlm.eval()
    with Progress(*columns, disable=not progress) as bar:
        job = bar.add_task("t2i", total=len(examples), completed=len(examples) - len(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            generators = [torch.Generator().manual_seed(int(e.meta["seed"])) for e in batch]
            generated = pipe([e.prompt for e in batch], num_inference_steps=steps, guidance_scale=guidance,
                             generator=generators, layout=layout).images  # fmt: skip
            log.append([_score(example, image, classifier, vlm, processor, out_dir)
                        for example, image in zip(batch, generated)])  # fmt: skip
            bar.update(job, advance=len(batch))
    records = log.records
    summary = summarize_t2i(records)
    summary["frechet"] = frechet_scores(records, out_dir, examples, vlm)
    summary.update(task="world-t2i", examples=len(records), steps=steps, guidance=guidance,
                   scheduler=type(pipe.scheduler).__name__, **({"layout": layout} if layout else {}))  # fmt: skip
    write_json(out_dir / "summary.json", summary)
    return summary


@torch.no_grad()
def _score(example: Example, image: Image.Image, classifier, vlm, processor, out_dir: Path) -> dict:
    scene = Scene.from_dict(example.meta["scene"])
    real = example.load_image()
    image_path = out_dir / "images" / f"{example.id}.png"
    with atomic_path(image_path) as tmp:  # a kill never leaves a half-written PNG that a resume would read
        image.save(tmp)
    detections = detect(image, classifier)
    found = detected_scene(detections)
    questions = judge_questions(scene)
    texts = [q.question for q in questions]
    answers = vlm_answers(vlm, processor, [image] * len(texts) + [real] * len(texts), texts + texts, 64)
    rows = []
    for q, on_generated, on_real in zip(questions, answers[: len(texts)], answers[len(texts) :]):
        rows.append(
            {
                "qtype": q.qtype,
                "question": q.question,
                "answer": q.answer,
                "vlm_generated": on_generated,
                "vlm_real": on_real,
                "exact_generated": exact_answer(q, found),
                "objects": [list(key) for key in q.objects],
            }
        )
    return {"id": example.id, "prompt": example.prompt, "image": str(image_path.relative_to(out_dir)),
            "check_generated": check_scene(detections, scene),
            "check_real": check_scene(detect(real, classifier), scene),
            "detected": [asdict(d) for d in detections], "questions": rows}  # fmt: skip


def answer_matches(answer: str, truth: str) -> bool:
    return normalize_answer(answer) == normalize_answer(truth)


_NAMED_OBJECT = re.compile(rf"\b({'|'.join(COLOURS)}) ({'|'.join(SHAPES)})\b")


def question_objects(row: dict) -> list[tuple[str, str]]:
    """The (colour, shape) pairs a scored question is about: stored with it, or (folders written before they were
    stored) read from its text, where the world's questions name every object as "colour shape"."""
    if "objects" in row:
        return [tuple(key) for key in row["objects"]]
    return _NAMED_OBJECT.findall(row["question"])


def dsg_hits(questions: list[dict], which: str) -> list[bool]:
    """Whether the VLM's answer (``which``: "generated" or "real") to each question passes under DSG's dependencies:
    a cell, size or relation question fails when the VLM answered "no" to the existence of an object it is about."""
    seen = {tuple(question_objects(q)[0]) for q in questions
            if q["qtype"] == "exist" and q["answer"] == "yes" and answer_matches(q[f"vlm_{which}"], "yes")}  # fmt: skip
    hits = []
    for q in questions:
        hit = answer_matches(q[f"vlm_{which}"], q["answer"])
        if q["qtype"] in ("position", "size", "relation"):
            hit = hit and all(key in seen for key in question_objects(q))
        hits.append(hit)
    return hits


def tifa_score(vlm, processor, image: Image.Image, scene: Scene) -> float:
    """TIFA score of one image: the fraction of :func:`judge_questions` the VLM answers right on it."""
    questions = judge_questions(scene)
    answers = vlm_answers(vlm, processor, [image] * len(questions), [q.question for q in questions])
    return float(np.mean([answer_matches(a, q.answer) for a, q in zip(answers, questions)]))


def summarize_t2i(records: list[dict]) -> dict:
    """Exact checks (generated and real), VLM-judge accuracy (generated and real, per question type),
    the faithfulness ratio generated / real, and the VLM-vs-exact agreement (rate and Cohen's kappa)."""
    if not records:
        raise ExploreError("no world-t2i predictions to summarise")
    summary: dict = {}
    for which in ("generated", "real"):
        summary[f"exact_{which}"] = {k: float(np.mean([r[f"check_{which}"][k] for r in records])) for k in CHECK_KEYS}
    questions = [q for r in records for q in r["questions"]]
    vlm_generated = np.array([answer_matches(q["vlm_generated"], q["answer"]) for q in questions])
    vlm_real = np.array([answer_matches(q["vlm_real"], q["answer"]) for q in questions])
    exact_generated = np.array([answer_matches(q["exact_generated"], q["answer"]) for q in questions])
    qtypes = sorted({q["qtype"] for q in questions})
    for name, hits in (("vlm_judge_generated", vlm_generated), ("vlm_judge_real", vlm_real),
                       ("exact_questions_generated", exact_generated)):  # fmt: skip
        per_type = {t: float(np.mean([h for h, q in zip(hits, questions) if q["qtype"] == t])) for t in qtypes}
        summary[name] = {"overall": float(hits.mean()), **per_type}
    # TIFA score per image: the fraction of its questions answered right, averaged over images.
    tifa = [np.mean([answer_matches(q["vlm_generated"], q["answer"]) for q in r["questions"]]) for r in records]
    tifa_real = [np.mean([answer_matches(q["vlm_real"], q["answer"]) for q in r["questions"]]) for r in records]
    summary["tifa"] = {"generated": float(np.mean(tifa)), "real": float(np.mean(tifa_real))}
    # The same with DSG's dependencies (module docstring): hits per record, once per image kind.
    dsg = {which: [dsg_hits(r["questions"], which) for r in records] for which in ("generated", "real")}
    summary["dsg"] = {which: float(np.mean([np.mean(hits) for hits in dsg[which]])) for which in dsg}
    summary["faithfulness_vs_real"] = {
        "exact": _ratio(summary["exact_generated"]["exact"], summary["exact_real"]["exact"]),
        "object": _ratio(summary["exact_generated"]["object"], summary["exact_real"]["object"]),
        "tifa": _ratio(summary["tifa"]["generated"], summary["tifa"]["real"]),
        "dsg": _ratio(summary["dsg"]["generated"], summary["dsg"]["real"]),
    }
    summary["judge_agreement"] = {"rate": float((vlm_generated == exact_generated).mean()),
                                  "cohen_kappa": cohen_kappa(vlm_generated, exact_generated),
                                  "questions": len(questions)}  # fmt: skip
    dsg_generated = np.array([hit for hits in dsg["generated"] for hit in hits])
    summary["judge_agreement_dsg"] = {"rate": float((dsg_generated == exact_generated).mean()),
                                      "cohen_kappa": cohen_kappa(dsg_generated, exact_generated),
                                      "questions": len(questions)}  # fmt: skip
    return summary


def _ratio(value: float, bound: float) -> float:
    return float(value / bound) if bound > 0 else float("nan")


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's kappa of two boolean raters (agreement beyond chance; NaN when chance agreement is 1),
    by torchmetrics' ``binary_cohen_kappa``."""
    first, second = (torch.as_tensor(np.asarray(x, bool), dtype=torch.long) for x in (a, b))
    return float(binary_cohen_kappa(first, second))


def _image_tensor(images: list[Image.Image]) -> torch.Tensor:
    array = np.stack([np.asarray(image.convert("RGB"), dtype=np.uint8) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2)  # (B, 3, H, W) uint8


@torch.no_grad()
def frechet_distance(features, first: list[Image.Image], second: list[Image.Image], batch_size: int = 64) -> float:
    """Fréchet distance between two image sets on ``features`` (a module with ``num_features`` that maps
    uint8 (B, 3, H, W) to (B, C)), with torchmetrics' ``FrechetInceptionDistance``."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if min(len(first), len(second)) < 2:
        raise ExploreError("a Fréchet distance needs at least 2 images per set; raise --limit")
    metric = FrechetInceptionDistance(feature=features, normalize=False)
    for images, real in ((first, False), (second, True)):
        for start in range(0, len(images), batch_size):
            metric.update(_image_tensor(images[start : start + batch_size]), real=real)
    return float(metric.compute())


def frechet_scores(records: list[dict], out_dir: Path, examples: list[Example], vlm) -> dict[str, float]:
    """FD(generated, real renders of the same prompts) and the floor FD(real, real renders of other scenes)."""
    by_id = {example.id: example for example in examples}
    generated = [Image.open(out_dir / r["image"]).convert("RGB") for r in records]
    real = [by_id[r["id"]].load_image() for r in records]
    side = real[0].size[0]
    others = [render(scene, side) for scene in split_scenes("val", len(real), seed=1)]  # another split and seed
    features = VisionFeatures.from_vlm(vlm)
    return {"generated_vs_real": frechet_distance(features, generated, real),
            "real_vs_real": frechet_distance(features, others, real), "images": len(real)}  # fmt: skip
