"""The world's autoencoder for latent diffusion: ``explore diffusion autoencoder --config configs/diffusion/<name>.yaml``.

diffusers' ``AutoencoderKL`` (the Stable Diffusion VAE's architecture, small): 64 px images → latents
(``latent_channels`` × 16 × 16 for f = 4, ``len(block_out_channels) - 1`` halvings), trained on the same
pre-rendered cache as the UNet with L1 + MSE reconstruction and a tiny KL term (SD uses ~1e-6, so the
latent space stays close to an autoencoder's while the decoder tolerates sampling noise), optionally a
perceptual term (``train.perceptual_weight``; SD uses LPIPS) on the features of a ViT that tells the world's
shapes apart. No adversarial term: the world's images are flat colours on a plain background, and what
matters is measured directly — the exact detector (:mod:`explore.world.detect`) on reconstructions of val
scenes.

The finished folder ``<output_dir>/autoencoder`` is a plain diffusers model (``AutoencoderKL.from_pretrained``)
whose ``scaling_factor`` is set to 1 / std of its latents on the val scenes (as SD's 0.18215), so the UNet
sees unit-variance latents. Run folder: ``config.yaml`` + ``run.json``, ``train_log.jsonl``,
``checkpoints/step-*/`` (atomic, ``--resume latest``), ``autoencoder/``.

Decoder fine-tuning (``model.init_from`` + ``train.trainable: decoder``), as Stability did for SD's ft-MSE VAE:
the encoder (and so the latent space, its ``scaling_factor`` and every latent a UNet was trained on) stays
fixed, only the decoder learns more, so a trained latent UNet keeps working with the new decoder.

A tiny autoencoder (``model.kind: tiny``), as TAESD is for Stable Diffusion: diffusers' ``AutoencoderTiny``
(plain convolutions, no GroupNorm, one width) learns a trained ``AutoencoderKL``'s latent space — its decoder
maps the teacher's latents (with the teacher's posterior noise) to the *images*, its encoder regresses the
teacher's latent means — so it drops into any pipeline whose UNet was trained on the teacher
(``explore diffusion export PIPELINE --vae FOLDER``) and decodes for a fraction of the teacher's cost.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import torch
from diffusers import AutoencoderKL, AutoencoderTiny
from diffusers.optimization import get_cosine_schedule_with_warmup
from PIL import Image
from pydantic import Discriminator, Field, Tag, model_validator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file

from explore.config import StrictModel, load_yaml_config
from explore.diffusion.cache import training_data
from explore.diffusion.config import DataSection
from explore.diffusion.data import to_tensor
from explore.diffusion.features import perceptual_features
from explore.errors import ExploreError
from explore.packaged import packaged
from explore.runs import append_jsonl, atomic_folder, rewind_jsonl, write_run_info
from explore.train.checkpoint import (
    check_run,
    find_checkpoint,
    load_optimizer_states,
    read_state,
    refuse_fresh_start,
    restore_rng,
    save_checkpoint,
)
from explore.train.step import optimizer_step
from explore.world.detect import check_scene, detect
from explore.world.render import render
from explore.world.scene import SceneSpec
from explore.world.splits import split_scenes

EMBEDDED = "embedded"  # an autoencoder setting (model.autoencoder, init_from, teacher): the packaged pipeline's vae/


def resolve_autoencoder(value: str | Path) -> Path:
    """An autoencoder setting as a folder: 'embedded' is the packaged diffusion pipeline's ``vae/``."""
    return packaged("diffusion-small") / "vae" if value == EMBEDDED else Path(value)


GENERATOR_FILE = "generator.safetensors"  # the latent-sampling noise generator, saved with each checkpoint


