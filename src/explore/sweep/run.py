"""Run a sweep: for every point, compress → recover → evaluate → measure, one JSON line per point.

The sweep resumes at every level: a point already in ``results.jsonl`` is skipped (if its recipe
is unchanged — a changed recipe is an error, so old numbers never mix with new ones); a model already
saved (by a killed run, or by a point that differs only in precision) is not compressed and
fine-tuned again; an evaluation resumes from its
``predictions.jsonl``. Killing the sweep loses at most the batch in flight.

Layout of ``output_dir``::

    config.yaml, run.json        the resolved config, argv, version, git commit
    results.jsonl                one line per finished point (scores, retention, cost, recovery log)
    latency.json                 the latency of every finished point, timed side by side in one pass at the end
    failed.json                  points whose last try raised: the error and its traceback (retried on resume)
    models/<key>/                a compressed, recovered model (a normal HF folder, fp32); points that
                                 differ only in precision share it (key: a hash of the recipes)
    models/<key>.json            its dropped blocks and fine-tuning summary
    points/<name>/model-<prec>/  the point's model at lower precision (int8, ...), a normal HF folder
    points/<name>/eval/<task>/   predictions.jsonl + summary.json per task
    report.md, report.html, *.png
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.console import Console

from explore.adapt.adapters import load_adapter, merge_adapter, save_adapter
from explore.adapt.distill import TeacherAnswers
from explore.adapt.finetune import finetune
from explore.compress.depth import block_count, drop_layers, drop_least_influential
from explore.compress.fastv import prune_image_tokens
from explore.compress.precision import load_at_precision, save_quantized
from explore.compress.queries import prune_queries
from explore.compress.resolution import change_resolution
from explore.compress.width import prune_width
from explore.data.example import Example
from explore.errors import ExploreError
from explore.eval.cost import disk_bytes, flops_per_example, interleaved_latency, parameter_counts, peak_memory
from explore.eval.runner import run_task
from explore.eval.tasks import TaskOptions, get_task
from explore.models.collate import collate, to_model
from explore.models.loading import load_model, save_model
from explore.runs import DiskError, JsonlLog, check_header, config_hash, read_jsonl, write_json, write_run_info
from explore.sweep.config import ORIGINAL, CompressSection, PointSection, SweepConfig
from explore.sweep.report import write_report
from explore.world.examples import world_examples

RESULTS = "results.jsonl"
LATENCY = "latency.json"
FAILED = "failed.json"


@dataclass
class SweepData:
    """Everything every point is measured on, built once per sweep."""

    tasks: dict[str, list[Example]]  # task name → evaluation examples (images decoded)
    timing: list[Example]  # world VQA questions for latency and memory
    calibration: list[Example]  # validation-split examples for block influence
    # recovery name → the original's answer logits by data position, computed by the first point that distils
    # with that recipe and read by the others (the teacher and the data stream are the same for all of them)
    teacher_answers: dict[str, TeacherAnswers] = field(default_factory=dict)


def primary_score(kind: str, summary: dict) -> float:
    """The one number a task is ranked by: VQA accuracy, judge accuracy, or CIDEr-D."""
    if kind == "vqa":
        return float(summary["vqa_accuracy"]["overall"])
    if kind == "judge":
        if summary["overall"] is None:
            raise ExploreError("the judge parsed no answer at all; its accuracy is undefined")
        return float(summary["overall"])
    return float(summary["cider_d"])


def read_results(path: Path) -> dict[str, dict]:
    """Finished points by name (a line cut off by a kill is left out and re-run), with the latency of the
    interleaved pass (``latency.json`` next to ``path``) added to each point's ``cost`` where it was timed."""
    results = {record["name"]: record for record in read_jsonl(path)}
    latency_path = Path(path).parent / LATENCY
    if latency_path.is_file():
        timed = json.loads(latency_path.read_text(encoding="utf-8"))["latency"]
        for name, record in results.items():
            record["cost"].update(timed.get(name, {}))
    return results


def read_failures(out: Path) -> dict[str, dict]:
    """Points whose last try raised, by name: ``{"error": one line, "traceback": text}``."""
    path = out / FAILED
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def run_header(config: SweepConfig) -> dict:
    """What every point of a sweep shares: resuming an ``output_dir`` with another model, seed or task list is
    refused (:func:`explore.runs.check_header`); a changed point recipe is caught per point, by its fingerprint."""
    return {"command": "sweep", "model": config.model, "seed": config.seed, "dtype": str(config.dtype),
            "tasks": config_hash([task.model_dump() for task in config.tasks])}  # fmt: skip


