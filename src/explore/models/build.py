"""Build a from-scratch InstructBLIP from a preset, out of transformers' own classes.

Nothing here re-implements the architecture: the vision ViT, the Q-Former, the projection and the
language model are HF's ``InstructBlipForConditionalGeneration`` with a T5 or LLaMA text config.
What this module adds is a deliberate initialisation. HF's configs are made for *loading*
weights, and two of their defaults kill a model trained from scratch:

- ``InstructBlipVisionConfig.initializer_range`` defaults to 1e-10, so every ViT weight and the
  class / position embeddings start at ~0 and the image never reaches the language model
  (measured: logits moved by 3e-7 between a real and a blank image);
- ``query_tokens`` start at zeros (``InstructBlipPreTrainedModel._init_weights``), and the
  Q-Former's first LayerNorm of identical zero queries gives huge gradients and identical queries.

So the vision std is set to the preset's ``init_std`` like the rest (0.02, BERT's value; 0.1 for
the width-16 test presets), the queries are drawn from N(0, init_std²) with a seeded generator
(BLIP-2's LAVIS code uses std 0.02 for its query tokens), and T5's untied LM head is rescaled.
"""

from __future__ import annotations

import torch
from PIL import Image
from transformers import (
    BlipImageProcessorPil,
    InstructBlipConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    InstructBlipQFormerConfig,
    InstructBlipVisionConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    T5Config,
)

from explore.models.presets import Preset, get_preset
from explore.models.tokenizer import require_image_token_id, set_special_tokens

# InstructBLIP normalises pixels with OpenAI CLIP's statistics (its BlipImageProcessor config).
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


def build_config(
    preset: Preset,
    *,
    vocab_size: int,
    pad_token_id: int,
    eos_token_id: int,
    bos_token_id: int,
    image_token_id: int,
) -> InstructBlipConfig:
    """Turn a preset and the tokenizer's ids into an ``InstructBlipConfig``.

    The Q-Former and the language model share ``vocab_size`` (the LM tokenizer's length): the
    Q-Former tokenizer is the same word list without ``<image>``, so its ids are a subset.
    """
    vision = InstructBlipVisionConfig(
        hidden_size=preset.vision_hidden,
        intermediate_size=preset.vision_mlp,
        num_hidden_layers=preset.vision_layers,
        num_attention_heads=preset.vision_heads,
        image_size=preset.image_size,
        patch_size=preset.patch_size,
        attention_dropout=preset.dropout,
        initializer_range=preset.init_std,  # HF default 1e-10: a dead vision path from scratch
    )
    qformer = InstructBlipQFormerConfig(
        vocab_size=vocab_size,
        hidden_size=preset.qformer_hidden,
        num_hidden_layers=preset.qformer_layers,
        num_attention_heads=preset.qformer_heads,
        intermediate_size=preset.qformer_mlp,
        hidden_dropout_prob=preset.dropout,
        attention_probs_dropout_prob=preset.dropout,
        max_position_embeddings=preset.max_text_positions,
        initializer_range=preset.init_std,
        pad_token_id=pad_token_id,
        cross_attention_frequency=preset.cross_attention_frequency,
        encoder_hidden_size=preset.vision_hidden,
    )
    if preset.lm_family == "t5":
        text = T5Config(
            vocab_size=vocab_size,
            d_model=preset.lm_hidden,
            d_kv=preset.lm_hidden // preset.lm_heads,
            d_ff=preset.lm_mlp,
            num_layers=preset.lm_layers,
            num_decoder_layers=preset.lm_decoder_layers,
            num_heads=preset.lm_heads,
            dropout_rate=preset.dropout,
            feed_forward_proj="gated-gelu",  # Flan-T5's MLP
            tie_word_embeddings=False,  # Flan-T5 (v1.1) unties the LM head
            pad_token_id=pad_token_id,
            eos_token_id=eos_token_id,
            decoder_start_token_id=pad_token_id,  # T5 starts decoding from <pad>
        )
    else:
        text = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=preset.lm_hidden,
            intermediate_size=preset.lm_mlp,
            num_hidden_layers=preset.lm_layers,
            num_attention_heads=preset.lm_heads,
            num_key_value_heads=preset.lm_heads,
            max_position_embeddings=preset.num_query_tokens + 2 * preset.max_text_positions + 2,
            attention_dropout=preset.dropout,
            initializer_range=preset.init_std,
            tie_word_embeddings=False,
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
        )
    return InstructBlipConfig(
        vision_config=vision.to_dict(),
        qformer_config=qformer.to_dict(),
        text_config=text.to_dict(),
        num_query_tokens=preset.num_query_tokens,
        image_token_index=image_token_id,  # = config.image_token_id: where the projected queries go
        initializer_range=preset.init_std,
    )


