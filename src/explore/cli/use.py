"""Using models: ``explore ask``, ``caption``, ``generate``, ``score-world``, ``eval``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from explore.cli.app import ModelOption, app, check_split, positive_int
from explore.errors import ExploreError
from explore.runs import atomic_path, write_json, write_text


@app.command("generate")
def generate_command(
    prompt: Annotated[str, typer.Argument(help="What to draw, e.g. 'a red circle above a blue square'.")],
    out: Annotated[Path, typer.Option("--out", help="Output PNG: the images side by side.")],
    n: Annotated[int, typer.Option("-n", help="Number of images.")] = 4,
    steps: Annotated[int, typer.Option(help="Sampling steps.")] = 20,
    guidance: Annotated[
        float | None,
        typer.Option(help="Classifier-free guidance scale (1 = off; default: the pipeline's trained one, else 3)."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the initial noise and the layouts (same seed, same images).")] = 0,
    scheduler: Annotated[
        str | None,
        typer.Option(help="Sampler: ddim (default grounded), dpm (DPM-Solver++, default free text), ddpm, unipc."),
    ] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Pipeline folder (default: the packaged one).")] = None,
    scale: Annotated[int, typer.Option(help="Enlarge each image this many times (nearest) in the PNG.")] = 4,
    layout: Annotated[
        str | None,
        typer.Option(help="auto: parse the prompt with the world's grammar into a layout (grounded pipelines; the "
                     "default there); none: free text through cross-attention only (default otherwise)."),
    ] = None,
    layout_text: Annotated[
        str,
        typer.Option(help="With a layout, what the text encoder reads: caption (the layout's canonical caption, the "
                     "text the grounded model was trained on; default) or prompt (the prompt as given)."),
    ] = "caption",
) -> None:
    """Draw shapes-world images from text with the diffusion model."""
    import torch

    from explore.diffusion.pipeline import DEFAULT_SAMPLING, image_grid, load_pipeline, set_scheduler

    positive_int("n", n)
    positive_int("steps", steps)
    positive_int("scale", scale)
    if guidance is not None and guidance < 1:
        raise ExploreError(f"--guidance must be >= 1 (1 turns guidance off), got {guidance}")
    _check_layout(layout)
    _check_layout_text(layout_text)
    if out.suffix.lower() != ".png":
        raise ExploreError(f"--out must be a .png file, got {out}")
    pipe = load_pipeline(checkpoint)
    layout = layout or ("auto" if pipe.grounded else "none")
    scheduler = scheduler or DEFAULT_SAMPLING[layout][0]
    trained = pipe.config.get("guidance_scale")
    if guidance is not None and trained is not None and guidance > trained:
        typer.echo(f"warning: this pipeline was trained with model guidance to sample at guidance {trained:g}; "
                   f"--guidance {guidance:g} adds classifier-free guidance on top of it", err=True)  # fmt: skip
    guidance = guidance if guidance is not None else pipe.default_guidance(layout)
    pipe = set_scheduler(pipe, scheduler)
    layouts = pipe.layouts_for([prompt] * n, layout, seed)  # a prompt outside the grammar fails here, before sampling
    pipe.set_progress_bar_config(disable=not sys.stderr.isatty())
    images = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance, num_images_per_prompt=n,
                  generator=torch.Generator().manual_seed(seed), layout=layouts or "none",
                  layout_text=layout_text).images  # fmt: skip
    with atomic_path(out) as tmp:
        image_grid(images, scale=scale).save(tmp)
    typer.echo(f"wrote {out} ({n} images, layout {layout}, {scheduler} {steps} steps, guidance {guidance}, "
               f"seed {seed})")  # fmt: skip


def _check_layout(layout: str | None) -> None:
    """``--layout``: auto, none, or not given (None: the command's default)."""
    if layout not in (None, "auto", "none"):
        raise ExploreError(f"--layout must be auto or none, got {layout!r}")


def _check_layout_text(layout_text: str) -> None:
    if layout_text not in ("caption", "prompt"):
        raise ExploreError(f"--layout-text must be caption or prompt, got {layout_text!r}")


def _write_jsonl(rows: list[dict], out: Path | None) -> None:
    import json

    lines = [json.dumps(row) for row in rows]
    if out is None:
        for line in lines:
            typer.echo(line)
        return
    write_text(out, "\n".join(lines) + "\n")
    typer.echo(f"wrote {len(rows)} answers to {out}")


def _answer(
    source: Path, prompt: str | None, model: str, out: Path | None, batch_size: int, max_new_tokens: int
) -> None:
    """Shared body of ``ask`` and ``caption``: check inputs and images, load, answer, print or write."""
    from explore.infer import answer_all, decode_images, requests_from
    from explore.models.loading import load_model

    positive_int("batch-size", batch_size)
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
    max_new_tokens: Annotated[
        int, typer.Option(help="Longest answer, in tokens (room for a step-by-step relation answer).")
    ] = 40,  # explore.eval.scoring.RELATION_MAX_NEW_TOKENS; generation stops when every answer has ended
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
    from rich.table import Table

    from explore.eval.world import evaluate_world
    from explore.models.loading import load_model

    positive_int("n", n)
    check_split(split)
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
        write_json(out, {"model": model, "split": split, "n": n, "seed": seed, "scores": scores})


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
    task: Annotated[
        str,
        typer.Option(help="world-vqa, world-caption, world-judge, vl-rewardbench, vqav2, coco-captions, world-t2i, "
                     "world-geneval."),
    ],
    out: Annotated[Path, typer.Option(help="Folder for predictions.jsonl and summary.json (resumes if present).")],
    model: ModelOption = "embedded",
    limit: Annotated[int | None, typer.Option(help="At most this many examples (world tasks: default 500).")] = None,
    batch_size: Annotated[str, typer.Option(help="Examples per batch, or 'auto' (largest that fits).")] = "32",
    data: Annotated[
        str | None, typer.Option(help="VL-RewardBench hub id / parquet; VQAv2 questions; COCO captions JSON.")
    ] = None,
    annotations: Annotated[str | None, typer.Option(help="VQAv2 annotations JSON.")] = None,
    images: Annotated[str | None, typer.Option(help="Image folder (VQAv2, COCO).")] = None,
    split: Annotated[str, typer.Option(help="Shapes-world split for world-* tasks.")] = "test",
    seed: Annotated[int, typer.Option(help="World seed; also the judge's swap and sampling seed.")] = 0,
    judge: Annotated[
        str, typer.Option(help="Judge tasks: 'likelihood' or 'generative' (official prompt, k votes).")
    ] = "likelihood",
    judge_samples: Annotated[int, typer.Option(help="Generative judge: samples per example (official: 10).")] = 10,
    unparsed: Annotated[str, typer.Option(help="Unparsed judgments: 'drop' (official) or 'wrong'.")] = "drop",
    checkpoint: Annotated[Path | None, typer.Option(help="world-t2i: diffusion pipeline folder.")] = None,
    steps: Annotated[int, typer.Option(help="world-t2i / world-geneval: sampling steps.")] = 20,
    guidance: Annotated[
        float | None, typer.Option(help="world-t2i / world-geneval: guidance scale (default: explore generate's).")
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="world-t2i / world-geneval: sampler (ddpm, ddim, dpm, unipc); default: explore "
                                 "generate's, ddim with a layout, dpm without.")
    ] = None,
    layout: Annotated[
        str | None, typer.Option(help="world-geneval / world-t2i: auto (grounded) or none (free text); default: auto for "
                                 "world-geneval, the pipeline's own path for world-t2i.")
    ] = None,
    layout_text: Annotated[
        str, typer.Option(help="world-geneval with a layout: what the text encoder reads, caption (default) or prompt.")
    ] = "caption",
) -> None:
    """Evaluate a model on a task: per-example JSONL, a summary JSON and a table; resumable.

    world-t2i evaluates the diffusion model (--checkpoint) with --model as the VLM judge; world-geneval
    evaluates the diffusion pipeline given by --model (a folder, or 'embedded' for the packaged one)."""
    from dataclasses import replace

    from explore.eval.runner import run_task
    from explore.eval.tasks import TaskOptions, get_task
    from explore.models.loading import load_model

    spec = get_task(task)
    if batch_size != "auto" and not (batch_size.isdigit() and int(batch_size) > 0):
        raise ExploreError(f"--batch-size must be a positive integer or 'auto', got {batch_size!r}")
    if limit is not None:
        positive_int("limit", limit)
    if judge not in ("likelihood", "generative"):
        raise ExploreError(f"unknown --judge {judge!r}; choose likelihood or generative")
    if unparsed not in ("drop", "wrong"):
        raise ExploreError(f"unknown --unparsed {unparsed!r}; choose drop (official) or wrong")
    positive_int("judge-samples", judge_samples)
    options = TaskOptions(data=data, annotations=annotations, images=images, split=split, seed=seed, limit=limit)
    # the user's data is read and checked before the model loads, so a bad file fails fast; shapes-world
    # data is rendered at the model's own resolution, so it waits for the model
    if spec.kind in ("geneval", "t2i") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ExploreError(f"{task} runs in one process; launch it without accelerate launch / torchrun "
                           "(several processes share the VQA, caption and judge tasks)")  # fmt: skip
    if spec.kind == "geneval":
        _eval_geneval(spec, options, model, out, steps=steps, guidance=guidance, scheduler=scheduler, layout=layout or "auto",
                      layout_text=layout_text, batch_size=16 if batch_size == "auto" else int(batch_size))  # fmt: skip
        return
    state = _data_parallel_state()
    examples = None if task.startswith("world-") else spec.load(options)
    vlm, processor = load_model(model, device=state.device if state is not None else "cpu")
    if spec.kind == "t2i":
        _eval_t2i(spec, vlm, processor, out, checkpoint=checkpoint, steps=steps, guidance=guidance, scheduler=scheduler,
                  split=split, layout=layout,
                  seed=seed, limit=limit,
                  batch_size=16 if batch_size == "auto" else int(batch_size), title=f"{model} judging")  # fmt: skip
        return
    if examples is None:
        examples = spec.load(replace(options, resolution=int(processor.image_processor.size["height"])))
    summary = run_task(vlm, processor, spec, examples, out, batch_size=batch_size if batch_size == "auto" else int(batch_size),
                       judge=judge, judge_samples=judge_samples, seed=seed, unparsed=unparsed, state=state)  # fmt: skip
    if state is not None:
        # Every process leaves the group together: one exiting while another's gloo threads still run aborted it
        # ("terminate called without an active exception", exit -6) about once in a loaded test run.
        state.wait_for_everyone()
        state.destroy_process_group()
        if not state.is_main_process:
            return
    _print_summary(f"{model} on {task} ({summary['examples']} examples)", summary)
    shared = f" ({state.num_processes} processes)" if state is not None else ""
    typer.echo(f"wrote {out / 'predictions.jsonl'} and {out / 'summary.json'}{shared}")