class AutoencoderModelSection(StrictModel):
    kind: Literal["kl"] = Field("kl", description="kl: diffusers' AutoencoderKL (SD's VAE); tiny: see "
                                "TinyAutoencoderModelSection")  # fmt: skip
    block_out_channels: list[int] = Field([16, 32, 64], min_length=2, description="channels per level; "
                                          "len - 1 halvings (3 levels: f = 4, 64 px -> 16 x 16)")  # fmt: skip
    layers_per_block: int = Field(1, ge=1, description="residual blocks per level")
    latent_channels: int = Field(4, ge=1, description="channels of the latent (SD: 4)")
    norm_num_groups: int = Field(16, ge=1, description="GroupNorm groups (must divide every width)")
    mid_block_attention: bool = Field(False, description="self-attention in the middle blocks (SD: on; costly "
                                      "on a CPU and not needed for the world's flat shapes, measured)")  # fmt: skip
    seed: int = Field(0, ge=0, description="seed of the weight initialisation")
    init_from: str | None = Field(None, description="start from this AutoencoderKL folder ('embedded': the shipped "
                                  "diffusion pipeline's vae/) instead of random weights; its architecture must be "
                                  "this section's")  # fmt: skip

    @model_validator(mode="after")
    def _groups_divide(self) -> AutoencoderModelSection:
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ValueError(f"widths {bad} are not divisible by norm_num_groups ({self.norm_num_groups})")
        return self


class TinyAutoencoderModelSection(StrictModel):
    kind: Literal["tiny"] = Field(description="diffusers' AutoencoderTiny (TAESD's architecture) taught a trained "
                                  "AutoencoderKL's latent space")  # fmt: skip
    teacher: str = Field("embedded", description="the AutoencoderKL folder whose latents it decodes and encodes "
                         "('embedded': the shipped diffusion pipeline's vae/)")  # fmt: skip
    block_out_channels: list[int] = Field([16, 16, 16], min_length=2, description="channels per level, one width "
                                          "(diffusers' DecoderTiny keeps one); as many levels as the teacher's")  # fmt: skip
    encoder_blocks: list[int] = Field([1, 1, 1], min_length=2, description="residual blocks per encoder level")
    decoder_blocks: list[int] = Field([1, 1, 1], min_length=2, description="residual blocks per decoder level")
    seed: int = Field(0, ge=0, description="seed of the weight initialisation")

    @model_validator(mode="after")
    def _one_width(self) -> TinyAutoencoderModelSection:
        if len(set(self.block_out_channels)) != 1:
            raise ValueError(f"block_out_channels {self.block_out_channels}: diffusers' DecoderTiny needs one width "
                             "at every level, e.g. [16, 16, 16]")  # fmt: skip
        levels = len(self.block_out_channels)
        if len(self.encoder_blocks) != levels or len(self.decoder_blocks) != levels:
            raise ValueError(f"encoder_blocks and decoder_blocks need one entry per level ({levels})")
        return self


def _model_kind(value) -> str:
    return value.get("kind", "kl") if isinstance(value, dict) else getattr(value, "kind", "kl")


ModelSection = Annotated[
    Annotated[AutoencoderModelSection, Tag("kl")] | Annotated[TinyAutoencoderModelSection, Tag("tiny")],
    Discriminator(_model_kind),
]


class AutoencoderTrainSection(StrictModel):
    steps: int = Field(gt=0, description="optimizer steps")
    batch_size: int = Field(32, gt=0, description="images per step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW, cosine)")
    warmup_steps: int = Field(50, ge=0, description="linear warm-up steps")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    kl_weight: float = Field(1e-6, ge=0, description="weight of the KL term (SD: ~1e-6)")
    perceptual_weight: float = Field(0.0, ge=0, description="weight of a perceptual term between reconstruction "
                                     "and image (SD's autoencoder: LPIPS); 0 = L1 + MSE only")  # fmt: skip
    perceptual_network: Literal["world-vit", "vlm", "lpips-alex", "lpips-vgg", "lpips-squeeze"] = Field(
        "vlm", description="features of the perceptual term (as the diffusion loss's): vlm = the embedded VLM's "
        "objects-pretrained ViT, which tells the world's shapes apart")  # fmt: skip
    perceptual_layers: list[int] = Field([1, 2, 3], min_length=1, description="vision-encoder layers compared")
    seed: int = Field(0, ge=0, description="seed of the latent sampling noise")
    trainable: Literal["all", "decoder"] = Field("all", description="decoder: train only the decoder (and "
                                                 "post_quant_conv) of model.init_from, keeping its latent space "
                                                 "and scaling_factor, so latent UNets trained on it still fit")  # fmt: skip


