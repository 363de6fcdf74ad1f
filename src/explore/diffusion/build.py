"""Build the pipeline's components from a :class:`~explore.diffusion.config.DiffusionConfig`.

``model.kind: diffusers`` builds the baseline: diffusers' own ``UNet2DConditionModel`` with the same
widths, levels and text width, cross-attention at the same levels (``CrossAttnDownBlock2D``); grounded,
it reads the layout map as extra input channels.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from explore.diffusion.autoencoder import EMBEDDED, load_autoencoder, resolve_autoencoder
from explore.diffusion.config import DiffusionConfig
from explore.diffusion.pipeline import WorldDiffusionPipeline, load_pipeline, packaged_folder
from explore.diffusion.text_encoder import T5TextEncoder, WorldTextEncoder, text_hidden_size, world_tokenizer
from explore.diffusion.unet import EfficientUNet
from explore.errors import ExploreError
from explore.runs import model_fingerprint
from explore.world.layout import LAYOUT_CHANNELS


def build_noise_scheduler(config: DiffusionConfig) -> DDPMScheduler:
    """The training noise schedule (DDPM, ``noise.prediction_type``); samplers are made from its config.
    Pixel space clips the predicted clean image to [-1, 1]; latents are not bounded, so latent models do not."""
    return DDPMScheduler(num_train_timesteps=config.noise.num_train_timesteps, beta_schedule=config.noise.beta_schedule,
                         prediction_type=config.noise.prediction_type,
                         clip_sample=config.model.autoencoder is None)  # fmt: skip


def sample_geometry(config: DiffusionConfig, vae: AutoencoderKL | None) -> tuple[int, int]:
    """(side, channels) of what the UNet denoises: the image, or the autoencoder's latent of it.

    Raises:
        ExploreError: a latent side the UNet's levels cannot halve evenly.
    """
    if vae is None:
        return config.data.resolution, 3
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    side = config.data.resolution // factor
    divisor = 2 ** (len(config.model.block_out_channels) - 1) * config.model.pixel_unshuffle
    if config.data.resolution % factor or side % divisor:
        raise ExploreError(f"model.autoencoder {config.model.autoencoder} makes {side} x {side} latents of "
                           f"{config.data.resolution} px images, which {len(config.model.block_out_channels)} UNet "
                           f"levels cannot halve evenly (need a multiple of {divisor}); use fewer levels")  # fmt: skip
    return side, vae.config.latent_channels


def build_unet(config: DiffusionConfig, cross_attention_dim: int, vae: AutoencoderKL | None = None):
    """An untrained UNet of ``config.model`` (seeded by ``model.seed``), for images or ``vae``'s latents."""
    m = config.model
    side, channels = sample_geometry(config, vae)
    layout = (LAYOUT_CHANNELS + m.layout_given_channel) if m.layout else 0
    torch.manual_seed(m.seed)
    if m.kind == "efficient":
        return EfficientUNet(
            sample_size=side,
            in_channels=channels,
            out_channels=channels,
            block_out_channels=tuple(m.block_out_channels),
            layers_per_block=m.layers_per_block,
            attention_levels=tuple(m.attention_levels),
            conv_type=m.conv_type,
            cross_attention_dim=cross_attention_dim,
            attention_heads=m.attention_heads,
            norm_num_groups=m.norm_num_groups,
            dropout=m.dropout,
            layout_channels=layout,
            pixel_unshuffle=m.pixel_unshuffle,
            layout_modulation=m.layout_modulation,
            upsample_conv_type=m.upsample_conv_type,
            time_embedding_dim=m.time_embedding_dim,
            upsample_channels=m.upsample_channels,
        )
    # grounded: the layout map is concatenated to the sample (explore.diffusion.unet.predict_noise), so the
    # UNet takes the extra channels as input, like diffusers' depth-to-image and inpainting UNets
    levels = range(len(m.block_out_channels))
    down = tuple("CrossAttnDownBlock2D" if i in m.attention_levels else "DownBlock2D" for i in levels)
    up = tuple("CrossAttnUpBlock2D" if i in m.attention_levels else "UpBlock2D" for i in reversed(levels))
    return UNet2DConditionModel(
        sample_size=side, in_channels=channels + layout, out_channels=channels, down_block_types=down, up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn", block_out_channels=tuple(m.block_out_channels),
        layers_per_block=m.layers_per_block, cross_attention_dim=cross_attention_dim,
        attention_head_dim=m.block_out_channels[-1] // m.attention_heads, norm_num_groups=m.norm_num_groups,
        dropout=m.dropout,
    )  # fmt: skip


def build_text_encoder(config: DiffusionConfig):
    """The text encoder and its tokenizer (learned: fresh and trainable; t5: the VLM's, frozen)."""
    if config.text.encoder == "t5":
        return T5TextEncoder.from_embedded_vlm()
    tokenizer = world_tokenizer()
    torch.manual_seed(config.model.seed + 1)
    t = config.text
    encoder = WorldTextEncoder(vocab_size=len(tokenizer), hidden_size=t.hidden_size, num_layers=t.num_layers,
                               num_heads=t.num_heads, max_length=t.max_length)  # fmt: skip
    return encoder, tokenizer


def build_pipeline(config: DiffusionConfig) -> WorldDiffusionPipeline:
    """An untrained pipeline (in eval mode): UNet, text encoder, tokenizer, the DDPM training scheduler and,
    for latent diffusion, the trained autoencoder ``model.autoencoder`` (frozen)."""
    text_encoder, tokenizer = build_text_encoder(config)
    ae = config.model.autoencoder
    vae = load_autoencoder(resolve_autoencoder(ae)) if ae is not None else None
    unet = build_unet(config, text_hidden_size(text_encoder), vae)
    pipe = WorldDiffusionPipeline(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer,
                                  scheduler=build_noise_scheduler(config), vae=vae,
                                  guidance_scale=1.0 if config.loss.model_guidance > 0 else None)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    unet.eval()  # like from_pretrained; training switches to train mode itself
    text_encoder.eval()
    return pipe


def warm_start(pipe: WorldDiffusionPipeline, source: str) -> None:
    """Copy the UNet and text encoder weights of pipeline folder ``source`` ('embedded': the packaged one) into
    ``pipe`` (``model.init_from``): how a run continues from a shipped model on a machine without its checkpoints.
    diffusers has no partial warm start for a custom pipeline; this is a strict ``load_state_dict`` with checks
    that name what differs.

    Raises:
        ExploreError: no such pipeline, another architecture, tokenizer or autoencoder.
    """
    folder = packaged_folder() if source == EMBEDDED else Path(source)
    if not (folder / "model_index.json").is_file():
        raise ExploreError(f"model.init_from {source}: no such pipeline folder (no model_index.json); point it at "
                           "a pipeline written by training or `explore diffusion export`, or 'embedded'")  # fmt: skip
    loaded = load_pipeline(folder)
    if loaded.tokenizer.get_vocab() != pipe.tokenizer.get_vocab():
        raise ExploreError(f"model.init_from {source}: its tokenizer gives other ids to the prompt's words; "
                           "warm-start from a pipeline with the same text encoder")  # fmt: skip
    if (loaded.vae is None) != (pipe.vae is None) or (
        pipe.vae is not None and model_fingerprint(loaded.vae) != model_fingerprint(pipe.vae)
    ):
        raise ExploreError(f"model.init_from {source}: trained on another autoencoder than model.autoencoder "
                           f"(or none); set model.autoencoder to {folder}/vae")  # fmt: skip
    for name in ("unet", "text_encoder"):
        target, weights = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        for key, tensor in target.items():
            if key not in weights or weights[key].shape != tensor.shape:
                found = "missing" if key not in weights else f"shape {tuple(weights[key].shape)}"
                raise ExploreError(f"model.init_from {source}: {name} tensor {key!r} is {found}, the config "
                                   f"builds {tuple(tensor.shape)}; use the architecture it was trained with")  # fmt: skip
        extra = sorted(set(weights) - set(target))
        if extra:
            raise ExploreError(f"model.init_from {source}: {name} has tensors the config does not build "
                               f"({extra[0]!r}, ...); use the architecture it was trained with")  # fmt: skip
        getattr(pipe, name).load_state_dict({k: v.to(target[k].dtype) for k, v in weights.items()}, strict=True)
