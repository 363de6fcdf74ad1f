"""Train the text-to-image model: ``explore diffusion train --config configs/diffusion/<name>.yaml``.

Built from diffusers' training parts (not its Stable-Diffusion script): accelerate for devices,
gradient accumulation and mixed precision; ``EMAModel`` for an exponential moving average of the
weights (the saved pipeline uses it); ``compute_snr`` for min-SNR weighting (in :mod:`.loss`).

Run folder (``output_dir``): ``config.yaml`` + ``run.json``, ``train_log.jsonl``, ``samples/step-*.png``
(validation grids: real renders on top, EMA samples below), ``checkpoints/step-*/`` (atomic,
resumable with ``--resume latest``) and, at the end, ``pipeline/`` (EMA weights) for
``explore generate --checkpoint``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from torch import nn

from explore.diffusion.autoencoder import tidy_tiny_config
from explore.diffusion.build import build_pipeline, warm_start
from explore.diffusion.cache import training_data
from explore.diffusion.config import DiffusionConfig, TextSection
from explore.diffusion.data import with_given_channel
from explore.diffusion.features import perceptual_features
from explore.diffusion.latents import latent_data
from explore.diffusion.loss import diffusion_loss
from explore.diffusion.pipeline import WorldDiffusionPipeline, image_grid, make_scheduler, set_scheduler
from explore.diffusion.text_encoder import tokenize_prompts
from explore.errors import ExploreError
from explore.models.loading import check_finite
from explore.runs import append_jsonl, atomic_folder, atomic_path, rewind_jsonl, write_run_info
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
from explore.world.text import caption

logger = logging.getLogger(__name__)

EMA_FILE, EMA_STATE, GENERATOR_FILE = "ema.safetensors", "ema.json", "generator.safetensors"


@dataclass
class TrainState:
    """Where training stands: enough to continue exactly where it stopped."""

    global_step: int = 0  # optimizer steps done
    data_position: int = 0  # index of the next training pair in the world stream


def _trainable(pipe: WorldDiffusionPipeline, config: DiffusionConfig) -> nn.ModuleDict:
    """The modules the optimizer and the EMA see: the UNet, plus the text encoder when it is learned."""
    modules = {"unet": pipe.unet}
    if config.text.encoder == "learned":
        modules["text_encoder"] = pipe.text_encoder
    else:
        pipe.text_encoder.requires_grad_(False).eval()
    return nn.ModuleDict(modules)


def _write_weights(folder: Path, pipe, trainable: nn.ModuleDict, ema: EMAModel, generator: torch.Generator) -> None:
    """The checkpoint's weights: the pipeline (current weights), the EMA and the noise generator."""
    pipe.save_pretrained(folder / "pipeline", safe_serialization=True)
    names = [name for name, _ in trainable.named_parameters()]
    save_file({name: p.detach().contiguous() for name, p in zip(names, ema.shadow_params)}, folder / EMA_FILE)
    (folder / EMA_STATE).write_text(json.dumps({k: v for k, v in ema.state_dict().items() if k != "shadow_params"}))
    save_file({"generator": generator.get_state()}, folder / GENERATOR_FILE)


def _run_record(config: DiffusionConfig) -> dict:
    """What a checkpoint must match to be resumed: the command and every config field that changes the weights
    (the run folder, validation and checkpoint cadence do not: validation samples with its own generator)."""
    return {
        "kind": "diffusion train",
        "config": config.model_dump(exclude={"output_dir": True, "validation": True, "checkpoint_every": True,
                                             "keep_checkpoints": True, "data": {"cache_dir"}}),
    }


def save_training_checkpoint(
    root: Path,
    pipe,
    trainable: nn.ModuleDict,
    ema: EMAModel,
    optimizer,
    lr_scheduler,
    generator: torch.Generator,
    state: TrainState,
    config: DiffusionConfig,
) -> Path:
    """Write ``root/step-NNNNNNN/`` atomically with :func:`explore.train.checkpoint.save_checkpoint`."""
    return save_checkpoint(root, state.global_step, write_weights=lambda folder: _write_weights(folder, pipe, trainable,
                           ema, generator), optimizer=optimizer, scheduler=lr_scheduler, state=asdict(state),
                           run=_run_record(config), keep=config.keep_checkpoints)  # fmt: skip


def load_training_checkpoint(path: Path, trainable: nn.ModuleDict, ema: EMAModel, optimizer, lr_scheduler,
                             generator: torch.Generator, config: DiffusionConfig) -> TrainState:  # fmt: skip
    """Restore weights, EMA, optimizer, lr schedule and RNG states from checkpoint ``path`` (strict).

    Raises ExploreError if the checkpoint was written by another kind of run or another config.
    """
    check_run(path, _run_record(config))
    for name, module in trainable.items():
        loaded = type(module).from_pretrained(path / "pipeline" / name, use_safetensors=True)
        module.load_state_dict(loaded.state_dict(), strict=True)
    shadow = load_file(path / EMA_FILE)
    names = [name for name, _ in trainable.named_parameters()]
    if sorted(shadow) != sorted(names):
        raise ExploreError(f"{path / EMA_FILE}: EMA weights do not match the model; resume with the same config")
    ema.load_state_dict({**json.loads((path / EMA_STATE).read_text()), "shadow_params": [shadow[n] for n in names]})
    load_optimizer_states(path, optimizer, lr_scheduler)
    restore_rng(path)
    generator.set_state(load_file(path / GENERATOR_FILE)["generator"])
    return TrainState(**read_state(path))


def export_ema_pipeline(checkpoint: str | Path, out: str | Path, dtype: torch.dtype | None = None,
                        scheduler: str | None = None, vae: str | Path | None = None) -> Path:  # fmt: skip
    """Write the EMA weights of training checkpoint ``checkpoint`` (a ``checkpoints/step-*`` folder) as a
    pipeline folder ``out`` (what a finished run writes to ``pipeline/``), to use a run stopped early; or, given
    a pipeline folder, copy it. ``dtype`` (e.g. ``torch.float16``) stores the weights in that precision, as
    Stable Diffusion's fp16 checkpoints do: half the bytes, and ``from_pretrained`` without ``torch_dtype``
    loads them back as float32 (explore's loaders and the plain path alike), so both run the same numbers.
    ``scheduler`` (a name of :data:`~explore.diffusion.pipeline.SCHEDULERS`) is stored as the folder's scheduler.
    ``vae`` (an autoencoder folder of the same latent space, e.g. a tiny one taught by the pipeline's own) replaces
    the pipeline's autoencoder, as TAESD replaces Stable Diffusion's: see :func:`replace_autoencoder`.

    Raises:
        ExploreError: no checkpoint or pipeline there, or EMA weights that do not match the pipeline's parameters.
    """
    checkpoint = Path(checkpoint)
    if (checkpoint / "model_index.json").is_file():
        pipe = WorldDiffusionPipeline.from_pretrained(checkpoint, use_safetensors=True)
    elif (checkpoint / EMA_FILE).is_file() and (checkpoint / "pipeline" / "model_index.json").is_file():
        pipe = WorldDiffusionPipeline.from_pretrained(checkpoint / "pipeline", use_safetensors=True)
        shadow = load_file(checkpoint / EMA_FILE)
        params = dict(nn.ModuleDict({"unet": pipe.unet, "text_encoder": pipe.text_encoder}).named_parameters())
        unknown = sorted(set(shadow) - set(params))  # the vae is frozen: no EMA weights
        missing = sorted(name for name in params if name.startswith("unet.") and name not in shadow)
        if unknown or missing:
            raise ExploreError(f"{checkpoint / EMA_FILE} does not match the pipeline (unknown {unknown[:3]}, "
                               f"missing {missing[:3]})")  # fmt: skip
        with torch.no_grad():
            for name, tensor in shadow.items():
                params[name].copy_(tensor)
    else:
        raise ExploreError(f"{checkpoint}: not a diffusion training checkpoint (no {EMA_FILE} or pipeline/) "
                           "nor a pipeline folder (no model_index.json)")  # fmt: skip
    if dtype is not None:
        # the trained parts only: the frozen autoencoder keeps its precision, so the folder holds exactly the
        # latents the UNet learned (a run warm-started from it checks the autoencoder by fingerprint)
        pipe.unet.to(dtype)
        pipe.text_encoder.to(dtype)
    if scheduler is not None:  # the sampler plain from_pretrained users get (explore's settings for it)
        set_scheduler(pipe, scheduler)
    if vae is not None:
        replace_autoencoder(pipe, vae)
    return save_pipeline_atomic(pipe, Path(out))


def replace_autoencoder(pipe: WorldDiffusionPipeline, folder: str | Path) -> None:
    """Give latent pipeline ``pipe`` the autoencoder in ``folder`` (diffusers ``AutoencoderKL`` or
    ``AutoencoderTiny``), which must decode the latent space its UNet learned: the same latent channels, the same
    downsampling and the same ``scaling_factor`` (a trained autoencoder's 1 / std of its latents, which a tiny
    one copies from its teacher). diffusers records the new class in ``model_index.json`` on assignment.

    Raises:
        ExploreError: a pixel-space pipeline, a folder that is not such an autoencoder, or another latent space.
    """
    from diffusers import AutoModel

    folder = Path(folder)
    if not pipe.latent:
        raise ExploreError(f"--vae {folder}: this pipeline denoises pixels; it has no autoencoder to replace")
    config = folder / "config.json"
    kind = json.loads(config.read_text()).get("_class_name") if config.is_file() else None
    if kind not in ("AutoencoderKL", "AutoencoderTiny"):
        raise ExploreError(f"--vae {folder}: not an AutoencoderKL or AutoencoderTiny folder (no config.json naming "
                           "one); train one with `explore diffusion autoencoder --config "
                           "configs/diffusion/autoencoder-tiny.yaml`")  # fmt: skip
    new = AutoModel.from_pretrained(str(folder), use_safetensors=True).requires_grad_(False).eval()  # the class it names
    old = pipe.vae.config
    differ = [key for key in ("latent_channels", "scaling_factor") if new.config[key] != old[key]]
    if len(new.config.block_out_channels) != len(old.block_out_channels):
        differ.append("downsampling")
    if differ:
        raise ExploreError(f"--vae {folder}: another latent space than this pipeline's autoencoder "
                           f"({', '.join(differ)} differ); teach a tiny one this pipeline's vae/ "
                           "(model.teacher in configs/diffusion/autoencoder-tiny.yaml)")  # fmt: skip
    check_finite(new, str(folder))
    pipe.vae = new


def save_pipeline_atomic(pipe: WorldDiffusionPipeline, folder: Path) -> Path:
    """``pipe.save_pretrained`` into a temporary sibling, then swap it in (the old one removed last)."""
    with atomic_folder(folder) as staging:
        pipe.save_pretrained(staging, safe_serialization=True)
        tidy_tiny_config(staging / "vae")
    return folder


@torch.no_grad()
def validate(pipe: WorldDiffusionPipeline, config: DiffusionConfig, out: Path) -> dict[str, float]:
    """Sample the val prompts (seed 0), write a grid (real renders above samples) and score it exactly."""
    v = config.validation
    scenes = split_scenes(
        "val", v.prompts, seed=config.data.world_seed, spec=SceneSpec(max_objects=config.data.max_objects)
    )
    sampler = WorldDiffusionPipeline(unet=pipe.unet, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                     scheduler=make_scheduler(v.scheduler, pipe.scheduler.config, latent=pipe.latent),
                                     vae=pipe.vae)  # fmt: skip
    sampler.set_progress_bar_config(disable=True)
    was_training = pipe.unet.training
    pipe.unet.eval()
    pipe.text_encoder.eval()
    layout = {"layout": scenes} if sampler.grounded else {}  # grounded: the val scenes are the layouts
    images = sampler([caption(s) for s in scenes], num_inference_steps=v.steps, guidance_scale=v.guidance,
                     generator=torch.Generator().manual_seed(0), **layout).images  # fmt: skip
    pipe.unet.train(was_training)
    pipe.text_encoder.train(was_training and config.text.encoder == "learned")
    real = [render(s, config.data.resolution) for s in scenes]
    with atomic_path(out) as tmp:
        image_grid(real + images, columns=len(scenes), scale=2).save(tmp)
    checks = [check_scene(detect(image), scene) for image, scene in zip(images, scenes)]
    return {key: round(float(np.mean([c[key] for c in checks])), 4) for key in ("exact", "object", "colour_position")}


@contextmanager
def denormals_flushed(enabled: bool) -> Iterator[None]:
    """Inside, with ``enabled``, the CPU flushes denormal floats to zero (``torch.set_flush_denormal``); after, it
    does not (torch's default; torch has no getter to restore another state). Why: the trained efficient UNet's
    backward pass produces denormal intermediates, which x86 CPUs compute far slower — its forward + backward at batch
    32 takes 0.42 s with them and 0.35 s flushed, an untrained one 0.36 s either way, diffusers' UNet the same both
    ways (``benchmarks/diffusion.py --denormals``, session 37). A CPU without the instruction (no SSE3) trains on
    unflushed, with one warning line."""
    if not enabled:
        yield
        return
    if not torch.set_flush_denormal(True):
        logger.warning("train.flush_denormal: this CPU cannot flush denormal floats (no SSE3); training unflushed")
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]diffusion"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("{task.fields[rate]:.2f} steps/s"),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled)  # fmt: skip


def drop_conditions(prompts: list[str], layouts: torch.Tensor, text: TextSection,
                    generator: torch.Generator) -> tuple[list[str], torch.Tensor]:  # fmt: skip
    """Classifier-free-guidance dropout: ``text.cond_dropout`` of the rows lose prompt and layout map (the
    unconditional model); ``text.layout_dropout`` of the rest lose only the map (the free-text path)."""
    drop_text = torch.rand(len(prompts), generator=generator) < text.cond_dropout
    drop_layout = drop_text | (torch.rand(len(prompts), generator=generator) < text.layout_dropout)
    prompts = ["" if d else p for p, d in zip(prompts, drop_text.tolist())]
    return prompts, layouts * (~drop_layout).float()[:, None, None, None]


def model_guidance(scale: float, warmup: int, step: int) -> float:
    """The model-guidance weight at optimizer step ``step`` (0-based): ``scale``, ramped up linearly over the
    first ``warmup`` steps."""
    return scale if warmup == 0 else scale * min(1.0, step / warmup)


def train_diffusion(config: DiffusionConfig, *, resume: str | None = None, progress: bool = True) -> Path:
    """Train ``config`` to completion; returns ``<output_dir>/pipeline`` (EMA weights).

    Raises:
        ExploreError: a non-finite loss or gradient (the last good checkpoint is kept), a resume problem, or a fresh
            start in a folder that holds an earlier run's checkpoints (:func:`refuse_fresh_start`; nothing touched).
    """
    run_dir = Path(config.output_dir)
    if resume is None:
        refuse_fresh_start(run_dir / "checkpoints")
    t = config.train
    features = perceptual_features(config.loss)  # first: a missing LPIPS trunk fails before any work
    accelerator = Accelerator(gradient_accumulation_steps=t.grad_accum, mixed_precision=t.mixed_precision)
    pipe = build_pipeline(config)
    if resume is None and config.model.init_from is not None:
        warm_start(pipe, config.model.init_from)  # a resumed run has these weights in its checkpoint
    # builds or resumes the cache first (latent models: with every image encoded once)
    next_batch = latent_data(config.data, pipe.vae, progress) if pipe.latent else training_data(config.data, progress)
    trainable = _trainable(pipe, config)
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    lr_scheduler = get_cosine_schedule_with_warmup(optimizer, t.warmup_steps, t.steps)
    ema = EMAModel(trainable.parameters(), decay=t.ema_decay, use_ema_warmup=True)
    generator = torch.Generator().manual_seed(t.seed)
    state = TrainState()
    if resume is not None:
        checkpoint = find_checkpoint(resume, run_dir / "checkpoints")
        state = load_training_checkpoint(checkpoint, trainable, ema, optimizer, lr_scheduler, generator, config)
        accelerator.print(f"resumed from {checkpoint} (step {state.global_step})")
    if features is not None:
        features = features.to(accelerator.device)
    if accelerator.is_main_process:
        # steps after the checkpoint (all of them on a fresh start) are redone: their log lines go, so each
        # step is logged once
        rewind_jsonl(run_dir / "train_log.jsonl", state.global_step)
        write_run_info(run_dir, config.model_dump())
        counts = {name: sum(p.numel() for p in m.parameters()) for name, m in (("unet", pipe.unet),
                  ("text_encoder", pipe.text_encoder))}  # fmt: skip
        accelerator.print(f"parameters: unet {counts['unet']:,}, text encoder {counts['text_encoder']:,}")
    pipe.text_encoder.to(accelerator.device)
    if pipe.latent:
        pipe.vae.to(accelerator.device)
    unet, optimizer, lr_scheduler = accelerator.prepare(pipe.unet, optimizer, lr_scheduler)
    text_encoder = pipe.text_encoder
    if config.text.encoder == "learned":
        text_encoder = accelerator.prepare(text_encoder)
    if t.compile:
        # in place (nn.Module.compile), not accelerate's dynamo_backend: that lives in a process-wide state set by the
        # first Accelerator (a later run in the same process would silently keep it), and torch.compile's wrapper
        # would hide the module's class from predict_noise, which feeds the layout by the UNet's kind. Static shapes,
        # with prompts padded to text.max_length (below): padded to each batch's longest, every new length recompiled
        # until the recompile limit left it eager, and automatic dynamic shapes failed inside inductor (measured)
        unet.compile(dynamic=False)
        if config.text.encoder == "learned":
            text_encoder.compile(dynamic=False)
    ema.to(accelerator.device)
    noise_scheduler = pipe.scheduler
    # model guidance's unconditional rows: the empty prompt, tokenized once (encoded each step: the encoder learns)
    empty_ids, empty_mask = tokenize_prompts(pipe.tokenizer, [""], config.text.max_length, pad_to_max=t.compile)
    empty_ids, empty_mask = empty_ids.to(accelerator.device), empty_mask.to(accelerator.device)
    interactive = progress and sys.stderr.isatty()
    unet.train()
    text_encoder.train(config.text.encoder == "learned")
    started, done_here = time.perf_counter(), 0
    num_processes = accelerator.num_processes
    with _progress(interactive) as bar, denormals_flushed(t.flush_denormal):
        job = bar.add_task("train", total=t.steps, completed=state.global_step, loss=float("nan"), rate=0.0)
        while state.global_step < t.steps:
            for _ in range(t.grad_accum):
                start = state.data_position + accelerator.process_index * t.batch_size
                images, prompts, layouts = next_batch(start, t.batch_size)  # latent models: (B, C, h, w) latents
                state.data_position += t.batch_size * num_processes
                if config.model.layout_given_channel:
                    layouts = with_given_channel(layouts)
                prompts, layouts = drop_conditions(prompts, layouts, config.text, generator)
                ids, mask = tokenize_prompts(pipe.tokenizer, prompts, config.text.max_length, pad_to_max=t.compile)
                device = accelerator.device
                ids, mask, images = ids.to(device), mask.to(device), images.to(device)
                with accelerator.accumulate(unet, text_encoder), accelerator.autocast():
                    with torch.set_grad_enabled(config.text.encoder == "learned"):
                        context = text_encoder(ids, mask)  # (B, L, D)
                    loss = config.loss
                    guidance = model_guidance(loss.model_guidance, loss.model_guidance_warmup, state.global_step)
                    guided = {}
                    if guidance > 0:
                        with torch.no_grad():  # one row, repeated over the batch
                            empty = text_encoder(empty_ids, empty_mask)
                        unconditional = (empty.expand(len(prompts), -1, -1), empty_mask.expand(len(prompts), -1))
                        guided = {"guidance": guidance, "unconditional": unconditional,
                                  "conditioned": torch.tensor([p != "" for p in prompts])}
                    parts = diffusion_loss(unet, context, mask, images, noise_scheduler, generator,
                                           min_snr_gamma=loss.min_snr_gamma, perceptual_weight=loss.perceptual_weight,
                                           features=features,
                                           layout=layouts.to(device) if config.model.layout else None,
                                           **guided)  # fmt: skip
                    if not torch.isfinite(parts.loss):
                        raise ExploreError(
                            f"non-finite loss {parts.loss.item()} at step {state.global_step + 1}; the "
                            f"last good checkpoint is kept in {run_dir / 'checkpoints'}; lower train.lr"
                        )
                    grad_norm = optimizer_step(
                        parts.loss, optimizer, lr_scheduler, params, max_norm=t.grad_clip, accelerator=accelerator,
                        clip=accelerator.sync_gradients,  # no norm while gradients are still being accumulated
                        nonfinite_message=f"non-finite gradient norm at step {state.global_step + 1}; "
                                          "the last good checkpoint is kept; lower train.lr",
                    )  # fmt: skip
            ema.step(trainable.parameters())
            state.global_step += 1
            done_here += 1
            rate = done_here / (time.perf_counter() - started)
            bar.update(job, advance=1, loss=parts.loss.item(), rate=rate)
            last = state.global_step == t.steps
            if accelerator.is_main_process and (state.global_step % 10 == 0 or state.global_step == 1 or last):
                record = {"step": state.global_step, "loss": round(parts.loss.item(), 5), "mse": round(parts.mse, 5),
                          "perceptual": round(parts.perceptual, 5), "lr": lr_scheduler.get_last_lr()[0],
                          "grad_norm": round(grad_norm, 4), "steps_per_s": round(rate, 3)}  # fmt: skip
                _log(run_dir, record)
                if progress and not interactive and (state.global_step % 50 == 0 or state.global_step == 1):
                    print(json.dumps(record), flush=True)
            if accelerator.is_main_process and (state.global_step % config.validation.every == 0 or last):
                ema.store(trainable.parameters())
                ema.copy_to(trainable.parameters())
                scores = validate(pipe, config, run_dir / "samples" / f"step-{state.global_step:07d}.png")
                ema.restore(trainable.parameters())
                _log(run_dir, {"step": state.global_step, "validation": scores})
                if progress:
                    print(f"step {state.global_step} validation (EMA, {config.validation.scheduler} "
                          f"{config.validation.steps} steps): {scores}", flush=True)  # fmt: skip
            if accelerator.is_main_process and (state.global_step % config.checkpoint_every == 0 or last):
                save_training_checkpoint(run_dir / "checkpoints", pipe, trainable, ema, optimizer, lr_scheduler,
                                         generator, state, config)  # fmt: skip
            accelerator.wait_for_everyone()

    final = run_dir / "pipeline"
    if accelerator.is_main_process:
        ema.copy_to(trainable.parameters())
        save_pipeline_atomic(pipe, final)
    accelerator.wait_for_everyone()
    return final


def _log(run_dir: Path, record: dict) -> None:
    append_jsonl(run_dir / "train_log.jsonl", [record])  # fsync-ed; a line cut by a kill is truncated first