class AutoencoderConfig(StrictModel):
    model: ModelSection = AutoencoderModelSection()
    data: DataSection = DataSection(resolution=64)
    train: AutoencoderTrainSection
    validation_scenes: int = Field(200, ge=1, description="val scenes reconstructed and checked by the detector")
    validation_every: int = Field(500, gt=0, description="validate every this many steps (and at the end)")
    checkpoint_every: int = Field(250, gt=0, description="save a resumable checkpoint every this many steps")
    output_dir: str = Field("runs/diffusion/autoencoder", description="run folder")

    @model_validator(mode="after")
    def _resolution_fits(self) -> AutoencoderConfig:
        factor = 2 ** (len(self.model.block_out_channels) - 1)
        if self.data.resolution % factor:
            raise ValueError(f"data.resolution {self.data.resolution} must be divisible by {factor}")
        tiny = self.model.kind == "tiny"
        if self.train.trainable == "decoder" and (tiny or self.model.init_from is None):
            raise ValueError("train.trainable: decoder fine-tunes a trained AutoencoderKL; set model.init_from "
                             "(model.kind: tiny trains all of its own weights)")  # fmt: skip
        return self


def load_autoencoder_config(path: str | Path) -> AutoencoderConfig:
    """Read and validate an autoencoder YAML config (unknown keys are errors)."""
    return load_yaml_config(AutoencoderConfig, path)


def build_autoencoder(model: AutoencoderModelSection, resolution: int) -> AutoencoderKL:
    """An untrained ``AutoencoderKL`` of ``model`` (seeded by ``model.seed``)."""
    torch.manual_seed(model.seed)
    levels = len(model.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels, block_out_channels=tuple(model.block_out_channels),
        layers_per_block=model.layers_per_block, latent_channels=model.latent_channels,
        norm_num_groups=model.norm_num_groups, sample_size=resolution, mid_block_add_attention=model.mid_block_attention,
    )  # fmt: skip


@torch.no_grad()
def initial_autoencoder(model: AutoencoderModelSection, resolution: int) -> AutoencoderKL:
    """:func:`build_autoencoder`, loaded from ``model.init_from`` when set.

    Raises:
        ExploreError: ``init_from`` is not an AutoencoderKL folder or has another architecture than ``model``.
    """
    vae = build_autoencoder(model, resolution)
    if model.init_from is None:
        return vae
    folder = resolve_autoencoder(model.init_from)
    source = load_autoencoder(folder)
    keys = ("block_out_channels", "layers_per_block", "latent_channels", "norm_num_groups", "mid_block_add_attention",
            "down_block_types", "up_block_types")  # fmt: skip
    differ = [k for k in keys if list(np.atleast_1d(source.config[k])) != list(np.atleast_1d(vae.config[k]))]
    if differ:
        raise ExploreError(f"model.init_from {folder}: another architecture than the config's model section "
                           f"({', '.join(differ)} differ); copy its values into the config")  # fmt: skip
    vae.load_state_dict(source.state_dict(), strict=True)
    vae.register_to_config(scaling_factor=source.config.scaling_factor)
    return vae.requires_grad_(True)


