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


ModelOption = Annotated[str, typer.Option("--model", help="'embedded', a local model folder, or a Hub id.")]


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
    task: Annotated[str, typer.Option(help="world-vqa, world-caption, world-judge, vl-rewardbench, vqav2, coco-captions.")],
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
) -> None:
    """Evaluate a model on a task: per-example JSONL, a summary JSON and a table; resumable."""
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
    vlm, processor = load_model(model)
    resolution = int(processor.image_processor.size["height"])
    options = TaskOptions(data=data, annotations=annotations, images=images, split=split, seed=seed, limit=limit,
                          resolution=resolution)  # fmt: skip
    examples = spec.load(options)
    summary = run_task(vlm, processor, spec, examples, out, batch_size=batch_size if batch_size == "auto" else int(batch_size),
                       judge=judge, judge_samples=judge_samples, seed=seed, unparsed=unparsed)  # fmt: skip
    _print_summary(f"{model} on {task} ({summary['examples']} examples)", summary)
    typer.echo(f"wrote {out / 'predictions.jsonl'} and {out / 'summary.json'}")


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit status 2."""
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
