"""The diffusion training config: UNet, text encoder, noise schedule, loss, data, optimisation.

YAML files (``configs/diffusion/*.yaml``) are validated on load; unknown keys are errors that
list the allowed ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from explore.config import StrictModel, load_yaml_config


class ModelSection(StrictModel):
    kind: Literal["efficient", "diffusers"] = Field(
        "efficient", description="efficient: explore's EfficientUNet; diffusers: UNet2DConditionModel (the baseline)"
    )
    block_out_channels: list[int] = Field([32, 64, 128], min_length=1, description="channels per resolution level")
    layers_per_block: int = Field(1, ge=1, description="residual blocks per level on the way down")
    attention_levels: list[int] = Field([1, 2], description="levels (0 = full resolution) with text cross-attention")
    conv_type: Literal["plain", "separable"] | list[Literal["plain", "separable"]] = Field(
        "separable", description="3x3 convs or depthwise-separable: one for every level or a list, one per level"
    )
    upsample_conv_type: Literal["plain", "separable"] | None = Field(
        None, description="every upsampler's convolution (efficient UNet); None: the finer level's conv_type"
    )
    upsample_channels: Literal["same", "finer"] = Field(
        "same",
        description="an upsampler keeps the coarser level's channels (same) or writes the finer level's "
        "(finer; efficient UNet)",
    )
    time_embedding_dim: int | None = Field(None, ge=1, description="timestep embedding width (efficient UNet); "
                                           "None: 4 x block_out_channels[0]")  # fmt: skip
    attention_heads: int = Field(4, ge=1, description="attention heads")
    norm_num_groups: int = Field(16, ge=1, description="GroupNorm groups (must divide every width)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout inside residual blocks")
    layout: bool = Field(False, description="grounded: concatenate the per-cell layout map (explore.world.layout, "
                         "17 channels) to the UNet input")  # fmt: skip
    layout_given_channel: bool = Field(False, description="add a channel of ones to the layout map, so an empty "
                                       "cell differs from a dropped map (both zeros otherwise)")  # fmt: skip
    layout_modulation: bool = Field(False, description="grounded efficient UNet: the layout map also scales and "
                                    "shifts every residual block at its resolution (SPADE), not only the input")  # fmt: skip
    pixel_unshuffle: int = Field(1, ge=1, le=4, description="space-to-depth factor: 2 runs a 64 px model at "
                                 "32 x 32 x 12 (efficient UNet only)")  # fmt: skip
    autoencoder: str | None = Field(None, description="latent diffusion: a trained AutoencoderKL folder "
                                    "(explore diffusion autoencoder; 'embedded' = the packaged pipeline's vae/); the "
                                    "UNet then denoises its scaled latents and the pipeline decodes them. None: "
                                    "pixel space")  # fmt: skip
    init_from: str | None = Field(None, description="warm start: a pipeline folder ('embedded' = the packaged "
                                 "one) whose UNet and text encoder weights start the run (same architecture, "
                                 "tokenizer and autoencoder); the optimizer and schedule start fresh")  # fmt: skip
    seed: int = Field(0, ge=0, description="seed of the weight initialisation")

    @model_validator(mode="after")
    def _groups_divide(self) -> ModelSection:
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups or c % self.attention_heads]
        if bad:
            raise ValueError(f"widths {bad} are not divisible by norm_num_groups ({self.norm_num_groups}) "
                             f"and attention_heads ({self.attention_heads})")  # fmt: skip
        return self


class TextSection(StrictModel):
    encoder: Literal["learned", "t5"] = Field("learned", description="learned: trained with the UNet; t5: the "
                                              "embedded VLM's T5 encoder, frozen")  # fmt: skip
    hidden_size: int = Field(128, ge=8, description="learned encoder width (t5: the VLM's d_model)")
    num_layers: int = Field(2, ge=0, description="learned encoder transformer layers")
    num_heads: int = Field(4, ge=1, description="learned encoder attention heads")
    max_length: int = Field(48, ge=4, description="most prompt tokens (with <s>)")
    cond_dropout: float = Field(0.1, ge=0, lt=1, description="fraction of training prompts replaced by the empty "
                                "prompt (classifier-free guidance); their layout map is dropped too")  # fmt: skip
    layout_dropout: float = Field(0.2, ge=0, lt=1, description="grounded models: fraction of the other prompts "
                                  "trained without their layout map (the free-text path)")  # fmt: skip


class NoiseSection(StrictModel):
    num_train_timesteps: int = Field(1000, ge=10, description="diffusion steps T of the training schedule")
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = Field(
        "squaredcos_cap_v2",
        description="noise schedule (squaredcos_cap_v2 = the cosine schedule, better for small images)",
    )
    prediction_type: Literal["epsilon", "v_prediction"] = Field(
        "epsilon",
        description="what the UNet predicts: the noise (epsilon) or the velocity sqrt(a) eps - sqrt(1 - a) x0 "
        "(v_prediction; Salimans & Ho 2022), which stays a usable clean-image estimate at the noisiest steps; latent "
        "samplers then start at the last training step (trailing spacing, Lin et al. 2024)",
    )


class LossSection(StrictModel):
    perceptual_weight: float = Field(0.1, ge=0, description="weight of the perceptual term on the predicted "
                                     "clean image (0 disables it and skips loading its network)")  # fmt: skip
    perceptual_network: Literal["world-vit", "vlm", "lpips-alex", "lpips-vgg", "lpips-squeeze"] = Field(
        "world-vit",
        description="features of the perceptual term: world-vit = a small ViT trained on the shapes world, "
        "pinned in the package (the first embedded VLM's); vlm = the current embedded VLM's vision encoder; "
        "lpips-* = LPIPS through torchmetrics (needs torchvision and its trunk weights)",
    )
    perceptual_layers: list[int] = Field([1, 2, 3], min_length=1, description="vision-encoder layers compared "
                                         "(perceptual_network: world-vit or vlm)")  # fmt: skip
    min_snr_gamma: float = Field(5.0, ge=0, description="min-SNR-gamma weighting of the MSE (0 disables it)")
    model_guidance: float = Field(0.0, ge=0, lt=1, description="model guidance w (Tang et al. 2025, arXiv "
                                  "2502.12154): conditioned rows learn eps + w * (their own prediction - the "
                                  "unconditional one), detached, so that sampling without classifier-free guidance "
                                  "(guidance 1, one UNet pass per step) acts like CFG at scale 1 / (1 - w); 0 "
                                  "disables it (one more forward pass per step, without gradients)")  # fmt: skip
    model_guidance_warmup: int = Field(0, ge=0, description="steps over which model_guidance ramps up linearly "
                                       "from 0 (the model's own predictions mean little at the start)")  # fmt: skip


class DataSection(StrictModel):
    world_seed: int = Field(0, ge=0, description="base seed of the shapes-world train / val splits")
    max_objects: int = Field(4, ge=1, le=9, description="most objects in a training scene")
    resolution: int = Field(32, ge=16, description="image side in pixels (divisible by 2^(levels-1))")
    relation_prompts: float = Field(
        0.25,
        ge=0,
        le=1,
        description="fraction of two-object scenes in one row or "
        "column described by their relation ('a red circle above a blue square')",
    )
    cache_dir: str | None = Field(None, description="pre-rendered training pairs (explore.diffusion.cache), built "
                                  "on first use and resumable; None renders every batch")  # fmt: skip
    cache_size: int = Field(50000, ge=1, description="distinct training scenes in the cache (reused in turn)")


class TrainSection(StrictModel):
    steps: int = Field(gt=0, description="optimizer steps")
    batch_size: int = Field(32, gt=0, description="images per micro-batch (per process)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0, description="peak learning rate (AdamW)")
    warmup_steps: int = Field(100, ge=0, description="linear warm-up steps")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    grad_clip: float = Field(1.0, gt=0, description="max global gradient norm")
    ema_decay: float = Field(0.999, gt=0, lt=1, description="EMA decay (with warm-up); the saved pipeline uses the EMA")
    mixed_precision: Literal["no", "bf16", "fp16"] = Field("no", description="accelerate mixed precision (GPU)")
    compile: bool = Field(False, description="UNet and learned text encoder through torch.compile (faster)")
    flush_denormal: bool = Field(False, description="CPU: denormals flushed to zero (a trained efficient UNet: faster)")
    seed: int = Field(0, ge=0, description="seed of noise, timesteps and prompt dropout")

    @model_validator(mode="after")
    def _warmup_fits(self) -> TrainSection:
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be smaller than steps ({self.steps})")
        return self


class ValidationSection(StrictModel):
    every: int = Field(500, gt=0, description="write a validation grid every this many steps (and at the end)")
    prompts: int = Field(8, ge=1, description="validation scenes (val split), one image each")
    scheduler: Literal["ddpm", "ddim", "dpm", "unipc"] = Field("dpm", description="sampler for validation images")
    steps: int = Field(20, ge=1, description="sampling steps")
    guidance: float = Field(3.0, ge=1, description="classifier-free guidance scale")


class DiffusionConfig(StrictModel):
    model: ModelSection = ModelSection()
    text: TextSection = TextSection()
    noise: NoiseSection = NoiseSection()
    loss: LossSection = LossSection()
    data: DataSection = DataSection()
    train: TrainSection
    validation: ValidationSection = ValidationSection()
    checkpoint_every: int = Field(500, gt=0, description="save a resumable checkpoint every this many steps")
    keep_checkpoints: int = Field(1, ge=1, description="newest checkpoints kept")
    output_dir: str = Field("runs/diffusion", description="run folder: checkpoints, samples, log, final pipeline")

    @field_validator("output_dir")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("output_dir must not be empty")
        return value

    @model_validator(mode="after")
    def _resolution_fits(self) -> DiffusionConfig:
        factor = 2 ** (len(self.model.block_out_channels) - 1) * self.model.pixel_unshuffle
        if self.data.resolution % factor:
            raise ValueError(f"data.resolution {self.data.resolution} must be divisible by {factor} "
                             f"({len(self.model.block_out_channels)} levels, pixel_unshuffle "
                             f"{self.model.pixel_unshuffle})")  # fmt: skip
        if self.model.autoencoder is not None and self.loss.perceptual_weight > 0:
            raise ValueError("loss.perceptual_weight must be 0 with model.autoencoder (the loss is on latents)")
        if self.model.kind == "diffusers" and self.model.pixel_unshuffle > 1:
            raise ValueError("model.pixel_unshuffle needs model.kind: efficient")
        if self.model.layout_modulation and (self.model.kind != "efficient" or not self.model.layout):
            raise ValueError("model.layout_modulation needs model.kind: efficient and model.layout: true")
        bad = [level for level in self.model.attention_levels if not 0 <= level < len(self.model.block_out_channels)]
        if bad:
            raise ValueError(f"model.attention_levels {bad} out of range 0..{len(self.model.block_out_channels) - 1}")
        levels, types = len(self.model.block_out_channels), self.model.conv_type
        if isinstance(types, list) and len(types) != levels:
            raise ValueError(f"model.conv_type lists {len(types)} types for {levels} levels (block_out_channels); "
                             "give one type or one per level")  # fmt: skip
        if isinstance(types, list) and self.model.kind == "diffusers":
            raise ValueError("model.conv_type per level needs model.kind: efficient (diffusers' blocks are plain 3x3)")
        for key in ("upsample_conv_type", "time_embedding_dim", "upsample_channels"):  # EfficientUNet's alone
            if getattr(self.model, key) != ModelSection.model_fields[key].default and self.model.kind == "diffusers":
                raise ValueError(f"model.{key} needs model.kind: efficient (diffusers' UNet has no such setting)")
        return self


def load_diffusion_config(path: str | Path) -> DiffusionConfig:
    """Read and validate a diffusion YAML config (unknown keys are errors)."""
    return load_yaml_config(DiffusionConfig, path)
