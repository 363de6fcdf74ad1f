"""``explore world ...``: export the shapes world, show scenes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from explore.cli.app import check_split, positive_int, world_app
from explore.errors import ExploreError
from explore.runs import atomic_path


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
    from explore.data.world_export import EXPORT_FORMATS, export_jsonl, export_vlrewardbench

    positive_int("n", n)
    positive_int("resolution", resolution)
    if format not in EXPORT_FORMATS:
        raise ExploreError(f"unknown --format {format!r}; choose one of: {', '.join(EXPORT_FORMATS)}")
    check_split(split)
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
    from explore.data.world_export import contact_sheet
    from explore.world.splits import split_scenes

    positive_int("n", n)
    positive_int("columns", columns)
    check_split(split)
    if out.suffix.lower() != ".png":
        raise ExploreError(f"--out must be a .png file, got {out}")
    with atomic_path(out) as tmp:
        contact_sheet(split_scenes(split, n, seed), columns=columns).save(tmp)
    typer.echo(f"wrote {out} ({n} scenes)")