def build_data(config: SweepConfig, resolution: int) -> SweepData:
    """Evaluation, timing and calibration examples at the original model's ``resolution``."""
    tasks = {}
    for section in config.tasks:
        options = TaskOptions(data=section.data, annotations=section.annotations, images=section.images,
                              split=section.split, seed=config.seed, limit=section.limit, resolution=resolution)  # fmt: skip
        examples = get_task(section.name).load(options)
        for example in examples:
            example.image = example.load_image()
        tasks[section.name] = examples
    cost = config.cost
    timing = world_examples("test", max(cost.latency_examples, cost.flops_examples), "vqa", seed=config.seed,
                            resolution=resolution)  # fmt: skip
    calibration = world_examples("val", config.calibration_examples, "vqa", seed=config.seed, resolution=resolution)
    return SweepData(tasks=tasks, timing=timing, calibration=calibration)


def compress(model, processor, recipe: CompressSection, calibration: list[Example]):
    """Apply ``recipe`` (queries → resolution → depth → width → FastV; precision comes later) to copies of the model.

    Returns (model, processor, dropped) where ``dropped`` maps each component to the removed block
    positions (chosen by block influence on ``calibration`` or given in the recipe), and ``"<component> width"``
    to its new sizes (FFN channels / heads kept per layer, chosen by importance on ``calibration``).
    """
    model, processor = copy.deepcopy(model), copy.deepcopy(processor)  # recovery trains in place
    if recipe.queries:
        model, processor = prune_queries(model, processor, recipe.queries.keep, recipe.queries.strategy)
    if recipe.resolution:
        model, processor = change_resolution(model, processor, recipe.resolution)
    dropped: dict[str, list[int] | dict[str, int]] = {}

    def calibration_batch(model, processor) -> dict:
        batch = collate(calibration, processor, with_labels=True, max_length=64,
                        decoder_only=bool(model.config.use_decoder_only_language_model))  # fmt: skip
        return to_model(batch, model)

    for depth in recipe.depth:
        if isinstance(depth.drop, list):
            model, dropped[depth.component] = drop_layers(model, depth.component, depth.drop), sorted(depth.drop)
            continue
        n = block_count(model, depth.component)
        if depth.drop >= n:
            raise ExploreError(f"cannot drop {depth.drop} of the {n} {depth.component} blocks; keep at least one")
        if depth.by == "last":
            positions = list(range(n - depth.drop, n))
            model, dropped[depth.component] = drop_layers(model, depth.component, positions), positions
        else:
            model, dropped[depth.component] = drop_least_influential(model, calibration_batch(model, processor),
                                                                     depth.component, depth.drop)  # fmt: skip
    for width in recipe.width:
        model, dropped[f"{width.component} width"] = prune_width(
            model, calibration_batch(model, processor), width.component, ffn_keep=width.ffn_keep,
            heads_keep=width.heads_keep,
        )  # fmt: skip
    if recipe.fastv:  # last: its hooks sit on the blocks the other operators leave
        model = prune_image_tokens(model, recipe.fastv.ratio, recipe.fastv.layer)
    return model.eval(), processor, dropped


def measure_cost(model, processor, fp32_model, folder: Path, data: SweepData, config: SweepConfig) -> dict:
    """Parameters, bytes on disk, FLOPs (counted on the fp32 weights: same arithmetic) and memory. Latency is
    not measured here but for all points side by side at the end of the sweep (:func:`measure_latency`)."""
    cost = config.cost
    memory = peak_memory(model, processor, data.timing[: cost.batch_size])
    return {
        **{f"params_{key}": value for key, value in parameter_counts(fp32_model).items()},
        "disk_bytes": disk_bytes(folder),
        "flops_per_example": flops_per_example(fp32_model, processor, data.timing[: cost.flops_examples]),
        "weight_bytes": memory["weights"],  # parameters and buffers in memory
        "activation_peak_bytes": memory["peak_generation"],  # tensors alive at once while generating a batch
        "peak_memory_bytes": memory["weights"] + memory["peak_generation"],
    }


