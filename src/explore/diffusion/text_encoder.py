"""Text encoders for the diffusion model; neither needs a download.

- :class:`WorldTextEncoder` (default): learned token embeddings and a tiny transformer over the
  world's word vocabulary, trained together with the UNet. Small-scale studies found learned
  embeddings pick up spatial relations more reliably than a frozen T5.
- :class:`T5TextEncoder`: the encoder of the embedded VLM's T5 language model, copied from it and
  kept frozen (its tokenizer is the VLM's word tokenizer).

Both map ``input_ids`` (B, L) and ``attention_mask`` (B, L) to hidden states (B, L, hidden_size).
Prompts are tokenized with a leading ``<s>`` (:func:`tokenize_prompts`), so the empty prompt used
for classifier-free guidance is one real token, never an all-masked row.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

from explore.models.loading import load_model
from explore.models.tokenizer import build_word_tokenizer
from explore.world.vocabulary import vocabulary

TEXT_ENCODERS: tuple[str, ...] = ("learned", "t5")


def world_tokenizer() -> PreTrainedTokenizerFast:
    """The world's word tokenizer (the same word ids as the embedded VLM's)."""
    return build_word_tokenizer(vocabulary())


def tokenize_prompts(tokenizer, prompts: list[str], max_length: int,
                     pad_to_max: bool = False) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """``<s>`` + the prompt's words, padded to the longest (``pad_to_max``: to ``max_length``, one shape for every
    batch, what torch.compile's static shapes need) and cut at ``max_length``.

    Returns ``input_ids`` and ``attention_mask``, both (B, L) int64.
    """
    texts = [f"{tokenizer.bos_token} {prompt}" for prompt in prompts]
    batch = tokenizer(texts, padding="max_length" if pad_to_max else "longest", truncation=True, max_length=max_length,
                      return_tensors="pt", add_special_tokens=False)  # fmt: skip
    return batch["input_ids"], batch["attention_mask"]


class WorldTextEncoder(ModelMixin, ConfigMixin):
    """Token + position embeddings and ``num_layers`` pre-norm transformer layers; output (B, L, hidden_size)."""

    @register_to_config
    def __init__(self, vocab_size: int = 180, hidden_size: int = 128, num_layers: int = 2, num_heads: int = 4,
                 max_length: int = 48, dropout: float = 0.0):  # fmt: skip
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, hidden_size)
        self.positions = nn.Embedding(max_length, hidden_size)
        layer = nn.TransformerEncoderLayer(hidden_size, num_heads, 4 * hidden_size, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)  # fmt: skip
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[1] > self.config.max_length:
            raise ValueError(f"{input_ids.shape[1]} tokens, more than max_length={self.config.max_length}")
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        h = self.tokens(input_ids) + self.positions(positions)[None]  # (B, L, D)
        h = self.layers(h, src_key_padding_mask=attention_mask == 0)
        return self.norm(h)


class T5TextEncoder(ModelMixin, ConfigMixin):
    """A T5 encoder built from ``t5_config`` (a ``T5Config`` dict); see :meth:`from_embedded_vlm`."""

    @register_to_config
    def __init__(self, t5_config: dict | None = None):
        super().__init__()
        config = T5Config(**(t5_config or {}))
        config.tie_word_embeddings = False  # one embedding table, saved once (safetensors refuses shared tensors)
        self.encoder = T5EncoderModel(config)

    @classmethod
    def from_embedded_vlm(cls, vlm=None) -> tuple[T5TextEncoder, PreTrainedTokenizerFast]:
        """Copy the T5 encoder (and tokenizer) of ``vlm`` (default: the embedded model), frozen."""
        processor = None
        if vlm is None:
            vlm, processor = load_model("embedded")
        language_model = vlm.language_model
        config = language_model.config.to_dict()
        keep = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "relative_attention_num_buckets",
                "relative_attention_max_distance", "dropout_rate", "layer_norm_epsilon", "feed_forward_proj",
                "dense_act_fn", "is_gated_act", "pad_token_id", "eos_token_id")  # fmt: skip
        encoder = cls({key: config[key] for key in keep if key in config})
        state = {f"encoder.encoder.{k}": v for k, v in language_model.get_encoder().state_dict().items()}
        state["encoder.shared.weight"] = language_model.get_input_embeddings().weight.detach().clone()
        state.setdefault("encoder.encoder.embed_tokens.weight", state["encoder.shared.weight"])
        missing, unexpected = encoder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"T5 encoder weights do not match: missing {missing[:3]}, unexpected {unexpected[:3]}")
        encoder.requires_grad_(False)
        tokenizer = processor.tokenizer if processor is not None else world_tokenizer()
        return encoder.eval(), tokenizer

    @property
    def hidden_size(self) -> int:
        return self.encoder.config.d_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def text_hidden_size(text_encoder: nn.Module) -> int:
    """Width of the encoder's hidden states (the UNet's ``cross_attention_dim``)."""
    if isinstance(text_encoder, T5TextEncoder):
        return text_encoder.hidden_size
    return text_encoder.config.hidden_size
