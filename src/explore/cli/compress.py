"""Compression: ``explore compress`` (one model) and ``explore sweep`` (the grid and its report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from explore.cli.app import ModelOption, app
from explore.errors import ExploreError


@app.command("compress")
def compress_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for the compressed model (a normal HF model folder).")],
    model: ModelOption = "embedded",
    queries: Annotated[int | None, typer.Option(help="Keep this many query tokens.")] = None,
    query_strategy: Annotated[str, typer.Option(help="Which queries: first, even or merge.")] = "even",
    drop: Annotated[
        list[str] | None,
        typer.Option(
            help="COMPONENT=N drops the N least influential blocks (ShortGPT), COMPONENT:i,j drops blocks i and j; "
            "components: vision, qformer, lm_encoder, lm_decoder. Repeatable."
        ),
    ] = None,
    resolution: Annotated[
        int | None, typer.Option(help="Input image side in pixels (a multiple of the patch).")
    ] = None,
    width: Annotated[
        list[str] | None,
        typer.Option(help="COMPONENT:ffn=F,heads=H keeps fractions F of the FFN channels and H of the heads of every "
                     "layer, by importance; components: vision, qformer (ffn only), lm. Repeatable."),
    ] = None,
    fastv: Annotated[
        str | None, typer.Option(help="RATIO@LAYER: FastV drops RATIO of the image tokens after LM layer LAYER "
                                 "(explore's load_model restores it; plain from_pretrained ignores it).")
    ] = None,
    precision: Annotated[str, typer.Option(help="fp32, bf16, fp16, int8 (CPU/GPU), int8-bnb or nf4 (GPU), w4a16 or "
                                           "w8a8 (compressed-tensors).")] = "fp32",
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
    widths = []
    for item in width or []:
        component, _, settings = item.partition(":")
        keeps = dict(setting.partition("=")[::2] for setting in settings.split(",") if setting)
        try:
            fractions = {f"{name}_keep": float(value) for name, value in keeps.items() if name in ("ffn", "heads")}
        except ValueError:
            fractions = {}
        if not component or not fractions or len(fractions) != len(keeps):
            raise ExploreError(f"--width {item!r}: expected COMPONENT:ffn=F,heads=H with fractions, e.g. lm:ffn=0.5 "
                               "or lm:ffn=0.5,heads=0.5")  # fmt: skip
        widths.append({"component": component, **fractions})
    fastv_section = None
    if fastv is not None:
        ratio, at, layer = fastv.partition("@")
        try:
            fastv_section = {"ratio": float(ratio), "layer": int(layer)}
        except ValueError:
            raise ExploreError(f"--fastv {fastv!r}: expected RATIO@LAYER, e.g. 0.5@0") from None
    raw = {"queries": {"keep": queries, "strategy": query_strategy} if queries else None, "depth": depth,
           "width": widths, "fastv": fastv_section, "resolution": resolution, "precision": precision}  # fmt: skip
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
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Sweep YAML (default: the packaged 20-minute sweep on the embedded model)."),
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run just this point (repeatable); 'original' always runs.")
    ] = None,
    output_dir: Annotated[str | None, typer.Option(help="Override the config's output_dir.")] = None,
    model: Annotated[
        str | None, typer.Option("--model", help="Override the config's model ('embedded', folder or Hub id).")
    ] = None,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Rewrite the report from results.jsonl; run nothing.")
    ] = False,
    backend: Annotated[
        str, typer.Option(help="local: the points one after another here; ray: one Ray task per point "
                          "(needs the ray extra of explore-vlm).")
    ] = "local",
    address: Annotated[
        str | None, typer.Option(help="--backend ray: an existing cluster ('auto', or host:port); "
                                 "default: start a local one.")
    ] = None,
) -> None:
    """Compress × recover × evaluate: one results.jsonl line per point, a Markdown/HTML report with Pareto plots.

    A killed sweep resumes where it stopped when run again with the same config.
    """
    from explore.sweep.config import default_config_path, load_sweep_config
    from explore.sweep.run import RESULTS, LocalRunner, run_sweep, write_sweep_report

    path = config or default_config_path()
    cfg = load_sweep_config(path)
    updates = {key: value for key, value in (("output_dir", output_dir), ("model", model)) if value is not None}
    cfg = cfg.model_copy(update=updates)
    shown = str(config) if config else None
    out = Path(cfg.output_dir)
    if report_only:
        if not (out / RESULTS).is_file():
            raise ExploreError(f"--report-only: no {out / RESULTS}; run the sweep first")
        report = write_sweep_report(cfg, out, shown)
    else:
        if backend == "local":
            if address is not None:
                raise ExploreError("--address is for --backend ray (the Ray cluster to run the points on)")
            runner = LocalRunner()
        elif backend == "ray":
            from explore.sweep.ray_backend import RayRunner

            runner = RayRunner(address)
        else:
            raise ExploreError(f"unknown --backend {backend!r}; choose local or ray")
        run_sweep(cfg, config_path=shown, only=only, runner=runner)
        report = out / "report.md"
    typer.echo(f"wrote {out / RESULTS}, {report} and {out / 'report.html'}")
