"""Training commands: ``explore pretrain``, ``explore diffusion train``, ``explore finetune``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from explore.cli.app import ModelOption, app, diffusion_app
from explore.errors import ExploreError


@app.command("pretrain")
def pretrain_command(
    config: Annotated[
        Path, typer.Option("--config", help="Pretraining YAML (e.g. configs/pretrain/shapes-small.yaml).")
    ],
    resume: Annotated[
        str | None, typer.Option(help="'latest' or a checkpoints/step-* folder to continue from.")
    ] = None,
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


@diffusion_app.command("autoencoder")
def diffusion_autoencoder_command(
    config: Annotated[Path, typer.Option("--config", help="Autoencoder YAML (configs/diffusion/autoencoder.yaml).")],
    resume: Annotated[str | None, typer.Option(help="'latest' or a checkpoints/step-* folder.")] = None,
    output_dir: Annotated[str | None, typer.Option(help="Override the config's output_dir.")] = None,
) -> None:
    """Train the world's autoencoder for latent diffusion (diffusers AutoencoderKL, f = 4), or a tiny one
    (AutoencoderTiny, model.kind: tiny) taught a trained one's latent space, as TAESD is taught SD's."""
    from explore.diffusion.autoencoder import load_autoencoder_config, train_autoencoder

    cfg = load_autoencoder_config(config)
    if output_dir is not None:
        cfg = cfg.model_copy(update={"output_dir": output_dir})
    final = train_autoencoder(cfg, resume=resume)
    use = (f"explore diffusion export PIPELINE --out FOLDER --vae {final}" if cfg.model.kind == "tiny"
           else f"model.autoencoder: {final}")  # fmt: skip
    typer.echo(f"saved the trained autoencoder to {final} (use it with {use})")


@diffusion_app.command("export")
def diffusion_export_command(
    source: Annotated[Path, typer.Argument(help="A training checkpoint (checkpoints/step-*) or a pipeline folder.")],
    out: Annotated[Path, typer.Option("--out", help="Pipeline folder to write (replaced atomically).")],
    dtype: Annotated[
        str, typer.Option(help="Precision of the UNet and text encoder: float32, or float16 (half the bytes; loads "
                           "back as float32). The frozen autoencoder keeps its own.")
    ] = "float32",
    scheduler: Annotated[
        str | None, typer.Option(help="Store this sampler (ddpm, ddim, dpm, unipc) as the folder's scheduler: what a "
                                 "plain from_pretrained user samples with. Default: keep the training DDPM.")
    ] = None,
    vae: Annotated[
        Path | None, typer.Option(help="Replace the autoencoder with this one of the same latent space (an "
                                  "AutoencoderTiny taught the pipeline's vae/, configs/diffusion/autoencoder-tiny.yaml).")
    ] = None,
) -> None:
    """Write a pipeline folder from a checkpoint's EMA weights (a run stopped early) or from a pipeline, optionally
    in float16 and with a sampler stored (how the shipped model is kept)."""
    import torch

    from explore.diffusion.pipeline import SCHEDULERS
    from explore.diffusion.train import export_ema_pipeline

    dtypes = {"float32": torch.float32, "float16": torch.float16}
    if dtype not in dtypes:
        raise typer.BadParameter(f"{dtype!r}; expected one of {', '.join(dtypes)}", param_hint="--dtype")
    if scheduler is not None and scheduler not in SCHEDULERS:
        raise typer.BadParameter(f"{scheduler!r}; expected one of {', '.join(SCHEDULERS)}", param_hint="--scheduler")
    folder = export_ema_pipeline(source, out, dtype=dtypes[dtype], scheduler=scheduler, vae=vae)
    extras = (f", {scheduler} sampler" if scheduler else "") + (f", autoencoder {vae}" if vae else "")
    typer.echo(f"wrote the pipeline ({dtype}{extras}) to {folder}")


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
    from explore.adapt.adapters import merge_adapter, save_adapter
    from explore.adapt.config import load_finetune_config
    from explore.adapt.finetune import finetune
    from explore.models.loading import load_model, save_model
    from explore.runs import write_json, write_run_info
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
            "full-precision model in Python (explore.adapt.adapters.merge_adapter)"
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
    write_json(output / "finetune_log.json", log)
    typer.echo(
        f"{cfg.method} on {'+'.join(cfg.components)}: loss {summary['loss_start']} → {summary['loss_end']} "
        f"in {summary['steps']} steps ({summary['trainable_parameters']:,} trainable parameters, "
        f"{summary['seconds']:.0f} s); wrote the {kind} to {output}"
    )