def latency_method(config: SweepConfig) -> str:
    """How :func:`measure_latency` times the points, in words (for the report)."""
    cost = config.cost
    return (f"latency was measured for all points side by side in one pass at the end of the sweep: "
            f"{cost.rounds} rounds, each timing every point once per batch size (1 and {cost.batch_size}) "
            f"round-robin from a start that moves by one point each round, after one untimed pass of each point; "
            f"a timing is an untimed warm-up pass "
            f"over {cost.latency_examples} world VQA questions, then timed passes for {cost.min_run_time:g} s "
            f"(at least one; torch.utils.benchmark's blocked_autorange), and each point keeps the median over "
            f"the rounds of its median pass")  # fmt: skip


def point_model(point: PointSection, config: SweepConfig, out: Path):
    """(model, processor) of a finished point, loaded from its saved fp32 model (quantized again if its precision
    is not fp32, as when it was evaluated)."""
    model_dir = out / "models" / point.model_key(config.recovery_for(point))
    if not (model_dir / "config.json").is_file():
        raise ExploreError(f"{model_dir}: the model of point {point.name!r} is gone (keep_models: false removes the "
                           "models after a sweep), so its latency cannot be measured beside the others; "
                           "use a new output_dir")  # fmt: skip
    if point.compress.precision != "fp32":
        return load_at_precision(model_dir, point.compress.precision, device=config.device)
    return load_model(model_dir, device=config.device, dtype=config.dtype)


def measure_latency(config: SweepConfig, out: Path, names: list[str]) -> dict:
    """Time the points ``names`` side by side (:func:`explore.eval.cost.interleaved_latency`); return what
    ``latency.json`` holds: the points, how they were timed, and ``latency``: name → {latency_b1_s, ...}."""
    points = {p.name: p for p in config.all_points()}
    cost = config.cost
    resolution = None
    models = {}
    for name in names:
        models[name] = point_model(points[name], config, out)
        models[name][0].requires_grad_(False)
        if name == ORIGINAL:
            resolution = int(models[name][1].image_processor.size["height"])
    timing = world_examples("test", cost.latency_examples, "vqa", seed=config.seed, resolution=resolution)
    sizes = sorted({1, cost.batch_size})
    seconds = interleaved_latency(models, timing, batch_sizes=sizes, rounds=cost.rounds, min_run_time=cost.min_run_time)
    return {"points": names, "settings": latency_settings(config), "method": latency_method(config),
            "latency": {name: {f"latency_b{b}_s": statistics.median(rounds) for b, rounds in by_size.items()}
                        for name, by_size in seconds.items()},
            "rounds": {name: {f"latency_b{b}_s": rounds for b, rounds in by_size.items()}
                       for name, by_size in seconds.items()}}  # fmt: skip


def latency_settings(config: SweepConfig) -> dict:
    """What decides a latency pass besides the points (a pass with other settings is done again)."""
    return {"cost": config.cost.model_dump(exclude={"flops_examples"}), "device": config.device,
            "dtype": config.dtype}  # fmt: skip


def _recover(model, processor, point: PointSection, config: SweepConfig, teacher, progress: bool,
             teacher_answers: dict[str, TeacherAnswers]):  # fmt: skip
    """Fine-tune ``model`` with the point's recovery recipe, merge any adapter back in, and
    return (model, the fine-tune's summary or None)."""
    recipe = config.recovery_for(point)
    if recipe is None:
        return model, None
    distill = recipe.needs_teacher  # logit KL, hidden-state or attention transfer
    result = finetune(model, processor, recipe, teacher=teacher[0] if distill else None,
                      teacher_processor=teacher[1] if distill else None, progress=progress,
                      teacher_answers=teacher_answers.setdefault(point.recover, TeacherAnswers()) if distill else None)  # fmt: skip
    if recipe.method == "qlora":
        # the adapter was trained over a 4-bit copy; merge it into the full-precision weights instead
        with tempfile.TemporaryDirectory() as folder:
            save_adapter(result.model, folder)
            return merge_adapter(load_adapter(model, folder)).eval(), result.summary()
    return (merge_adapter(result.model) if recipe.adapter else result.model).eval(), result.summary()


