"""The evaluation tasks, by name: where their examples come from and what kind of scoring they get.

| task             | kind    | source                                                              |
|------------------|---------|---------------------------------------------------------------------|
| world-vqa        | vqa     | shapes world (split, seed), exact match per question type            |
| world-caption    | caption | shapes world, BLEU-4 / CIDEr-D and exact scene recovery              |
| world-judge      | judge   | shapes-world judge pairs, written and re-read in VL-RewardBench's schema |
| vl-rewardbench   | judge   | the hub (``MMInstruction/VL-RewardBench``) or a local parquet        |
| vqav2            | vqa     | local VQAv2 questions + annotations JSON and a COCO image folder     |
| coco-captions    | caption | local COCO caption JSON and an image folder                          |
| world-t2i        | t2i     | shapes-world prompts → generated images, exact / VLM-judged / Fréchet (explore.eval.t2i) |
| world-geneval    | geneval | GenEval's six categories + full scenes, exact checks (explore.eval.geneval) |
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from explore.data.coco import load_coco_captions
from explore.data.example import Example
from explore.data.vlrewardbench import HUB_ID, load_vlrewardbench
from explore.data.vqav2 import load_vqav2
from explore.errors import ExploreError
from explore.eval.geneval import DEFAULT_PROMPTS, geneval_examples
from explore.eval.t2i import DEFAULT_T2I_EXAMPLES, t2i_examples
from explore.world.examples import world_examples
from explore.data.world_export import export_vlrewardbench

DEFAULT_WORLD_EXAMPLES = 500


@dataclass(frozen=True)
class TaskOptions:
    """Where a task's data is and how much of it to use."""

    data: str | None = None  # VL-RewardBench hub id / parquet; VQAv2 questions JSON; COCO captions JSON
    annotations: str | None = None  # VQAv2 annotations JSON
    images: str | None = None  # image folder for VQAv2 / COCO
    split: str = "test"  # shapes-world split (train / val / test / compositional)
    seed: int = 0  # shapes-world base seed
    limit: int | None = None  # at most this many examples
    resolution: int = 64  # shapes-world image side


@dataclass(frozen=True)
class EvalTask:
    name: str
    kind: Literal["vqa", "caption", "judge", "t2i", "geneval"]
    description: str
    load: Callable[[TaskOptions], list[Example]]


def _world(task: str) -> Callable[[TaskOptions], list[Example]]:
    def load(options: TaskOptions) -> list[Example]:
        n = options.limit or DEFAULT_WORLD_EXAMPLES
        return world_examples(options.split, n, task, seed=options.seed, resolution=options.resolution)

    return load


def _world_judge(options: TaskOptions) -> list[Example]:
    """World judge pairs through the VL-RewardBench writer and loader (same schema, same categories)."""
    n = options.limit or DEFAULT_WORLD_EXAMPLES
    with tempfile.TemporaryDirectory() as folder:
        path = export_vlrewardbench(Path(folder), n, seed=options.seed, split=options.split,
                                    resolution=options.resolution)  # fmt: skip
        return load_vlrewardbench(str(path))


def _require(value: str | None, flag: str, task: str) -> str:
    if not value:
        raise ExploreError(f"task {task!r} needs {flag}; see `explore eval --help`")
    return value


def _vl_rewardbench(options: TaskOptions) -> list[Example]:
    return load_vlrewardbench(options.data or HUB_ID, limit=options.limit)


def _vqav2(options: TaskOptions) -> list[Example]:
    questions = _require(options.data, "--data QUESTIONS.json", "vqav2")
    images = _require(options.images, "--images FOLDER", "vqav2")
    return load_vqav2(questions, _require(options.annotations, "--annotations ANNOTATIONS.json", "vqav2"), images,
                      limit=options.limit)  # fmt: skip


def _coco(options: TaskOptions) -> list[Example]:
    captions = _require(options.data, "--data CAPTIONS.json", "coco-captions")
    return load_coco_captions(captions, _require(options.images, "--images FOLDER", "coco-captions"), limit=options.limit)


def _world_t2i(options: TaskOptions) -> list[Example]:
    """Held-out prompts (canonical captions) with real renders at the generator's resolution."""
    return t2i_examples(options.split, options.limit or DEFAULT_T2I_EXAMPLES, seed=options.seed,
                        resolution=options.resolution)  # fmt: skip


def _world_geneval(options: TaskOptions) -> list[Example]:
    """GenEval-shaped prompts (per category, seen and held-out pairs) and full scenes of ``options.split``."""
    return geneval_examples(options.limit or DEFAULT_PROMPTS, seed=options.seed, full_scene_split=options.split)


TASKS: dict[str, EvalTask] = {
    task.name: task
    for task in (
        EvalTask("world-vqa", "vqa", "shapes-world questions, exact match per question type", _world("vqa")),
        EvalTask("world-caption", "caption", "shapes-world captions, BLEU-4 / CIDEr-D / exact scene", _world("caption")),
        EvalTask("world-judge", "judge", "shapes-world judge pairs in the VL-RewardBench schema", _world_judge),
        EvalTask("vl-rewardbench", "judge", "VL-RewardBench (hub or local parquet)", _vl_rewardbench),
        EvalTask("vqav2", "vqa", "VQAv2 from local questions / annotations / images", _vqav2),
        EvalTask("coco-captions", "caption", "COCO captions from a local JSON and images", _coco),
        EvalTask("world-t2i", "t2i", "text-to-image faithfulness on shapes-world prompts", _world_t2i),
        EvalTask("world-geneval", "geneval", "GenEval-style exact checks of generated shapes-world images",
                 _world_geneval),
    )
}


def get_task(name: str) -> EvalTask:
    """The task called ``name``; ExploreError listing the tasks if unknown."""
    if name not in TASKS:
        raise ExploreError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name]