def _data_parallel_state():
    """accelerate's ``PartialState`` when this process is one of several (``accelerate launch`` or ``torchrun``
    with more than one process; gloo on CPU, NCCL on GPUs), else None: a plain single-process run."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())  # without a GPU accelerate needs telling (else: 1 process)


def _eval_geneval(spec, options, model: str, out: Path, *, steps: int, guidance: float | None, scheduler: str | None,
                  layout: str, batch_size: int, layout_text: str = "caption") -> None:  # fmt: skip
    """``explore eval --task world-geneval``: 4 images per prompt, each clause checked exactly, then the table
    (sampler and guidance default to ``explore generate``'s for the path)."""
    from explore.diffusion.pipeline import DEFAULT_SAMPLING, load_pipeline, set_scheduler
    from explore.eval.geneval import evaluate_geneval

    positive_int("steps", steps)
    _check_layout(layout)
    _check_layout_text(layout_text)
    scheduler = scheduler or DEFAULT_SAMPLING[layout][0]
    if guidance is not None and guidance < 1:
        raise ExploreError(f"--guidance must be >= 1 (1 turns guidance off), got {guidance}")
    check_split(options.split)
    if options.split == "compositional":
        raise ExploreError("world-geneval reports the held-out pairs itself; pass --split test (or val)")
    pipe = set_scheduler(load_pipeline(None if model == "embedded" else Path(model)), scheduler)
    guidance = pipe.default_guidance(layout) if guidance is None else guidance
    summary = evaluate_geneval(pipe, spec.load(options), out, layout=layout, seed=options.seed, steps=steps,
                               guidance=guidance, batch_size=batch_size, layout_text=layout_text)  # fmt: skip
    for prompt_set in ("seen", "held_out"):
        part = summary.get(prompt_set)
        if part:
            _print_summary(f"world-geneval, {prompt_set} pairs ({part['images']} images, layout {layout}, "
                           f"{scheduler} {steps} steps, guidance {guidance})",
                           {"generated": part["generated"], "real renders": part["real"]})  # fmt: skip
    typer.echo(f"wrote {out / 'predictions.jsonl'}, {out / 'images'} and {out / 'summary.json'}")


def _eval_t2i(spec, vlm, processor, out: Path, *, checkpoint: Path | None, steps: int, guidance: float | None,
              scheduler: str | None, split: str, seed: int, limit: int | None, batch_size: int, title: str,
              layout: str | None = None) -> None:  # fmt: skip
    """``explore eval --task world-t2i``: generate (the pipeline's own path, or ``layout`` auto / none, with ``explore
    generate``'s sampler and guidance for it by default), then score exactly, by the VLM judge and by Fréchet distance."""
    from explore.diffusion.pipeline import DEFAULT_SAMPLING, load_pipeline, set_scheduler
    from explore.eval.t2i import evaluate_t2i
    from explore.eval.tasks import TaskOptions

    positive_int("steps", steps)
    if guidance is not None and guidance < 1:
        raise ExploreError(f"--guidance must be >= 1 (1 turns guidance off), got {guidance}")
    check_split(split)
    _check_layout(layout)
    pipe = load_pipeline(checkpoint)
    if layout == "auto" and not pipe.grounded:
        raise ExploreError(f"--layout auto needs a grounded pipeline; {checkpoint or 'the embedded one'} has no layout "
                           "input: drop --layout or pass --layout none")  # fmt: skip
    path = layout or ("auto" if pipe.grounded else "none")
    scheduler = scheduler or DEFAULT_SAMPLING[path][0]
    guidance = pipe.default_guidance(path) if guidance is None else guidance
    pipe = set_scheduler(pipe, scheduler)
    examples = spec.load(TaskOptions(split=split, seed=seed, limit=limit, resolution=pipe.image_size))
    summary = evaluate_t2i(pipe, vlm, processor, examples, out, steps=steps, guidance=guidance, batch_size=batch_size,
                           layout=layout)  # fmt: skip
    _print_summary(f"world-t2i ({summary['examples']} prompts, {scheduler} {steps} steps; {title})", summary)
    typer.echo(f"wrote {out / 'predictions.jsonl'}, {out / 'images'} and {out / 'summary.json'}")