def build_tiny_autoencoder(model: TinyAutoencoderModelSection) -> tuple[AutoencoderTiny, AutoencoderKL]:
    """An untrained ``AutoencoderTiny`` of ``model`` (seeded) and its frozen teacher; the student takes the
    teacher's ``latent_channels`` and ``scaling_factor``, so a pipeline feeds it what it fed the teacher.

    Raises:
        ExploreError: the teacher is not an AutoencoderKL folder, or has another number of levels.
    """
    folder = resolve_autoencoder(model.teacher)
    teacher = load_autoencoder(folder)
    levels = len(teacher.config.block_out_channels)
    if len(model.block_out_channels) != levels:
        raise ExploreError(f"model.block_out_channels has {len(model.block_out_channels)} levels, the teacher "
                           f"{folder} {levels} (f = {2 ** (levels - 1)}); use {levels} levels")  # fmt: skip
    torch.manual_seed(model.seed)
    widths = tuple(model.block_out_channels)
    vae = AutoencoderTiny(encoder_block_out_channels=widths, decoder_block_out_channels=widths,
                          num_encoder_blocks=tuple(model.encoder_blocks),
                          num_decoder_blocks=tuple(model.decoder_blocks),
                          latent_channels=teacher.config.latent_channels,
                          scaling_factor=teacher.config.scaling_factor)  # fmt: skip
    return vae, teacher


def trainable_parameters(vae: AutoencoderKL, trainable: str) -> list[torch.nn.Parameter]:
    """All parameters, or (``"decoder"``) the decoder's and post_quant_conv's with the rest frozen."""
    if trainable == "all":
        return list(vae.parameters())
    vae.requires_grad_(False)
    parts = [vae.decoder] + ([vae.post_quant_conv] if vae.post_quant_conv is not None else [])
    for part in parts:
        part.requires_grad_(True)
    return [p for part in parts for p in part.parameters()]


def _latents(vae: AutoencoderKL | AutoencoderTiny, images: torch.Tensor) -> torch.Tensor:
    """Unscaled latents: the posterior's mean (AutoencoderKL) or the encoder's output (AutoencoderTiny)."""
    out = vae.encode(images)
    return out.latents if isinstance(vae, AutoencoderTiny) else out.latent_dist.mode()


