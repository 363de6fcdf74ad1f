"""Named size presets for from-scratch InstructBLIPs (minGPT style: ``gpt-nano``, ``gpt-mini``, ...).

A preset is data: image size, widths, depths, heads, the number of query tokens and the language
model family. :func:`explore.models.build.build_config` turns one into an HF ``InstructBlipConfig``.

- ``tiny-t5`` / ``tiny-llama``: a few tens of thousands of parameters, for tests only.
- ``shapes-small``: the embedded default (T5-backed, ~3.9 M parameters), trained on 64 px renders of
  the shapes world on 2 CPU cores. The real InstructBLIP is ViT-g/14 (≈986 M) + a BERT-base
  Q-Former (≈188 M, 32 queries) + Flan-T5-XL / Vicuna-7B (arXiv 2305.06500); this keeps its
  structure (ViT → Q-Former with instruction → projection → LM) at a size a laptop can train.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from explore.errors import ConfigError

LMFamily = Literal["t5", "llama"]


@dataclass(frozen=True)
class Preset:
    """The sizes of one InstructBLIP: vision ViT, Q-Former, projection and language model."""

    name: str  # the preset's name, e.g. "shapes-small"
    lm_family: LMFamily  # "t5" (encoder-decoder, like Flan-T5) or "llama" (decoder-only, like Vicuna)
    # vision encoder (ViT): the image is cut into (image_size / patch_size)² patches plus one class token
    image_size: int  # input images are resized to image_size × image_size pixels
    patch_size: int  # side of one square patch, in pixels
    vision_hidden: int  # ViT width
    vision_layers: int  # ViT depth
    vision_heads: int  # ViT attention heads (must divide vision_hidden)
    vision_mlp: int  # ViT MLP inner width
    # Q-Former (BERT-style, post-LN): learned queries + the instruction, cross-attending to the ViT output
    qformer_hidden: int  # Q-Former width
    qformer_layers: int  # Q-Former depth
    qformer_heads: int  # Q-Former attention heads (must divide qformer_hidden)
    qformer_mlp: int  # Q-Former MLP inner width (separate MLPs for queries and text)
    cross_attention_frequency: int  # a cross-attention to the image every n-th layer (InstructBLIP: 2)
    num_query_tokens: int  # learned queries = image placeholder tokens in the LM input (InstructBLIP: 32)
    # language model; the projection is Linear(qformer_hidden → lm_hidden)
    lm_hidden: int  # LM width (T5 d_model / LLaMA hidden_size)
    lm_layers: int  # T5 encoder layers, or LLaMA decoder layers
    lm_decoder_layers: int  # T5 decoder layers (ignored for LLaMA)
    lm_heads: int  # LM attention heads (must divide lm_hidden)
    lm_mlp: int  # LM MLP inner width (T5 d_ff, gated-GELU like Flan-T5 / LLaMA intermediate_size, SwiGLU)
    max_text_positions: int = 128  # longest instruction the Q-Former can embed (HF default 512)
    dropout: float = 0.0  # dropout everywhere; 0 because the rendered world is unlimited data
    # std of every normal init (ViT, Q-Former, queries, projection, LLaMA; T5 keeps its own scheme).
    # BERT's 0.02 suits widths >= 128; at width 16 the image's path through the post-LN Q-Former
    # (two 0.02-std matrices in the cross-attention) shrinks to ~0.2% of the queries' residual
    # (measured: 0.02 → the image moves the logits by 8e-4 relative; 0.1 → 1.5–4%).
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.lm_family not in ("t5", "llama"):
            raise ConfigError(f"preset {self.name!r}: lm_family must be 't5' or 'llama', got {self.lm_family!r}")
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"preset {self.name!r}: image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        for width, heads, part in (
            (self.vision_hidden, self.vision_heads, "vision"),
            (self.qformer_hidden, self.qformer_heads, "qformer"),
            (self.lm_hidden, self.lm_heads, "lm"),
        ):
            if width % heads:
                raise ConfigError(f"preset {self.name!r}: {part} width {width} is not divisible by {heads} heads")

    @property
    def num_patches(self) -> int:
        """Number of image patches the ViT sees (without the class token)."""
        return (self.image_size // self.patch_size) ** 2


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="tiny-t5", lm_family="t5",
            image_size=16, patch_size=8, vision_hidden=16, vision_layers=1, vision_heads=2, vision_mlp=32,
            qformer_hidden=16, qformer_layers=1, qformer_heads=2, qformer_mlp=32, cross_attention_frequency=1,
            num_query_tokens=4,
            lm_hidden=16, lm_layers=1, lm_decoder_layers=1, lm_heads=2, lm_mlp=32,
            max_text_positions=64, init_std=0.1,  # 0.02 at width 16: the image moves logits by ~1e-3 only
        ),
        Preset(
            name="tiny-llama", lm_family="llama",
            image_size=16, patch_size=8, vision_hidden=16, vision_layers=1, vision_heads=2, vision_mlp=32,
            qformer_hidden=16, qformer_layers=1, qformer_heads=2, qformer_mlp=32, cross_attention_frequency=1,
            num_query_tokens=4,
            lm_hidden=16, lm_layers=2, lm_decoder_layers=0, lm_heads=2, lm_mlp=32,
            max_text_positions=64, init_std=0.1,  # 0.02 at width 16: the image moves logits by ~1e-3 only
        ),
        # ~3.9 M parameters (vision 0.97 M, Q-Former 1.29 M, T5 1.57 M). A 2.4 M prototype of this
        # shape learned the shapes world on 2 CPU cores (REFERENCES.md: constant lr 1e-3, batch 64,
        # left the answer prior after ~1,000 steps).
        Preset(
            name="shapes-small", lm_family="t5",
            image_size=64, patch_size=8, vision_hidden=160, vision_layers=3, vision_heads=4, vision_mlp=640,
            qformer_hidden=160, qformer_layers=2, qformer_heads=4, qformer_mlp=640, cross_attention_frequency=1,
            num_query_tokens=16,
            lm_hidden=160, lm_layers=2, lm_decoder_layers=2, lm_heads=4, lm_mlp=480,
            max_text_positions=128,
        ),
    )
}  # fmt: skip

# The same model reading VL-RewardBench's official judge prompt (about 300 tokens with its answers): the
# Q-Former's text positions go from 128 to 512, as in BERT, so a plain InstructBlipProcessor call (which
# does not truncate) never overflows them.
PRESETS["shapes-small-judge"] = replace(PRESETS["shapes-small"], name="shapes-small-judge", max_text_positions=512)
# The judge with a deeper T5 encoder (4 layers instead of 2; +0.5 M parameters): can the LM find the one object in
# which two long descriptions differ with more layers to compare them (configs/pretrain/shapes-judge-37.yaml)? Grown
# from a shapes-small-judge folder with model.init_from: layers 0-1 copied, layers 2-3 fresh.
PRESETS["shapes-small-judge-lm4"] = replace(PRESETS["shapes-small-judge"], name="shapes-small-judge-lm4", lm_layers=4)


def list_presets() -> list[str]:
    """Names of all presets, sorted."""
    return sorted(PRESETS)


def get_preset(name: str) -> Preset:
    """Return the preset called ``name``; raise :class:`ConfigError` listing the presets if unknown."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; expected one of: {', '.join(list_presets())}")
    return PRESETS[name]
