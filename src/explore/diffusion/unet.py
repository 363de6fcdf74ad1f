"""An efficient text-conditional UNet for small images, as a diffusers model.

Layout (default, 32 px): ``conv_in`` → one level per entry of ``block_out_channels`` (residual blocks,
then a 2× downsample except at the last level) → a middle block (residual, attention, residual) →
the mirrored up path with skip connections → ``conv_out``. A level listed in ``attention_levels``
follows each residual block with a transformer block (self-attention over the pixels, cross-attention
to the text, feed-forward), so text conditioning acts at the low resolutions where it is cheap.

The residual blocks use ``conv_type``: ``"plain"`` (two 3×3 convolutions, as DDPM) or ``"separable"``
(each 3×3 convolution factored into a depthwise 3×3 and a pointwise 1×1, as MobileNet), which has
about 1/8 of the multiply-adds at these widths; one type for every level or a list, one per level (a
resampling convolution takes the type of the finer level it joins: the downsampler's input, the upsampler's
output; ``upsample_conv_type`` gives every upsampler one type instead: the upsampler into a plain level
convolves the coarser level's wider channels at the finer resolution, the costliest convolution of such a
UNet; with ``upsample_channels="finer"`` it writes the finer level's width instead of keeping the coarser one
(diffusers' ``Upsample2D`` keeps it), so that level's first up block reads finer + skip channels). The timestep
enters every residual block as a scale and shift of its second normalisation (FiLM); the mean-pooled text is added
to the timestep embedding, so global facts (how many objects) reach every block, not only the attention levels.

Grounding (optional): with ``layout_channels`` > 0 the model also takes a per-cell layout map
(B, layout_channels, GRID, GRID) (see :mod:`explore.world.layout`), expands each cell to the pixels it
covers and concatenates it to the input, so every pixel is told what its cell should hold (local
conditioning, as LLM-grounded diffusion and GLIGEN's findings suggest). A missing map is all zeros,
the value training uses for a dropped map (classifier-free guidance). With ``layout_modulation`` the map
also scales and shifts every residual block's second normalisation at that block's resolution (SPADE,
Park et al. 2019): the separable blocks need not carry what the input said through the whole network.

Space-to-depth (optional): with ``pixel_unshuffle`` = 2 a 64 px image enters as (12, 32, 32)
(``F.pixel_unshuffle``) and leaves through ``F.pixel_shuffle``, so a 64 px model costs about what a
32 px one does.

It follows the calling convention of diffusers' ``UNet2DConditionModel`` (``sample``, ``timestep``,
``encoder_hidden_states``, ``encoder_attention_mask``), so the pipeline and the training loop
take either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import get_timestep_embedding
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

CONV_TYPES: tuple[str, ...] = ("plain", "separable")
UPSAMPLE_CHANNELS: tuple[str, ...] = ("same", "finer")


def conv3x3(in_channels: int, out_channels: int, conv_type: str, stride: int = 1) -> nn.Module:
    """A 3×3 convolution: full (``plain``) or depthwise 3×3 followed by pointwise 1×1 (``separable``)."""
    if conv_type == "plain":
        return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)
    if conv_type == "separable":
        return nn.Sequential(
            nn.Conv2d(in_channels, in_channels, 3, stride=stride, padding=1, groups=in_channels),
            nn.Conv2d(in_channels, out_channels, 1),
        )
    raise ValueError(f"unknown conv_type {conv_type!r}; expected one of {CONV_TYPES}")


class ResBlock(nn.Module):
    """GroupNorm → SiLU → conv → FiLM(time [+ layout]) → GroupNorm → SiLU → dropout → conv, plus a skip.

    With ``layout_channels`` > 0 the second normalisation is also scaled and shifted per pixel by a 1×1
    convolution of the layout map at the block's resolution (SPADE, Park et al. 2019), zero-initialised so
    that training starts from the unmodulated block."""

    def __init__(self, in_channels: int, out_channels: int, temb_dim: int, conv_type: str, groups: int, dropout: float,
                 layout_channels: int = 0):  # fmt: skip
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = conv3x3(in_channels, out_channels, conv_type)
        self.time = nn.Linear(temb_dim, 2 * out_channels)  # scale and shift
        self.layout = nn.Conv2d(layout_channels, 2 * out_channels, 1) if layout_channels else None
        if self.layout is not None:
            nn.init.zeros_(self.layout.weight)
            nn.init.zeros_(self.layout.bias)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = conv3x3(out_channels, out_channels, conv_type)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor, layout: torch.Tensor | None = None) -> torch.Tensor:
        """``layout``: (B, layout_channels, H, W), the map spread over ``x``'s pixels (only with layout_channels)."""
        h = self.conv1(F.silu(self.norm1(x)))  # (B, C_out, H, W)
        scale, shift = self.time(F.silu(temb))[:, :, None, None].chunk(2, dim=1)
        if self.layout is not None:
            local_scale, local_shift = self.layout(layout).chunk(2, dim=1)  # (B, C_out, H, W) each
            scale, shift = scale + local_scale, shift + local_shift
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head attention of ``x`` (B, N, C) to ``context`` (B, L, D), with a key padding mask."""

    def __init__(self, channels: int, context_dim: int, heads: int):
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by attention heads ({heads})")
        self.heads = heads
        self.q = nn.Linear(channels, channels, bias=False)
        self.kv = nn.Linear(context_dim, 2 * channels, bias=False)
        self.out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)  # (B, h, N, c/h)
        k, v = self.kv(context).view(b, context.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # (B, h, L, c/h)
        attn_mask = None if mask is None else mask[:, None, None, :].bool()  # (B, 1, 1, L): True = attend
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(out.transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    """Self-attention over the pixels, cross-attention to the text, feed-forward; pre-norm residuals."""

    def __init__(self, channels: int, context_dim: int, heads: int, groups: int):
        super().__init__()
        self.norm_in = nn.GroupNorm(groups, channels)
        self.norm1 = nn.LayerNorm(channels)
        self.self_attn = Attention(channels, channels, heads)
        self.norm2 = nn.LayerNorm(channels)
        self.cross_attn = Attention(channels, context_dim, heads)
        self.norm3 = nn.LayerNorm(channels)
        self.ff = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm_in(x).flatten(2).transpose(1, 2)  # (B, H*W, C)
        normed = self.norm1(tokens)
        tokens = tokens + self.self_attn(normed, normed)
        tokens = tokens + self.cross_attn(self.norm2(tokens), context, mask)
        tokens = tokens + self.ff(self.norm3(tokens))
        return x + tokens.transpose(1, 2).reshape(b, c, h, w)


class EfficientUNet(ModelMixin, ConfigMixin):
    """Text-conditional UNet with plain or depthwise-separable residual blocks (see the module docstring).

    Input ``sample`` (B, in_channels, H, W) with H and W divisible by ``2 ** (len(block_out_channels) - 1)``;
    ``encoder_hidden_states`` (B, L, cross_attention_dim); ``encoder_attention_mask`` (B, L), 1 = keep.
    Output: ``UNet2DOutput(sample=(B, out_channels, H, W))`` (the predicted noise).
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 32,
        in_channels: int = 3,
        out_channels: int = 3,
        block_out_channels: tuple[int, ...] = (64, 128, 192),
        layers_per_block: int = 1,
        attention_levels: tuple[int, ...] = (1, 2),
        conv_type: str | tuple[str, ...] = "separable",
        cross_attention_dim: int = 128,
        attention_heads: int = 4,
        norm_num_groups: int = 16,
        dropout: float = 0.0,
        layout_channels: int = 0,
        pixel_unshuffle: int = 1,
        layout_modulation: bool = False,
        upsample_conv_type: str | None = None,
        time_embedding_dim: int | None = None,
        upsample_channels: str = "same",
    ):
        """``upsample_conv_type``: every upsampler's convolution type (None: the finer level's, from ``conv_type``);
        ``time_embedding_dim``: the timestep embedding's width (None: 4 × ``block_out_channels[0]``, as diffusers'
        ``UNet2DConditionModel``); ``upsample_channels``: ``"same"`` (an upsampler keeps the coarser level's
        channels) or ``"finer"`` (it writes the finer level's)."""
        super().__init__()
        if pixel_unshuffle < 1 or sample_size % pixel_unshuffle:
            raise ValueError(f"pixel_unshuffle must be >= 1 and divide sample_size {sample_size}, "
                             f"got {pixel_unshuffle}")  # fmt: skip
        conv_types = [conv_type] * len(block_out_channels) if isinstance(conv_type, str) else list(conv_type)
        if len(conv_types) != len(block_out_channels):
            raise ValueError(f"conv_type lists {len(conv_types)} types for {len(block_out_channels)} levels; "
                             "give one type or one per level")  # fmt: skip
        unknown = [kind for kind in [*conv_types, upsample_conv_type] if kind is not None and kind not in CONV_TYPES]
        if unknown:
            raise ValueError(f"unknown conv_type {unknown[0]!r}; expected one of {CONV_TYPES}")
        if upsample_channels not in UPSAMPLE_CHANNELS:
            raise ValueError(f"unknown upsample_channels {upsample_channels!r}; expected one of {UPSAMPLE_CHANNELS}")
        if time_embedding_dim is not None and time_embedding_dim < 1:
            raise ValueError(f"time_embedding_dim must be >= 1, got {time_embedding_dim}")
        if layout_modulation and not layout_channels:
            raise ValueError("layout_modulation needs a layout input (layout_channels > 0)")
        bad_levels = [level for level in attention_levels if not 0 <= level < len(block_out_channels)]
        if bad_levels:
            raise ValueError(f"attention_levels {bad_levels} out of range for {len(block_out_channels)} levels")
        channels = list(block_out_channels)
        base = channels[0]
        temb_dim = time_embedding_dim or 4 * base
        self.time_mlp = nn.Sequential(nn.Linear(base, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.text_pool = nn.Linear(cross_attention_dim, temb_dim)
        factor = pixel_unshuffle**2  # space-to-depth: channels per input pixel
        self.conv_in = nn.Conv2d(in_channels * factor + layout_channels, base, 3, padding=1)

        def res(cin: int, cout: int, level: int) -> ResBlock:
            modulated = layout_channels if layout_modulation else 0
            return ResBlock(cin, cout, temb_dim, conv_types[level], norm_num_groups, dropout, modulated)

        def attn(c: int) -> TransformerBlock:
            return TransformerBlock(c, cross_attention_dim, attention_heads, norm_num_groups)

        # Down path: remember the channel count of every skip connection.
        self.down_res, self.down_attn, self.downsamplers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        skips, current = [base], base
        for level, width in enumerate(channels):
            for _ in range(layers_per_block):
                self.down_res.append(res(current, width, level))
                self.down_attn.append(attn(width) if level in attention_levels else nn.Identity())
                current = width
                skips.append(current)
            last = level == len(channels) - 1
            self.downsamplers.append(nn.Identity() if last else conv3x3(current, current, conv_types[level], stride=2))
            if not last:
                skips.append(current)
        deepest = len(channels) - 1
        self.mid_res1, self.mid_attn = res(current, current, deepest), attn(current)
        self.mid_res2 = res(current, current, deepest)
        # Up path: layers_per_block + 1 blocks per level, each eating one skip.
        self.up_res, self.up_attn, self.upsamplers = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(channels))):
            width = channels[level]
            for _ in range(layers_per_block + 1):
                self.up_res.append(res(current + skips.pop(), width, level))
                self.up_attn.append(attn(width) if level in attention_levels else nn.Identity())
                current = width
            # the upsampler's convolution runs after the 2x upsampling, at the finer level's resolution: its type
            # unless upsample_conv_type says otherwise
            if level > 0:
                written = channels[level - 1] if upsample_channels == "finer" else current
                self.upsamplers.append(conv3x3(current, written, upsample_conv_type or conv_types[level - 1]))
                current = written
            else:
                self.upsamplers.append(nn.Identity())
        self.norm_out = nn.GroupNorm(norm_num_groups, current)
        self.conv_out = nn.Conv2d(current, out_channels * factor, 3, padding=1)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        layout: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet2DOutput | tuple[torch.Tensor]:
        """``layout``: (B, layout_channels, G, G) per-cell map, None = all zeros (no layout)."""
        levels = len(self.config.block_out_channels)
        unshuffle = self.config.pixel_unshuffle
        divisor = 2 ** (levels - 1) * unshuffle
        if sample.shape[-1] % divisor or sample.shape[-2] % divisor:
            raise ValueError(f"sample side {tuple(sample.shape[-2:])} must be divisible by {divisor}")
        if layout is not None and not self.config.layout_channels:
            raise ValueError("this UNet has no layout input (layout_channels = 0); pass layout=None")
        b = sample.shape[0]
        timesteps = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(b)
        temb = get_timestep_embedding(timesteps, self.config.block_out_channels[0], flip_sin_to_cos=True)
        temb = self.time_mlp(temb.to(sample.dtype))  # (B, 4*C0)
        context = encoder_hidden_states  # (B, L, D)
        mask = encoder_attention_mask
        if mask is None:
            pooled = context.mean(dim=1)
        else:
            weights = mask.to(context.dtype)[:, :, None]
            pooled = (context * weights).sum(1) / weights.sum(1).clamp(min=1)
        temb = temb + self.text_pool(pooled)

        x = F.pixel_unshuffle(sample, unshuffle) if unshuffle > 1 else sample  # (B, C·u², H/u, W/u)
        if self.config.layout_channels:
            x = torch.cat([x, expand_layout(layout, x, self.config.layout_channels)], dim=1)
        maps: dict[int, torch.Tensor] = {}  # side -> the layout map at that resolution (layout modulation)

        def block(res: ResBlock, h: torch.Tensor) -> torch.Tensor:
            if not self.config.layout_modulation:
                return res(h, temb)
            side = h.shape[-1]
            if side not in maps:
                maps[side] = expand_layout(layout, h, self.config.layout_channels)
            return res(h, temb, maps[side])

        h = self.conv_in(x)
        skips = [h]
        blocks = iter(zip(self.down_res, self.down_attn))
        for level, down in enumerate(self.downsamplers):
            for _ in range(self.config.layers_per_block):
                res, attn = next(blocks)
                h = block(res, h)
                h = attn(h, context, mask) if isinstance(attn, TransformerBlock) else h
                skips.append(h)
            if level < levels - 1:
                h = down(h)
                skips.append(h)
        h = block(self.mid_res2, self.mid_attn(block(self.mid_res1, h), context, mask))
        blocks = iter(zip(self.up_res, self.up_attn))
        for level, up in zip(reversed(range(levels)), self.upsamplers):
            for _ in range(self.config.layers_per_block + 1):
                res, attn = next(blocks)
                h = block(res, torch.cat([h, skips.pop()], dim=1))
                h = attn(h, context, mask) if isinstance(attn, TransformerBlock) else h
            if level > 0:
                h = up(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        out = self.conv_out(F.silu(self.norm_out(h)))
        if unshuffle > 1:
            out = F.pixel_shuffle(out, unshuffle)  # (B, C, H, W)
        if not return_dict:
            return (out,)
        return UNet2DOutput(sample=out)


def expand_layout(layout: torch.Tensor | None, x: torch.Tensor, channels: int) -> torch.Tensor:
    """The (B, C, G, G) cell map spread over ``x``'s (H, W) pixels: every pixel gets its cell's values
    (None: all zeros, the dropped map)."""
    b, _, h, w = x.shape
    if layout is None:
        return x.new_zeros(b, channels, h, w)
    if layout.ndim != 4 or layout.shape[:2] != (b, channels):
        raise ValueError(f"layout must be (B={b}, {channels}, G, G), got {tuple(layout.shape)}")
    grid_h, grid_w = layout.shape[-2:]
    rows = ((torch.arange(h, device=x.device) + 0.5) * grid_h / h).long()  # cell row of each pixel row
    cols = ((torch.arange(w, device=x.device) + 0.5) * grid_w / w).long()
    return layout.to(x.dtype)[:, :, rows][:, :, :, cols]  # (B, C, H, W)


def layout_channels(unet) -> int:
    """How many layout-map channels ``unet`` reads: EfficientUNet's ``config.layout_channels``; for diffusers'
    ``UNet2DConditionModel`` the extra input channels (``in_channels - out_channels``): the map is concatenated
    to the sample, the way diffusers' depth-to-image and inpainting UNets take their extra inputs."""
    config = unet.config
    if hasattr(config, "layout_channels"):
        return int(config.layout_channels)
    return int(config.in_channels - config.out_channels)


def predict_noise(unet, sample, timestep, context, mask=None, layout: torch.Tensor | None = None) -> torch.Tensor:
    """``unet``'s noise prediction for ``sample``, with the layout map for a grounded UNet of either kind
    (EfficientUNet takes it as an argument; a diffusers UNet gets it concatenated to the sample).

    Raises:
        ValueError: a layout for a UNet without layout input.
    """
    channels = layout_channels(unet)
    if layout is not None and not channels:
        raise ValueError("this UNet has no layout input (layout_channels = 0); pass layout=None")
    if isinstance(unet, EfficientUNet):
        extra = {"layout": layout} if layout is not None else {}
        return unet(sample, timestep, encoder_hidden_states=context, encoder_attention_mask=mask, **extra).sample
    if channels:
        sample = torch.cat([sample, expand_layout(layout, sample, channels)], dim=1)
    return unet(sample, timestep, encoder_hidden_states=context, encoder_attention_mask=mask).sample