@torch.no_grad()
def encode(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """Scaled latents (B, C, h, w) of ``images`` (B, 3, H, W) in [-1, 1]: the posterior's mean × scaling_factor."""
    return vae.encode(images.to(vae.device, vae.dtype)).latent_dist.mode() * vae.config.scaling_factor


@torch.no_grad()
def decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] (clamped) of scaled ``latents``."""
    return vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample.clamp(-1, 1)


def validation_scenes(config: AutoencoderConfig) -> list:
    return split_scenes("val", config.validation_scenes, seed=config.data.world_seed,
                        spec=SceneSpec(max_objects=config.data.max_objects))  # fmt: skip


@torch.no_grad()
def reconstruction_scores(vae: AutoencoderKL | AutoencoderTiny, scenes: list, resolution: int,
                          teacher: AutoencoderKL | None = None) -> dict[str, float]:  # fmt: skip
    """The detector on reconstructions of ``scenes``: exact scenes, objects found, colour + position, and the
    mean absolute pixel error (in [-1, 1] units); also the std of the unscaled latents (for ``scaling_factor``).
    With a ``teacher`` (a tiny autoencoder's), ``vae`` decodes the teacher's latents — what a pipeline whose
    UNet learned the teacher's latent space gives it — and ``latent_mse`` is its encoder's error against them."""
    real = to_tensor([render(scene, resolution) for scene in scenes])
    was_training = vae.training
    vae.eval()
    latents = torch.cat([_latents(vae if teacher is None else teacher, chunk) for chunk in real.split(64)])
    recon = torch.cat([vae.decode(chunk).sample.clamp(-1, 1) for chunk in latents.split(64)])
    own = torch.cat([_latents(vae, chunk) for chunk in real.split(64)]) if teacher is not None else None
    vae.train(was_training)
    pixels = ((recon.permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    checks = [check_scene(detect(Image.fromarray(p)), scene) for p, scene in zip(pixels, scenes)]
    scores = {key: round(float(np.mean([c[key] for c in checks])), 4) for key in ("exact", "object", "colour_position")}
    scores["l1"] = round(float((recon - real).abs().mean()), 5)
    scores["latent_std"] = round(float(latents.std()), 5)
    if own is not None:
        scores["latent_mse"] = round(float((own - latents).pow(2).mean()), 5)
    return scores


def tidy_tiny_config(folder: Path) -> None:
    """Drop ``block_out_channels`` from an ``AutoencoderTiny`` folder's config.json (no-op for other folders).

    diffusers' AutoencoderTiny records it (its decoder's widths, which pipelines read for the latent's scale) with
    ``register_to_config`` but takes no such argument, so ``from_pretrained`` of every folder it saved warns "The
    config attributes {'block_out_channels': ...} were passed to AutoencoderTiny, but are not expected". Every load
    registers it again, so the file loses nothing and users see no warning.
    """
    path = Path(folder) / "config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    if config.get("_class_name") == "AutoencoderTiny" and config.pop("block_out_channels", None) is not None:
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _write_weights(folder: Path, vae: AutoencoderKL | AutoencoderTiny, generator: torch.Generator) -> None:
    vae.save_pretrained(folder / "autoencoder", safe_serialization=True)
    tidy_tiny_config(folder / "autoencoder")
    save_file({"generator": generator.get_state()}, folder / GENERATOR_FILE)


def _run_record(config: AutoencoderConfig) -> dict:
    return {"kind": "diffusion autoencoder",
            "config": config.model_dump(exclude={"output_dir": True, "validation_scenes": True,
                                                 "validation_every": True, "checkpoint_every": True,
                                                 "data": {"cache_dir"}})}  # fmt: skip


def train_autoencoder(config: AutoencoderConfig, *, resume: str | None = None, progress: bool = True) -> Path:
    """Train ``config`` to completion; returns ``<output_dir>/autoencoder`` (scaling_factor set).

    Raises:
        ExploreError: a non-finite loss or gradient (the last good checkpoint is kept), or a resume problem.
    """
    run_dir = Path(config.output_dir)
    if resume is None:
        refuse_fresh_start(run_dir / "checkpoints")
    t = config.train
    features = perceptual_features(t)  # first: a missing network fails before any work
    next_batch = training_data(config.data, progress=progress)
    tiny = config.model.kind == "tiny"
    if tiny:
        vae, teacher = build_tiny_autoencoder(config.model)
        params = list(vae.parameters())
    else:
        vae, teacher = initial_autoencoder(config.model, config.data.resolution), None
        params = trainable_parameters(vae, t.trainable)
    saved_class = AutoencoderTiny if tiny else AutoencoderKL
    optimizer = torch.optim.AdamW(params, lr=t.lr)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, t.warmup_steps, t.steps)
    generator = torch.Generator().manual_seed(t.seed)
    state = {"global_step": 0, "data_position": 0}
    if resume is not None:
        checkpoint = find_checkpoint(resume, run_dir / "checkpoints")
        check_run(checkpoint, _run_record(config))
        vae.load_state_dict(saved_class.from_pretrained(checkpoint / "autoencoder").state_dict(), strict=True)
        load_optimizer_states(checkpoint, optimizer, lr_scheduler)
        restore_rng(checkpoint)
        state = read_state(checkpoint)
        generator.set_state(load_file(checkpoint / GENERATOR_FILE)["generator"])
        print(f"resumed from {checkpoint} (step {state['global_step']})", flush=True)
    rewind_jsonl(run_dir / "train_log.jsonl", state["global_step"])
    write_run_info(run_dir, config.model_dump())
    print(f"parameters: autoencoder {sum(p.numel() for p in vae.parameters()):,}, trained "
          f"{sum(p.numel() for p in params):,}", flush=True)  # fmt: skip
    scenes = validation_scenes(config)
    interactive = progress and sys.stderr.isatty()
    columns = (TextColumn("[bold]autoencoder"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
    vae.train()
    started, done_here = time.perf_counter(), 0
    with Progress(*columns, disable=not interactive) as bar:
        job = bar.add_task("train", total=t.steps, completed=state["global_step"], loss=float("nan"))
        while state["global_step"] < t.steps:
            images, _, _ = next_batch(state["data_position"], t.batch_size)  # (B, 3, R, R) in [-1, 1]
            state["data_position"] += t.batch_size
            with torch.set_grad_enabled(t.trainable == "all" and not tiny):
                posterior = (teacher if tiny else vae).encode(images).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=generator)
            recon = vae.decode(posterior.mean + posterior.std * noise).sample
            l1 = (recon - images).abs().mean()
            loss = l1 + (recon - images).pow(2).mean()
            if tiny:  # the student's encoder regresses the teacher's latent means (TAESD's recipe)
                loss = loss + (vae.encode(images).latents - posterior.mean).pow(2).mean()
            else:
                loss = loss + t.kl_weight * posterior.kl().mean()
            if features is not None:
                loss = loss + t.perceptual_weight * features.perceptual_distance(recon, images).mean()
            if not torch.isfinite(loss):
                raise ExploreError(f"non-finite loss at step {state['global_step'] + 1}; the last good checkpoint "
                                   f"is kept in {run_dir / 'checkpoints'}; lower train.lr")  # fmt: skip
            grad_norm = optimizer_step(loss, optimizer, lr_scheduler, params, max_norm=t.grad_clip,
                                       nonfinite_message=f"non-finite gradient norm at step {state['global_step'] + 1}"
                                       "; the last good checkpoint is kept; lower train.lr")  # fmt: skip
            state["global_step"] += 1
            done_here += 1
            step = state["global_step"]
            bar.update(job, advance=1, loss=loss.item())
            last = step == t.steps
            if step % 10 == 0 or step == 1 or last:
                record = {"step": step, "loss": round(loss.item(), 5), "l1": round(l1.item(), 5),
                          "lr": lr_scheduler.get_last_lr()[0], "grad_norm": round(grad_norm, 4),
                          "steps_per_s": round(done_here / (time.perf_counter() - started), 3)}  # fmt: skip
                append_jsonl(run_dir / "train_log.jsonl", [record])
                if progress and not interactive and (step % 50 == 0 or step == 1):
                    print(json.dumps(record), flush=True)
            if step % config.validation_every == 0 or last:
                scores = reconstruction_scores(vae, scenes, config.data.resolution, teacher)
                append_jsonl(run_dir / "train_log.jsonl", [{"step": step, "validation": scores}])
                if progress:
                    what = "the teacher's latents of" if tiny else "reconstructions of"
                    print(f"step {step} validation ({what} {len(scenes)} val scenes): {scores}", flush=True)
            if step % config.checkpoint_every == 0 or last:
                save_checkpoint(run_dir / "checkpoints", step,
                                write_weights=lambda folder: _write_weights(folder, vae, generator),
                                optimizer=optimizer, scheduler=lr_scheduler, state=state,
                                run=_run_record(config))  # fmt: skip
    scores = reconstruction_scores(vae, scenes, config.data.resolution, teacher)
    if t.trainable == "all" and not tiny:  # a fine-tuned decoder or a student keeps the teacher's scaling_factor
        vae.register_to_config(scaling_factor=round(1.0 / scores["latent_std"], 5))
    vae.eval()
    final = run_dir / "autoencoder"
    with atomic_folder(final) as staging:
        vae.save_pretrained(staging, safe_serialization=True)
        tidy_tiny_config(staging)
    return final


def load_autoencoder(folder: str | Path) -> AutoencoderKL:
    """A trained autoencoder folder (frozen, eval mode).

    Raises:
        ExploreError: no such folder or not a diffusers AutoencoderKL folder.
    """
    folder = Path(folder)
    config = folder / "config.json"
    if not config.is_file() or json.loads(config.read_text()).get("_class_name") != "AutoencoderKL":
        raise ExploreError(
            f"model.autoencoder {folder}: not an AutoencoderKL folder (no config.json naming it); "
            "train one with `explore diffusion autoencoder --config configs/diffusion/autoencoder.yaml`"
        )
    vae = AutoencoderKL.from_pretrained(folder, use_safetensors=True)
    return vae.requires_grad_(False).eval()