def build_model(
    preset: str | Preset, tokenizer: PreTrainedTokenizerFast, seed: int
) -> InstructBlipForConditionalGeneration:
    """Build a randomly initialised InstructBLIP for ``preset`` and the LM ``tokenizer``.

    The same ``seed`` gives the same weights on one machine; the global torch RNG is left as it was.
    The model is returned in eval mode (call ``.train()`` to train it).
    Raises ConfigError for an unknown preset name or a tokenizer without ``<image>``.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    config = build_config(
        preset,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        image_token_id=require_image_token_id(tokenizer),
    )
    with torch.random.fork_rng(devices=[]):  # HF's _init_weights draws from the global RNG
        torch.manual_seed(seed)
        model = InstructBlipForConditionalGeneration(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # (1, num_query_tokens, qformer_hidden); HF leaves them at zeros
        queries = torch.randn(model.query_tokens.shape, generator=generator) * preset.init_std
        model.query_tokens.copy_(queries)
        if preset.lm_family == "t5":
            # HF's T5 init draws an untied lm_head from N(0, 1): on RMS-normed decoder states that gives
            # logits of std √d_model and a first loss far above ln(vocab). std d_model^-0.5 gives unit logits.
            head = model.language_model.lm_head.weight  # (vocab, d_model)
            head.copy_(torch.randn(head.shape, generator=generator) * preset.lm_hidden**-0.5)
    return model.eval()


def build_processor(
    preset: str | Preset, tokenizer: PreTrainedTokenizerFast, qformer_tokenizer: PreTrainedTokenizerFast
) -> InstructBlipProcessor:
    """Processor for ``preset``: images resized to the preset's size and CLIP-normalised, plus both tokenizers.

    The LM tokenizer pads on the left for a decoder-only LM (batched generation, as Vicuna's
    tokenizer does) and on the right for T5; the Q-Former tokenizer always pads on the right
    because its position embeddings are absolute.
    """
    preset = get_preset(preset) if isinstance(preset, str) else preset
    require_image_token_id(tokenizer)  # fail early if the LM tokenizer has no placeholder
    # BlipImageProcessor falls back to this class (with a warning) when torchvision is missing. It
    # saves as "BlipImageProcessor", so with torchvision installed a loaded processor uses the
    # torchvision backend, whose bicubic resize may differ slightly when images need resizing.
    image_processor = BlipImageProcessorPil(
        size={"height": preset.image_size, "width": preset.image_size},
        resample=Image.Resampling.BICUBIC,
        do_normalize=True,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        do_convert_rgb=True,
    )
    set_special_tokens(tokenizer, preset.lm_family)  # the processor then adds bos / eos as collate does
    tokenizer.padding_side = "left" if preset.lm_family == "llama" else "right"
    qformer_tokenizer.padding_side = "right"
    qformer_tokenizer.model_max_length = preset.max_text_positions  # the Q-Former's position embeddings
    return InstructBlipProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=preset.num_query_tokens,
    )


def count_parameters(model: InstructBlipForConditionalGeneration) -> dict[str, int]:
    """Parameter counts per component: vision, qformer (with query tokens), projection, lm, total."""

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    counts = {
        "vision": count(model.vision_model),
        "qformer": count(model.qformer) + model.query_tokens.numel(),
        "projection": count(model.language_projection),
        "lm": count(model.language_model),
    }
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts
