"""Text-to-image sampling as a diffusers pipeline: any diffusers scheduler, classifier-free guidance.

Reload a saved pipeline with ``WorldDiffusionPipeline.from_pretrained(folder)`` or, as any custom diffusers
pipeline loads, ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``: every saved folder holds
``pipeline_world.py`` (one import of this class) and ``model_index.json`` names it, diffusers' format for a
pipeline class outside diffusers; the components are explore classes, which diffusers imports by the module path
recorded in ``model_index.json``. Swap the sampler with
``pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)`` or :func:`set_scheduler`.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    ImagePipelineOutput,
    UniPCMultistepScheduler,
)
from diffusers.utils import logging as diffusers_logging
from diffusers.utils import make_image_grid
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image, ImageOps

from explore.diffusion.text_encoder import T5TextEncoder, WorldTextEncoder, tokenize_prompts
from explore.diffusion.unet import EfficientUNet, layout_channels, predict_noise
from explore.errors import ExploreError
from explore.models.loading import check_finite
from explore.models.tokenizer import clear_call_state
from explore.packaged import packaged
from explore.world.layout import LAYOUT_CHANNELS, layout_map, prompt_layout
from explore.world.scene import Scene
from explore.world.text import caption

# diffusers imports a custom component only from a module that is already imported (it will not run
# code because model_index.json names it); importing them here makes from_pretrained work anywhere.
COMPONENT_CLASSES = (EfficientUNet, WorldTextEncoder, T5TextEncoder)

LAYOUT_TEXTS: tuple[str, ...] = ("caption", "prompt")  # what the text encoder reads beside a layout
SCHEDULERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler,
              "unipc": UniPCMultistepScheduler}  # fmt: skip
PACKAGED = "diffusion-small"
# diffusers' format for a pipeline class it does not ship: model_index.json's "_class_name" is [module, class] and
# <module>.py lies in the folder (loaded by DiffusionPipeline.from_pretrained(..., trust_remote_code=True)).
PIPELINE_MODULE = "pipeline_world"
PIPELINE_SOURCE = '''"""The pipeline class of this folder, for DiffusionPipeline.from_pretrained(folder, trust_remote_code=True).

It needs the explore package (pip install explore); WorldDiffusionPipeline.from_pretrained(folder) loads the
folder without running this file.
"""

from explore.diffusion.pipeline import WorldDiffusionPipeline

__all__ = ["WorldDiffusionPipeline"]
'''
TRAIN_COMMAND = "explore diffusion train --config configs/diffusion/shapes-small.yaml"


class WorldDiffusionPipeline(DiffusionPipeline):
    """Text-to-image diffusion: tokenizer → text encoder → UNet denoising loop (→ autoencoder decoder).

    Components: ``unet`` (an :class:`~explore.diffusion.unet.EfficientUNet` or a diffusers
    ``UNet2DConditionModel``), ``text_encoder`` (``WorldTextEncoder`` / ``T5TextEncoder``),
    ``tokenizer`` (word-level) and any diffusers ``scheduler`` (epsilon or v-prediction, as its config says).
    Images are in [-1, 1] inside the loop, [0, 1] / PIL outside. With the optional ``vae`` (a diffusers
    ``AutoencoderKL``) the loop denoises its latents scaled by ``vae.config.scaling_factor`` and the
    decoder makes the images, as Stable Diffusion does; without it the loop runs on pixels.

    Grounded generation: when the UNet has a layout input (:func:`~explore.diffusion.unet.layout_channels` > 0) each
    image can be conditioned on a layout (a :class:`~explore.world.scene.Scene`, encoded per cell by
    :func:`explore.world.layout.layout_map`): ``layout="auto"`` parses every prompt with the world's
    grammar and samples a layout consistent with it from ``layout_seed``; ``"none"`` is the free-text
    path (cross-attention only, the map left at zeros). With a layout the text encoder reads, by default
    (``layout_text="caption"``), the layout's canonical caption: every object's size, colour, shape and cell, the
    text the grounded model was trained on beside its map. A prompt such as "three green stars" or "a star and a
    circle" is then what it means, not an out-of-distribution sentence the UNet must reconcile with the map;
    ``layout_text="prompt"`` feeds the prompt itself (measured in the README, "Generate").
    """

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components: ClassVar[list[str]] = ["vae"]

    def __init__(self, unet, text_encoder, tokenizer, scheduler, vae=None, guidance_scale: float | None = None):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
                              vae=vae)  # fmt: skip
        # The guidance scale the model was trained to sample at, kept in model_index.json (as Stable Diffusion keeps
        # requires_safety_checker): 1 for a model trained with model guidance (loss.model_guidance), None for
        # classifier-free-guidance training (the path's default, DEFAULT_SAMPLING, applies).
        self.register_to_config(guidance_scale=guidance_scale)

    def default_guidance(self, layout: str) -> float:
        """The guidance scale used when none is given on path ``layout`` ("auto" or "none"): :func:`path_guidance`
        of the scale the model was trained for."""
        return path_guidance(self.config.get("guidance_scale"), layout)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """diffusers' save, without the state a tokenizer call or load leaves behind (the last call's truncation
        and padding, how the files were found): :func:`explore.models.tokenizer.clear_call_state`. The pipeline
        passes its truncation and padding on every call (:func:`explore.diffusion.text_encoder.tokenize_prompts`),
        so nothing it draws changes."""
        if hasattr(self.tokenizer, "backend_tokenizer"):  # a fast (tokenizers) tokenizer: every one explore builds
            clear_call_state(self.tokenizer)
        return super().save_pretrained(save_directory, *args, **kwargs)

    def save_config(self, save_directory, *args, **kwargs):
        """diffusers' ``model_index.json``, naming this class by ``pipeline_world.py`` (written beside it) so that
        ``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`` finds it; ``save_pretrained`` calls
        this before it uploads (``push_to_hub``), so a pushed folder holds the file too."""
        super().save_config(save_directory, *args, **kwargs)
        folder = Path(save_directory)
        (folder / f"{PIPELINE_MODULE}.py").write_text(PIPELINE_SOURCE)
        index = json.loads((folder / self.config_name).read_text())
        index["_class_name"] = [PIPELINE_MODULE, type(self).__name__]
        (folder / self.config_name).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load_config(cls, *args, **kwargs):
        """diffusers' ``load_config``; a folder that names this class by module ([``pipeline_world``, name], written
        for ``DiffusionPipeline``) loads through this class without running the folder's file (no
        ``trust_remote_code``): the class is already here."""
        loaded = super().load_config(*args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        if config.get("_class_name") == [PIPELINE_MODULE, cls.__name__]:
            config["_class_name"] = cls.__name__
        return loaded

    @property
    def image_size(self) -> int:
        """Side in pixels of the images it makes: the UNet's sample size, times the autoencoder's factor."""
        size = self.unet.config.sample_size
        if self.latent:
            size *= 2 ** (len(self.vae.config.block_out_channels) - 1)
        return size

    @property
    def latent(self) -> bool:
        """Whether the UNet denoises an autoencoder's latents (``vae`` decodes them) rather than pixels."""
        return getattr(self, "vae", None) is not None

    @property
    def grounded(self) -> bool:
        """Whether the UNet reads a layout map (the grounded path is available)."""
        return bool(layout_channels(self.unet))

    def layouts_for(self, prompts: list[str], layout, layout_seed: int) -> list[Scene] | None:
        """One layout per image (None: the free-text path). ``layout``: "auto", "none" or a list of Scenes.

        Image ``i`` of ``"auto"`` gets the layout seeded by ``[layout_seed, i]``.

        Raises:
            ExploreError: a prompt outside the grammar (with "auto"), or a layout for a UNet without layout input.
            ValueError: an unknown ``layout`` value or a list of the wrong length.
        """
        if isinstance(layout, str) and layout == "none":
            return None
        if not self.grounded:
            raise ExploreError("this diffusion pipeline has no layout input (its UNet has layout_channels = 0); "
                               "use --layout none")  # fmt: skip
        if isinstance(layout, str):
            if layout != "auto":
                raise ValueError(f"layout must be 'auto', 'none' or a list of Scenes, got {layout!r}")
            return [prompt_layout(prompt, [layout_seed, i]) for i, prompt in enumerate(prompts)]
        layouts = list(layout)
        if len(layouts) != len(prompts):
            raise ValueError(f"got {len(layouts)} layouts for {len(prompts)} images")
        return layouts

    def encode_prompts(self, prompts: list[str],
                       device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Text hidden states (B, L, D) and attention mask (B, L) for ``prompts`` (on ``device``, default the
        pipeline's execution device)."""
        max_length = getattr(self.text_encoder.config, "max_length", 64)
        ids, mask = tokenize_prompts(self.tokenizer, prompts, max_length)
        device = self._execution_device if device is None else device
        ids, mask = ids.to(device), mask.to(device)
        return self.text_encoder(ids, mask), mask

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        num_inference_steps: int = 20,
        guidance_scale: float | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        layout: str | list[Scene] | None = None,
        layout_seed: int = 0,
        layout_text: str = "caption",
    ) -> ImagePipelineOutput | tuple:
        """Generate images for ``prompt`` (one string or a list).

        ``guidance_scale`` 1 turns classifier-free guidance off (one UNet pass per step); above 1
        the conditional prediction is pushed away from the unconditional one (empty prompt). None: the scale the
        model was trained for (:meth:`default_guidance`: 3, or 1 for a model trained with model guidance).
        ``generator`` makes the result deterministic. ``output_type``: "pil", "np" (B, H, W, 3)
        in [0, 1], or "pt" (B, 3, H, W) in [0, 1]. ``layout``: "auto" (default for a grounded UNet), "none"
        (default otherwise) or one Scene per image (prompts × num_images_per_prompt); see :meth:`layouts_for`.
        ``layout_text``: with a layout, what the text encoder reads: "caption" (the layout's canonical caption,
        default) or "prompt" (the prompt as given); without a layout it always reads the prompt.

        Raises:
            ValueError: ``num_inference_steps`` < 1, ``guidance_scale`` < 1, an unknown ``output_type`` or
                ``layout_text``.
        """
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        if guidance_scale is not None and guidance_scale < 1:
            raise ValueError(f"guidance_scale must be >= 1 (1 = no guidance), got {guidance_scale}")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        if layout_text not in LAYOUT_TEXTS:
            raise ValueError(f"layout_text must be one of {LAYOUT_TEXTS}, got {layout_text!r}")
        # Resolved once, as diffusers' pipelines do: ``self.device`` walks every module (group-offloading hooks
        # included), 0.75 ms per read on one CPU thread; five reads were ~2 ms more of a 36 ms one-step call.
        device = self._execution_device
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        batch = len(prompts)
        layouts = self.layouts_for(prompts, layout or ("auto" if self.grounded else "none"), layout_seed)
        if guidance_scale is None:
            guidance_scale = self.default_guidance("none" if layouts is None else "auto")
        guided = guidance_scale > 1
        if layouts is not None and layout_text == "caption":
            prompts = [caption(scene) for scene in layouts]
        # Unconditional rows (the empty prompt, no layout) first, padded with the conditional ones to one length.
        context, mask = self.encode_prompts(([""] * batch if guided else []) + prompts, device)
        maps = None
        if layouts is not None:
            given = layout_channels(self.unet) == LAYOUT_CHANNELS + 1  # the "map given" channel
            maps = np.stack([layout_map(scene, given) for scene in layouts])
            maps = torch.from_numpy(maps).to(device, context.dtype)
            maps = torch.cat([torch.zeros_like(maps), maps]) if guided else maps

        size = self.unet.config.sample_size
        shape = (batch, self.unet.config.out_channels, size, size)  # in_channels also counts a layout input
        sample = randn_tensor(shape, generator=generator, device=device, dtype=context.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        sample = sample * self.scheduler.init_noise_sigma
        # Stochastic samplers (DDPM) take the generator; deterministic ones (UniPC) have no such argument.
        extra = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = torch.cat([sample, sample]) if guided else sample
            model_input = self.scheduler.scale_model_input(model_input, t)
            noise = predict_noise(self.unet, model_input, t, context, mask, maps)
            if guided:
                unconditional, conditional = noise.chunk(2)
                noise = unconditional + guidance_scale * (conditional - unconditional)
            sample = self.scheduler.step(noise, t, sample, **extra).prev_sample

        if self.latent:  # (B, C, h, w) scaled latents -> (B, 3, H, W) in [-1, 1]
            sample = self.vae.decode(sample.to(self.vae.dtype) / self.vae.config.scaling_factor).sample
        images = (sample / 2 + 0.5).clamp(0, 1)  # (B, 3, H, W)
        if output_type == "pt":
            result = images
        else:
            result = images.permute(0, 2, 3, 1).float().cpu().numpy()
            if output_type == "pil":
                result = self.numpy_to_pil(result)
        if not return_dict:
            return (result,)
        return ImagePipelineOutput(images=result)


# Sampler settings on top of the training noise schedule. Pixel-space models need the predicted clean
# image clipped: with the cosine schedule the noisiest step has alpha_bar ~ 0, and DPM-Solver++ / UniPC
# divide by sqrt(alpha_bar), so without (dynamic) thresholding their first step explodes into noise.
# "trailing" spacing starts at the last training step, where the initial Gaussian belongs.
# explore's default sampler and guidance per path (explore generate, the web app, world-geneval, world-t2i): the
# grounded path ("auto") DDIM at guidance 3 (on the first latent model, world-geneval 0.608 / 0.362 seen / held-out
# at guidance 3 against 0.562 / 0.338 at 2: README, "Latent diffusion"); free text ("none") DPM-Solver++ at 3.
DEFAULT_SAMPLING: dict[str, tuple[str, float]] = {"auto": ("ddim", 3.0), "none": ("dpm", 3.0)}


def path_guidance(trained: float | None, layout: str) -> float:
    """The guidance scale a pipeline samples at by default on path ``layout`` ("auto" or "none"): the scale it was
    trained for (its ``guidance_scale`` config: 1 after model guidance), else the path's :data:`DEFAULT_SAMPLING`."""
    return float(trained) if trained is not None else DEFAULT_SAMPLING[layout][1]

SAMPLER_SETTINGS: dict[str, dict] = {
    "ddpm": {"clip_sample": True},
    "ddim": {"clip_sample": True, "timestep_spacing": "trailing"},
    "dpm": {"algorithm_type": "dpmsolver++", "thresholding": True, "sample_max_value": 1.0,
            "timestep_spacing": "trailing"},
    "unipc": {"predict_x0": True, "thresholding": True, "sample_max_value": 1.0, "timestep_spacing": "trailing"},
}  # fmt: skip


# Latents are not bounded to [-1, 1]: no clipping or thresholding (Stable Diffusion's settings), and "leading"
# spacing (SD's), which starts one stride below the last training step: with the cosine schedule alpha_bar is
# ~0 there, and without clipping the first "trailing" step divides the noise prediction's error by
# sqrt(alpha_bar) — measured on the latent model after 77 k images (16 val scenes, DDIM 20, g 2): trailing
# objects 3%, colour + position 8% (noise); trailing with x0 clipped to ±4: 0% / 61%; leading: 33% / 83%.
LATENT_SAMPLER_SETTINGS: dict[str, dict] = {
    "ddpm": {"clip_sample": False},
    "ddim": {"clip_sample": False, "timestep_spacing": "leading"},
    "dpm": {"algorithm_type": "dpmsolver++", "thresholding": False, "timestep_spacing": "leading"},
    "unipc": {"predict_x0": True, "thresholding": False, "timestep_spacing": "leading"},
}  # fmt: skip
# A velocity-predicting latent model has no such division: at the last training step it predicts ~ -x0 directly,
# so its samplers start there ("trailing", as Lin et al. 2024 prescribe for v-prediction), where the initial
# Gaussian belongs, instead of one stride below.
VELOCITY_SPACING = "trailing"


def make_scheduler(name: str, training_config, latent: bool = False, **overrides):
    """Sampler ``name`` (ddpm / ddim / dpm / unipc) on the noise schedule of ``training_config``.

    Every training value is passed explicitly (diffusers' ``from_config`` otherwise swaps the values
    that were defaults for the new class's defaults, so a freshly built and a reloaded pipeline would
    sample differently), then :data:`SAMPLER_SETTINGS` (pixels) or :data:`LATENT_SAMPLER_SETTINGS` (with
    :data:`VELOCITY_SPACING` for a velocity-predicting model), then ``overrides`` (scheduler config keys, e.g.
    another ``timestep_spacing``) are applied.
    """
    if name not in SCHEDULERS:
        raise ExploreError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")
    config = {key: value for key, value in dict(training_config).items() if not key.startswith("_")}
    settings = dict((LATENT_SAMPLER_SETTINGS if latent else SAMPLER_SETTINGS)[name])
    if latent and config.get("prediction_type") == "v_prediction" and "timestep_spacing" in settings:
        settings["timestep_spacing"] = VELOCITY_SPACING
    return SCHEDULERS[name].from_config({**config, **settings, **overrides})


def set_scheduler(pipe: WorldDiffusionPipeline, name: str) -> WorldDiffusionPipeline:
    """Replace the pipeline's scheduler by sampler ``name`` (same noise schedule); see :func:`make_scheduler`."""
    pipe.scheduler = make_scheduler(name, pipe.scheduler.config, latent=pipe.latent)
    return pipe


def packaged_folder() -> Path:
    """Where the packaged diffusion checkpoint lives (it may not exist until it has been trained)."""
    return packaged(PACKAGED)


def load_pipeline(checkpoint: str | Path | None = None, device: str = "cpu") -> WorldDiffusionPipeline:
    """Load a saved pipeline folder (default: the packaged one), checking it first.

    Raises:
        ExploreError: a missing folder, a folder without ``model_index.json``, or NaN / Inf weights.
    """
    folder = Path(checkpoint) if checkpoint is not None else packaged_folder()
    if checkpoint is None and not folder.is_dir():
        raise ExploreError(
            f"no packaged diffusion model yet (no folder {folder}); train one with `{TRAIN_COMMAND}`, "
            f"then copy runs/diffusion/shapes-small/pipeline to {folder} or pass it with --checkpoint"
        )
    if not folder.is_dir():
        raise ExploreError(f"--checkpoint {folder}: no such folder; pass a pipeline folder written by training")
    if not (folder / "model_index.json").is_file():
        raise ExploreError(f"--checkpoint {folder}: no model_index.json; pass <output_dir>/pipeline of a training run")
    diffusers_logging.disable_progress_bar()  # the "Loading pipeline components" bar
    try:
        pipe = WorldDiffusionPipeline.from_pretrained(folder, use_safetensors=True)
    finally:
        diffusers_logging.enable_progress_bar()
    check_finite(pipe.unet, str(folder / "unet"))
    check_finite(pipe.text_encoder, str(folder / "text_encoder"))
    if pipe.latent:
        check_finite(pipe.vae, str(folder / "vae"))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def image_grid(images: list[Image.Image], columns: int | None = None, scale: int = 1, pad: int = 2) -> Image.Image:
    """Images side by side in a grid (``columns`` default: all in one row), enlarged ``scale``× (nearest: the
    world's pixels stay sharp) and ``pad`` white pixels apart, laid out by diffusers' ``make_image_grid``."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    columns = columns or len(images)
    rows = (len(images) + columns - 1) // columns
    w, h = images[0].size[0] * scale, images[0].size[1] * scale
    white = (255, 255, 255)
    tiles = [image.convert("RGB").resize((w, h), Image.Resampling.NEAREST) for image in images]
    tiles += [Image.new("RGB", (w, h), white)] * (rows * columns - len(tiles))  # fill the last row
    tiles = [ImageOps.expand(tile, border=(pad, pad, 0, 0), fill=white) for tile in tiles]  # left and top gaps
    return ImageOps.expand(make_image_grid(tiles, rows, columns), border=(0, 0, pad, pad), fill=white)