def _finished_model(model_dir: Path, meta_path: Path) -> dict | None:
    """The notes of a model an earlier run finished, or None: no model, no marker, or a marker that is not
    JSON (an explore before the atomic marker could leave one cut by a kill; the model is then made again)."""
    if not ((model_dir / "config.json").is_file() and meta_path.is_file()):
        return None
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def run_point(point: PointSection, config: SweepConfig, original, data: SweepData, out: Path, *,
              progress: bool) -> dict:  # fmt: skip
    """Compress, recover, evaluate and measure one point; return its results record."""
    started = time.perf_counter()
    point_dir = out / "points" / point.name
    recipe = config.recovery_for(point)
    key = point.model_key(recipe)  # points that differ only in precision share one recovered model
    model_dir, meta_path = out / "models" / key, out / "models" / f"{key}.json"
    meta = _finished_model(model_dir, meta_path)
    if meta is not None:  # saved by an earlier point or a killed run
        model, processor = load_model(model_dir, device=config.device, dtype=config.dtype)
    else:
        model, processor, dropped = compress(*original, point.compress, data.calibration)
        model, recovery = _recover(model, processor, point, config, original, progress, data.teacher_answers)
        meta = {"dropped": dropped, "recovery": recovery}
        save_model(model, processor, model_dir)
        write_json(meta_path, meta)  # written last and atomically: its presence marks a finished model
    # from here on the model is only measured: frozen, whether recovered just now or loaded from an earlier
    # (killed) run, so its record (params_trainable included) does not depend on which
    model.requires_grad_(False)
    fp32_model, saved = model, model_dir
    if point.compress.precision != "fp32":
        model, processor = load_at_precision(model_dir, point.compress.precision, device=config.device)
        saved = save_quantized(model, processor, point_dir / f"model-{point.compress.precision}")
    scores, summaries = {}, {}
    for section in config.tasks:
        task = get_task(section.name)
        summary = run_task(model, processor, task, data.tasks[section.name], point_dir / "eval" / section.name,
                           batch_size=config.eval_batch_size, seed=config.seed, progress=progress)  # fmt: skip
        scores[section.name] = primary_score(task.kind, summary)
        summaries[section.name] = summary
    record = {
        "name": point.name,
        "label": point.compress.describe(),
        "recover": point.recover,
        "recover_method": recipe.method if recipe else None,
        "fingerprint": point.fingerprint(recipe),
        "compress": point.compress.model_dump(),
        "dropped": meta["dropped"],
        "recovery": meta["recovery"],
        "scores": scores,
        "summaries": summaries,
        "cost": measure_cost(model, processor, fp32_model, saved, data, config),
        "model_dir": str(saved),
        "seconds": round(time.perf_counter() - started, 1),
    }
    return record


def failure_of(point: PointSection, error: Exception) -> dict:
    """What ``failed.json`` keeps of a point that raised: the error in one line and its traceback."""
    message = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, ExploreError):
        message = f"{type(error).__name__}: {message}"
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return {"error": message, "traceback": trace}


class LocalRunner:
    """Runs the points one after another in this process (``--backend local``, the default)."""

    def __init__(self, *, progress: bool = True, console: Console | None = None) -> None:
        self.progress, self.console = progress, console or Console(stderr=True, quiet=not progress)

    def run_points(self, config: SweepConfig, out: Path, todo: list[PointSection]) -> Iterator[tuple]:
        """Yield ``(point, record, None)`` for each point that finished and ``(point, None, failure)`` for each
        that raised (:func:`failure_of`); a point that raises does not stop the others."""
        torch.manual_seed(config.seed)
        original = load_model(config.model, device=config.device, dtype=config.dtype)
        data = build_data(config, int(original[1].image_processor.size["height"]))
        for index, point in enumerate(todo, start=1):
            self.console.rule(f"[bold]{index}/{len(todo)}[/bold] {point.name}: {point.compress.describe()}, "
                              f"recovery {point.recover}")  # fmt: skip
            try:
                record = run_point(point, config, original, data, out, progress=self.progress)
            except (DiskError, MemoryError):  # the machine's problem, not the point's: every point would fail
                raise
            except Exception as error:  # noqa: BLE001  (recorded in failed.json with its traceback; the rest go on)
                yield point, None, failure_of(point, error)
                continue
            yield point, record, None

    def measure_latency(self, config: SweepConfig, out: Path, names: list[str]) -> dict:
        """:func:`measure_latency` in this process."""
        return measure_latency(config, out, names)


def run_sweep(config: SweepConfig, *, config_path: str | None = None, only: list[str] | None = None,
              progress: bool = True, console: Console | None = None, runner=None) -> Path:  # fmt: skip
    """Run (or resume) every point of ``config`` (or just the ``only`` ones, plus ``original``).

    ``runner`` runs the points: :class:`LocalRunner` (the default) one after another in this process,
    :class:`explore.sweep.ray_backend.RayRunner` as tasks on a Ray cluster. Either way each finished point is
    appended to ``results.jsonl`` here as soon as it is done; a point that raises is written to ``failed.json``
    and the others go on. When every point is done, the latency of all of them is measured side by side in
    one pass (``latency.json``; kept while the finished points and the cost settings stay the same).

    Returns the path of ``results.jsonl``; the report is written next to it. Raises ExploreError (after the
    report) naming the points that failed.
    """
    console = console or Console(stderr=True, quiet=not progress)
    runner = runner or LocalRunner(progress=progress, console=console)
    if config.device == "cuda" and not torch.cuda.is_available() and isinstance(runner, LocalRunner):
        raise ExploreError("the sweep config asks for device: cuda, but no CUDA GPU is visible; use device: cpu")
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    points = config.all_points()
    if only:
        unknown = sorted(set(only) - {p.name for p in points})
        if unknown:
            raise ExploreError(f"--only: no point called {unknown}; points: {', '.join(p.name for p in points)}")
        points = [p for p in points if p.name == ORIGINAL or p.name in only]
    results_path = out / RESULTS
    results = JsonlLog(results_path)  # a line cut off by a kill is truncated away and its point re-run
    # finished models count as outputs too: a model of another base under the same recipe key must not be reused
    outputs = bool(results.records) or any((out / "models").glob("*.json"))
    check_header(out, run_header(config), has_outputs=outputs, option="output_dir")
    write_run_info(out, config.model_dump())
    done = {record["name"]: record for record in results.records}
    for point in points:
        if point.name in done and done[point.name]["fingerprint"] != point.fingerprint(config.recovery_for(point)):
            raise ExploreError(f"{results_path} holds point {point.name!r} with a different recipe; rename the point "
                               "or use a new output_dir (old and new numbers must not mix)")  # fmt: skip
    todo = [p for p in points if p.name not in done]
    console.print(f"[bold]sweep[/bold] {len(points)} points ({len(points) - len(todo)} done) → {out}")
    failures = {name: failure for name, failure in read_failures(out).items()
                if name not in done and name not in {p.name for p in todo}}  # fmt: skip
    if todo:
        for point, record, failure in runner.run_points(config, out, todo):
            if failure is not None:
                failures[point.name] = failure
                write_json(out / FAILED, failures)
                console.print(f"  [bold red]{point.name} failed:[/] {failure['error']}")
                continue
            results.append([record])
            scores = ", ".join(f"{task} {score:.3f}" for task, score in record["scores"].items())
            console.print(f"  {point.name}: {scores}; {record['seconds']:.0f} s")
    if (out / FAILED).is_file() or failures:
        write_json(out / FAILED, failures)
    finished = {record["name"] for record in results.records}
    names = [p.name for p in config.all_points() if p.name in finished]
    if ORIGINAL in finished and not _latency_is_current(out, config, names):
        console.print(f"[bold]latency[/bold] of {len(names)} points, side by side ({config.cost.rounds} rounds)")
        write_json(out / LATENCY, runner.measure_latency(config, out, names))
    if not config.keep_models:
        shutil.rmtree(out / "models", ignore_errors=True)
    write_sweep_report(config, out, config_path)
    if failures:
        raise ExploreError(f"{len(failures)} point(s) failed: "
                           + "; ".join(f"{name}: {failure['error']}" for name, failure in failures.items())
                           + f" (tracebacks in {out / FAILED}; the report has the others; run again to retry them)")
    return results_path


def write_sweep_report(config: SweepConfig, out: Path, config_path: str | None = None) -> Path:
    """Write the report of ``out`` from its results, latency pass and failures; return the Markdown path."""
    return write_report(config, read_results(out / RESULTS), out, [p.name for p in config.all_points()], config_path,
                        failures=read_failures(out), latency_method=latency_method(config))  # fmt: skip


def _latency_is_current(out: Path, config: SweepConfig, names: list[str]) -> bool:
    """Whether ``latency.json`` already times exactly ``names`` with the config's cost settings."""
    path = out / LATENCY
    if not path.is_file():
        return False
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return False
    return saved.get("points") == names and saved.get("settings") == json.loads(json.dumps(latency_settings(config)))
