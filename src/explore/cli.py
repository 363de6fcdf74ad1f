"""The ``explore`` command line.

Every command reports user errors (:class:`~explore.errors.ExploreError`) as one line on stderr
and exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from explore.errors import ExploreError

app = typer.Typer(help="explore: compress and evaluate InstructBLIP-style vision-language models.",
                  no_args_is_help=True, pretty_exceptions_enable=False)  # fmt: skip
world_app = typer.Typer(help="The shapes world: export data, show scenes.", no_args_is_help=True)
app.add_typer(world_app, name="world")
diffusion_app = typer.Typer(help="Text-to-image diffusion on the shapes world: train.", no_args_is_help=True)
app.add_typer(diffusion_app, name="diffusion")

console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False) -> None:
    _state["debug"] = debug


def _check_split(split: str) -> None:
    from explore.world.splits import SPLITS

    if split not in SPLITS:
        raise ExploreError(f"unknown --split {split!r}; choose one of: {', '.join(SPLITS)}")


def _positive(name: str, value: int) -> int:
    if value <= 0:
        raise ExploreError(f"--{name} must be a positive integer, got {value}")
    return value


@world_app.command("export")
def world_export(
    out: Annotated[Path, typer.Option(help="Output folder.")],
    n: Annotated[int, typer.Option(help="Number of scenes (jsonl) or judge pairs (vlrewardbench).")] = 100,
    seed: Annotated[int, typer.Option(help="Base seed of the split.")] = 0,
    split: Annotated[str, typer.Option(help="train, val, test or compositional.")] = "test",
    format: Annotated[str, typer.Option("--format", help="jsonl (PNG + JSONL) or vlrewardbench (parquet).")] = "jsonl",
    resolution: Annotated[int, typer.Option(help="Image side in pixels.")] = 64,
) -> None:
    """Write shapes-world scenes with their questions, captions and judge pairs."""
    from explore.world.export import EXPORT_FORMATS, export_jsonl, export_vlrewardbench

    _positive("n", n)
    _positive("resolution", resolution)
    if format not in EXPORT_FORMATS:
        raise ExploreError(f"unknown --format {format!r}; choose one of: {', '.join(EXPORT_FORMATS)}")
    _check_split(split)
    if seed < 0:
        raise ExploreError(f"--seed must be non-negative, got {seed}")
    if format == "jsonl":
        counts = export_jsonl(out, n, seed=seed, split=split, resolution=resolution, progress=True)
        summary = ", ".join(f"{k}: {v}" for k, v in counts.items())
        typer.echo(f"wrote {out} ({summary})")
    else:
        path = export_vlrewardbench(out, n, seed=seed, split=split, resolution=resolution)
        typer.echo(f"wrote {path} ({n} judge pairs in the VL-RewardBench schema)")


@world_app.command("show")
def world_show(
    out: Annotated[Path, typer.Option(help="Output PNG file.")] = Path("contact_sheet.png"),
    n: Annotated[int, typer.Option(help="Number of scenes.")] = 16,
    seed: Annotated[int, typer.Option(help="Base seed of the split.")] = 0,
    split: Annotated[str, typer.Option(help="train, val, test or compositional.")] = "test",
    columns: Annotated[int, typer.Option(help="Scenes per row.")] = 4,
) -> None:
    """Write a contact sheet PNG of scenes with their captions."""
    from explore.world.export import contact_sheet
    from explore.world.splits import split_scenes

    _positive("n", n)
    _positive("columns", columns)
    _check_split(split)
    if out.suffix.lower() != ".png":
        raise ExploreError(f"--out must be a .png file, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(split_scenes(split, n, seed), columns=columns).save(out)
    typer.echo(f"wrote {out} ({n} scenes)")


@app.command("pretrain")
def pretrain_command(
    config: Annotated[Path, typer.Option("--config", help="Pretraining YAML (e.g. configs/pretrain/shapes-small.yaml).")],
    resume: Annotated[str | None, typer.Option(help="'latest' or a checkpoints/step-* folder to continue from.")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Override the config's output_dir.")] = None,
) -> None:
    """Train a from-scratch InstructBLIP on the shapes world (stages, validation, checkpoints)."""
    from explore.train.config import load_train_config
    from explore.train.loop import pretrain

    cfg = load_train_config(config)
    if output_dir is not None:
        cfg = cfg.model_copy(update={"output_dir": output_dir})
    final = pretrain(cfg, resume=resume)
    typer.echo(f"saved the trained model to {final}")


@diffusion_app.command("train")
def diffusion_train_command(
    config: Annotated[Path, typer.Option("--config", help="Diffusion YAML (configs/diffusion/*.yaml).")],
    resume: Annotated[str | None, typer.Option(help="'latest' or a checkpoints/step-* folder.")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Override the config's output_dir.")] = None,
) -> None:
    """Train the text-to-image model (EMA, validation grids, atomic resumable checkpoints)."""
    from explore.diffusion.config import load_diffusion_config
    from explore.diffusion.train import train_diffusion

    cfg = load_diffusion_config(config)
    if output_dir is not None:
        cfg = cfg.model_copy(update={"output_dir": output_dir})
    final = train_diffusion(cfg, resume=resume)
    typer.echo(f"saved the trained pipeline (EMA weights) to {final}")


@app.command("generate")
def generate_command(
    prompt: Annotated[str, typer.Argument(help="What to draw, e.g. 'a red circle above a blue square'.")],
    out: Annotated[Path, typer.Option("--out", help="Output PNG: the images side by side.")],
    n: Annotated[int, typer.Option("-n", help="Number of images.")] = 4,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 20,
    guidance: Annotated[float, typer.Option(help="Classifier-free guidance scale (1 = off).")] = 3.0,
    seed: Annotated[int, typer.Option(help="Seed of the initial noise (same seed, same images).")] = 0,
    scheduler: Annotated[str, typer.Option(help="Sampler: dpm (DPM-Solver++), ddim, ddpm or unipc.")] = "dpm",
    checkpoint: Annotated[Path | None, typer.Option(help="Pipeline folder (default: the packaged one).")] = None,
    scale: Annotated[int, typer.Option(help="Enlarge each image this many times (nearest) in the PNG.")] = 4,
) -> None:
    """Draw shapes-world images from text with the diffusion model."""
    import torch

    from explore.diffusion.pipeline import image_grid, load_pipeline, set_scheduler

    _positive("n", n)
    _positive("steps", steps)
    _positive("scale", scale)
    if guidance < 1:
        raise ExploreError(f"--guidance must be >= 1 (1 turns guidance off), got {guidance}")
    if out.suffix.lower() != ".png":
        raise ExploreError(f"--out must be a .png file, got {out}")
    pipe = set_scheduler(load_pipeline(checkpoint), scheduler)
    pipe.set_progress_bar_config(disable=not sys.stderr.isatty())
    images = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, num_images_per_prompt=n,
                  generator=torch.Generator().manual_seed(seed)).images  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, scale=scale).save(out)
    typer.echo(f"wrote {out} ({n} images, {scheduler} {steps} steps, guidance {guidance}, seed {seed})")


ModelOption = Annotated[str, typer.Option("--model", help="'embedded', a local model folder, or a Hub id.")]


@app.command("finetune")
def finetune_command(
    config: Annotated[Path, typer.Option("--config", help="Fine-tuning YAML (configs/finetune/*.yaml).")],
    output: Annotated[Path, typer.Option("--output", help="Folder for the adapter (or the merged model).")],
    model: ModelOption = "embedded",
    merge: Annotated[bool, typer.Option("--merge", help="Merge the adapter and write a plain model folder.")] = False,
    distill_from: Annotated[
        str | None, typer.Option("--distill-from", help="Teacher to distil from: 'embedded', a folder or a Hub id.")
    ] = None,
    device: Annotated[str, typer.Option(help="Where to train: cpu or cuda (qlora needs cuda).")] = "cpu",
    resume: Annotated[
        str | None, typer.Option(help="'latest' or a step-* folder under --checkpoint-dir to continue from.")
    ] = None,
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="Checkpoints (config checkpoint_every); default: <output>-checkpoints.")
    ] = None,
) -> None:
    """Win quality back after compression: LoRA / DoRA / IA3 / QLoRA adapters or full tuning of chosen
    components on the shapes world, optionally distilled from the original model. With checkpoint_every
    in the config, a killed run continues where it stopped with --resume latest."""
    import json

    from explore.adapt.config import load_finetune_config
    from explore.adapt.finetune import finetune, merge_adapter, save_adapter
    from explore.models.loading import load_model, save_model
    from explore.runinfo import write_run_info
    from explore.train.checkpoint import find_checkpoint

    cfg = load_finetune_config(config)
    checkpoint_dir = checkpoint_dir or output.parent / f"{output.name}-checkpoints"
    if resume is not None:
        resume = str(find_checkpoint(resume, checkpoint_dir))  # before the models load: a wrong path fails fast
    if cfg.distill_weight > 0 and distill_from is None:
        raise ExploreError(f"{config}: distill_weight is {cfg.distill_weight}; pass the teacher with --distill-from")
    if distill_from is not None and cfg.distill_weight == 0:
        raise ExploreError(f"--distill-from needs distill_weight > 0 in {config}")
    if merge and cfg.method == "qlora":
        raise ExploreError(
            "--merge cannot fold a QLoRA adapter into its 4-bit base; save the adapter and merge it onto the "
            "full-precision model in Python (explore.adapt.finetune.merge_adapter)"
        )
    vlm, processor = load_model(model, device=device)
    teacher, teacher_processor = load_model(distill_from, device=device) if distill_from else (None, None)
    result = finetune(vlm, processor, cfg, teacher=teacher, teacher_processor=teacher_processor,
                      checkpoint_dir=checkpoint_dir, resume=resume)  # fmt: skip
    if cfg.method == "full" or merge:
        plain = result.model if cfg.method == "full" else merge_adapter(result.model)
        save_model(plain, processor, output)
        kind = "model"
    else:
        save_adapter(result.model, output, processor)
        kind = "adapter"
    write_run_info(output, {"model": model, "distill_from": distill_from, "merge": merge, "finetune": cfg.model_dump(),
                            "checkpoint_every": cfg.checkpoint_every, "checkpoint_dir": str(checkpoint_dir),
                            "resumed_from": resume})  # fmt: skip
    summary = result.summary()
    log = {**summary, "losses": [round(loss, 5) for loss in result.losses]}
    (output / "finetune_log.json").write_text(json.dumps(log, indent=2))
    typer.echo(
        f"{cfg.method} on {'+'.join(cfg.components)}: loss {summary['loss_start']} → {summary['loss_end']} "
        f"in {summary['steps']} steps ({summary['trainable_parameters']:,} trainable parameters, "
        f"{summary['seconds']:.0f} s); wrote the {kind} to {output}"
    )


def _write_jsonl(rows: list[dict], out: Path | None) -> None:
    import json

    lines = [json.dumps(row) for row in rows]
    if out is None:
        for line in lines:
            typer.echo(line)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    typer.echo(f"wrote {len(rows)} answers to {out}")


def _answer(source: Path, prompt: str | None, model: str, out: Path | None, batch_size: int, max_new_tokens: int) -> None:
    """Shared body of ``ask`` and ``caption``: check inputs and images, load, answer, print or write."""
    from explore.infer import answer_all, decode_images, requests_from
    from explore.models.loading import load_model

    _positive("batch-size", batch_size)
    requests = requests_from(source, prompt)
    decode_images(requests)  # bad images fail here, before the model is loaded
    vlm, processor = load_model(model)
    rows = answer_all(vlm, processor, requests, batch_size=batch_size, max_new_tokens=max_new_tokens)
    if len(rows) == 1 and out is None:
        typer.echo(rows[0]["answer"])
    else:
        _write_jsonl(rows, out)


@app.command("ask")
def ask_command(
    source: Annotated[Path, typer.Argument(help="An image, a folder of images, or a .jsonl of {image, question}.")],
    question: Annotated[str | None, typer.Argument(help="The question (optional for a .jsonl with questions).")] = None,
    model: ModelOption = "embedded",
    out: Annotated[Path | None, typer.Option(help="Write JSONL answers here instead of printing them.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 16,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 16,
) -> None:
    """Answer a question about an image (or many) with the embedded model or any InstructBLIP."""
    _answer(source, question, model, out, batch_size, max_new_tokens)


@app.command("caption")
def caption_command(
    source: Annotated[Path, typer.Argument(help="An image, a folder of images, or a .jsonl of {image}.")],
    model: ModelOption = "embedded",
    prompt: Annotated[str, typer.Option(help="The captioning instruction.")] = "A short image description:",
    out: Annotated[Path | None, typer.Option(help="Write JSONL captions here instead of printing them.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per batch.")] = 16,
    max_new_tokens: Annotated[int, typer.Option(help="Longest caption, in tokens.")] = 64,
) -> None:
    """Describe an image (or many)."""
    _answer(source, prompt, model, out, batch_size, max_new_tokens)


@app.command("score-world")
def score_world_command(
    model: ModelOption = "embedded",
    split: Annotated[str, typer.Option(help="test, val, train or compositional.")] = "test",
    n: Annotated[int, typer.Option(help="Examples per task (VQA, judge); captions use n / 5.")] = 1000,
    seed: Annotated[int, typer.Option(help="Base seed of the split.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the scores as JSON here.")] = None,
) -> None:
    """Score a model on the shapes world: VQA exact match per question type, likelihood-judge
    accuracy per category, and exact scene recovery from captions."""
    import json

    from rich.table import Table

    from explore.eval.world import evaluate_world
    from explore.models.loading import load_model

    _positive("n", n)
    _check_split(split)
    vlm, processor = load_model(model)
    scores = evaluate_world(vlm, processor, split=split, n_vqa=n, n_judge=n, n_caption=max(1, n // 5), seed=seed)
    table = Table(title=f"{model} on the shapes world ({split} split, seed {seed})")
    for column in ("task", "score", "value"):
        table.add_column(column)
    for task, values in scores.items():
        for name, value in values.items():
            table.add_row(task, name, f"{100 * value:.1f}%")
    Console().print(table)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"model": model, "split": split, "n": n, "seed": seed, "scores": scores}, indent=2))


def _print_summary(title: str, summary: dict) -> None:
    from rich.table import Table

    table = Table(title=title)
    for column in ("metric", "group", "value"):
        table.add_column(column)
    for metric, value in summary.items():
        if isinstance(value, dict):
            for group, number in value.items():
                table.add_row(metric, str(group), f"{number:.4f}" if isinstance(number, float) else str(number))
        elif isinstance(value, float):
            table.add_row(metric, "", f"{value:.4f}")
    Console().print(table)


@app.command("eval")
def eval_command(
    task: Annotated[str, typer.Option(help="world-vqa, world-caption, world-judge, vl-rewardbench, vqav2, coco-captions, world-t2i.")],
    out: Annotated[Path, typer.Option(help="Folder for predictions.jsonl and summary.json (resumes if present).")],
    model: ModelOption = "embedded",
    limit: Annotated[int | None, typer.Option(help="At most this many examples (world tasks: default 500).")] = None,
    batch_size: Annotated[str, typer.Option(help="Examples per batch, or 'auto' (largest that fits).")] = "32",
    data: Annotated[str | None, typer.Option(help="VL-RewardBench hub id / parquet; VQAv2 questions; COCO captions JSON.")] = None,
    annotations: Annotated[str | None, typer.Option(help="VQAv2 annotations JSON.")] = None,
    images: Annotated[str | None, typer.Option(help="Image folder (VQAv2, COCO).")] = None,
    split: Annotated[str, typer.Option(help="Shapes-world split for world-* tasks.")] = "test",
    seed: Annotated[int, typer.Option(help="World seed; also the judge's swap and sampling seed.")] = 0,
    judge: Annotated[str, typer.Option(help="Judge tasks: 'likelihood' or 'generative' (official prompt, k votes).")] = "likelihood",
    judge_samples: Annotated[int, typer.Option(help="Generative judge: samples per example (official: 10).")] = 10,
    unparsed: Annotated[str, typer.Option(help="Unparsed judgments: 'drop' (official) or 'wrong'.")] = "drop",
    checkpoint: Annotated[Path | None, typer.Option(help="world-t2i: diffusion pipeline folder.")] = None,
    steps: Annotated[int, typer.Option(help="world-t2i: sampling steps.")] = 20,
    guidance: Annotated[float, typer.Option(help="world-t2i: classifier-free guidance scale.")] = 3.0,
    scheduler: Annotated[str, typer.Option(help="world-t2i: sampler (dpm, ddim, ddpm, unipc).")] = "dpm",
) -> None:
    """Evaluate a model on a task: per-example JSONL, a summary JSON and a table; resumable.

    world-t2i evaluates the diffusion model (--checkpoint) with --model as the VLM judge."""
    from dataclasses import replace

    from explore.eval.runner import run_task
    from explore.eval.tasks import TaskOptions, get_task
    from explore.models.loading import load_model

    spec = get_task(task)
    if batch_size != "auto" and not (batch_size.isdigit() and int(batch_size) > 0):
        raise ExploreError(f"--batch-size must be a positive integer or 'auto', got {batch_size!r}")
    if limit is not None:
        _positive("limit", limit)
    if judge not in ("likelihood", "generative"):
        raise ExploreError(f"unknown --judge {judge!r}; choose likelihood or generative")
    if unparsed not in ("drop", "wrong"):
        raise ExploreError(f"unknown --unparsed {unparsed!r}; choose drop (official) or wrong")
    _positive("judge-samples", judge_samples)
    options = TaskOptions(data=data, annotations=annotations, images=images, split=split, seed=seed, limit=limit)
    # the user's data is read and checked before the model loads, so a bad file fails fast; shapes-world
    # data is rendered at the model's own resolution, so it waits for the model
    examples = None if task.startswith("world-") else spec.load(options)
    vlm, processor = load_model(model)
    if spec.kind == "t2i":
        _eval_t2i(spec, vlm, processor, out, checkpoint=checkpoint, steps=steps, guidance=guidance,
                  scheduler=scheduler, split=split, seed=seed, limit=limit,
                  batch_size=16 if batch_size == "auto" else int(batch_size), title=f"{model} judging")  # fmt: skip
        return
    if examples is None:
        examples = spec.load(replace(options, resolution=int(processor.image_processor.size["height"])))
    summary = run_task(vlm, processor, spec, examples, out, batch_size=batch_size if batch_size == "auto" else int(batch_size),
                       judge=judge, judge_samples=judge_samples, seed=seed, unparsed=unparsed)  # fmt: skip
    _print_summary(f"{model} on {task} ({summary['examples']} examples)", summary)
    typer.echo(f"wrote {out / 'predictions.jsonl'} and {out / 'summary.json'}")


def _eval_t2i(spec, vlm, processor, out: Path, *, checkpoint: Path | None, steps: int, guidance: float, scheduler: str,
              split: str, seed: int, limit: int | None, batch_size: int, title: str) -> None:  # fmt: skip
    """``explore eval --task world-t2i``: generate, then score exactly, by the VLM judge and by Fréchet distance."""
    from explore.diffusion.pipeline import load_pipeline, set_scheduler
    from explore.eval.t2i import evaluate_t2i
    from explore.eval.tasks import TaskOptions

    _positive("steps", steps)
    if guidance < 1:
        raise ExploreError(f"--guidance must be >= 1 (1 turns guidance off), got {guidance}")
    _check_split(split)
    pipe = set_scheduler(load_pipeline(checkpoint), scheduler)
    examples = spec.load(TaskOptions(split=split, seed=seed, limit=limit, resolution=pipe.unet.config.sample_size))
    summary = evaluate_t2i(pipe, vlm, processor, examples, out, steps=steps, guidance=guidance, batch_size=batch_size)
    _print_summary(f"world-t2i ({summary['examples']} prompts, {scheduler} {steps} steps; {title})", summary)
    typer.echo(f"wrote {out / 'predictions.jsonl'}, {out / 'images'} and {out / 'summary.json'}")


@app.command("compress")
def compress_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for the compressed model (a normal HF model folder).")],
    model: ModelOption = "embedded",
    queries: Annotated[int | None, typer.Option(help="Keep this many query tokens.")] = None,
    query_strategy: Annotated[str, typer.Option(help="Which queries: first, even or merge.")] = "even",
    drop: Annotated[list[str] | None, typer.Option(
        help="COMPONENT=N drops the N least influential blocks (ShortGPT), COMPONENT:i,j drops blocks i and j; "
             "components: vision, qformer, lm_encoder, lm_decoder. Repeatable.")] = None,
    resolution: Annotated[int | None, typer.Option(help="Input image side in pixels (a multiple of the patch).")] = None,
    precision: Annotated[str, typer.Option(help="fp32, bf16, fp16, int8 (CPU/GPU), int8-bnb or nf4 (GPU).")] = "fp32",
    seed: Annotated[int, typer.Option(help="World seed of the calibration questions for block influence.")] = 0,
) -> None:
    """Compress a model once (the operators of `explore sweep`) and save it as a normal HF model folder."""
    from pydantic import ValidationError

    from explore.compress.precision import load_at_precision, save_quantized
    from explore.config import format_validation_error
    from explore.models.loading import load_model, save_model
    from explore.sweep.config import CompressSection
    from explore.sweep.run import compress
    from explore.world.examples import world_examples

    depth = []
    for item in drop or []:
        by_position = ":" in item
        component, _, value = item.partition(":" if by_position else "=")
        numbers = value.split(",") if by_position else [value]
        if not value or not all(number.strip().isdigit() for number in numbers):
            raise ExploreError(f"--drop {item!r}: expected COMPONENT=N (how many) or COMPONENT:i,j (which), "
                               "e.g. vision=1 or lm_decoder:0,1")  # fmt: skip
        positions = [int(number) for number in numbers]
        depth.append({"component": component, "drop": positions if by_position else positions[0]})
    raw = {"queries": {"keep": queries, "strategy": query_strategy} if queries else None, "depth": depth,
           "resolution": resolution, "precision": precision}  # fmt: skip
    try:
        recipe = CompressSection.model_validate(raw)
    except ValidationError as error:
        raise ExploreError(format_validation_error(error, CompressSection, "explore compress")) from None
    vlm, processor = load_model(model)
    resolution_now = int(processor.image_processor.size["height"])
    calibration = world_examples("val", 64, "vqa", seed=seed, resolution=resolution_now)
    small, small_processor, dropped = compress(vlm, processor, recipe, calibration)
    if recipe.precision == "fp32":
        save_model(small, small_processor, out)
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as staging:
            save_model(small, small_processor, Path(staging) / "fp32")
            quantized, quantized_processor = load_at_precision(Path(staging) / "fp32", recipe.precision)
            save_quantized(quantized, quantized_processor, out)
    dropped_text = "; ".join(f"{c} {p}" for c, p in dropped.items()) or "none"
    typer.echo(f"{recipe.describe()} (blocks dropped: {dropped_text}) → {out}")


@app.command("sweep")
def sweep_command(
    config: Annotated[Path | None, typer.Option("--config", help="Sweep YAML (default: the packaged 15-minute sweep on the embedded model).")] = None,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run just this point (repeatable); 'original' always runs.")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Override the config's output_dir.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Override the config's model ('embedded', folder or Hub id).")] = None,
    report_only: Annotated[bool, typer.Option("--report-only", help="Rewrite the report from results.jsonl; run nothing.")] = False,
) -> None:
    """Compress × recover × evaluate: one results.jsonl line per point, a Markdown/HTML report with Pareto plots.

    A killed sweep resumes where it stopped when run again with the same config.
    """
    from explore.sweep.config import default_config_path, load_sweep_config
    from explore.sweep.report import write_report
    from explore.sweep.run import RESULTS, read_results, run_sweep

    path = config or default_config_path()
    cfg = load_sweep_config(path)
    updates = {key: value for key, value in (("output_dir", output_dir), ("model", model)) if value is not None}
    cfg = cfg.model_copy(update=updates)
    shown = str(config) if config else None
    out = Path(cfg.output_dir)
    if report_only:
        if not (out / RESULTS).is_file():
            raise ExploreError(f"--report-only: no {out / RESULTS}; run the sweep first")
        report = write_report(cfg, read_results(out / RESULTS), out, [p.name for p in cfg.all_points()], shown)
    else:
        run_sweep(cfg, config_path=shown, only=only)
        report = out / "report.md"
    typer.echo(f"wrote {out / RESULTS}, {report} and {out / 'report.html'}")


def _quiet_progress_bars() -> None:
    """Turn off Hugging Face's tqdm bars (loading weights, writing shards): in a log or a pipe they are
    noise, and they would put lines before a one-line error. explore's own bars follow the same rule."""
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # transformers reads this when it is imported
    if "transformers" in sys.modules:
        import transformers.utils.logging

        transformers.utils.logging.disable_progress_bar()


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
    if not sys.stderr.isatty():
        _quiet_progress_bars()
    try:
        app(standalone_mode=False)
    except ExploreError as err:
        if _state["debug"]:
            raise
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        console.print("aborted")
        sys.exit(130)
    except Exception as err:  # click usage errors carry their own exit code and message
        import click

        if isinstance(err, click.exceptions.ClickException):
            err.show()
            sys.exit(err.exit_code)
        raise


if __name__ == "__main__":
    main()
