"""FastV inside the language model (Chen et al., arXiv 2403.06764): after LM layer k, drop the image tokens
that received the least attention at layer k, so every later layer (and, for T5, the decoder's
cross-attention) reads fewer tokens.

The setting lives in the model's config as ``explore_fastv = {"ratio": r, "layer": k}`` (``ratio``: the
fraction of image tokens dropped; ``layer``: the 0-based LM layer after which they go) and is saved with
it. transformers has no FastV, so a plain ``from_pretrained`` + ``generate`` **ignores** the field and
runs the full model: the pruning is done by forward hooks that :func:`install_fastv` registers and that
:func:`explore.models.loading.load_model` re-installs on every model whose config holds the field.

Where the tokens are dropped:

- T5 (the image tokens are encoder inputs): after encoder block k, the hidden states, the relative-position
  bias and the attention mask of the later encoder blocks are gathered to the kept tokens, and so is the
  encoder mask the decoder cross-attends with; the decoder's logits keep their shape.
- LLaMA (decoder-only): after decoder layer k during the prefill, the hidden states, rotary embeddings,
  position ids and mask rows / columns of the later layers are gathered (the kept tokens keep their
  original positions); their KV cache holds only the kept tokens, and every decoding step's mask is
  gathered to match. The prefill's logits then cover only the kept positions, so a LLaMA forward with
  ``labels`` (training, teacher forcing) is refused: apply FastV after fine-tuning.

Scores: the attention probabilities of layer k are recomputed in a hook from the query / key projections that
layer computed (hooks keep them; SDPA does not return the probabilities), averaged over heads and (non-padding) query positions: the attention each
image token receives, as FastV ranks them. Each row of a batch keeps its own top tokens, the same count in every row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import InstructBlipForConditionalGeneration
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from explore.errors import ExploreError

CONFIG_FIELD = "explore_fastv"


@dataclass(frozen=True)
class FastVSettings:
    """What FastV drops: ``ratio`` of the image tokens, after LM layer ``layer`` (0-based)."""

    ratio: float  # fraction of the image tokens dropped, in [0, 1)
    layer: int  # the LM layer (T5: encoder block; LLaMA: decoder layer) whose attention ranks them

    def kept(self, n_image: int) -> int:
        """How many of ``n_image`` image tokens stay (at least one)."""
        return max(1, n_image - math.floor(n_image * self.ratio))


def _blocks(model: InstructBlipForConditionalGeneration) -> nn.ModuleList:
    lm = model.language_model
    return lm.model.layers if model.config.use_decoder_only_language_model else lm.encoder.block


def check_settings(model: InstructBlipForConditionalGeneration, settings: FastVSettings) -> None:
    """Raise ExploreError unless ``settings`` fit ``model`` (ratio in [0, 1), a layer with layers after it for
    LLaMA; any encoder block for T5, whose decoder reads the encoder output)."""
    if not 0 <= settings.ratio < 1:
        raise ExploreError(f"FastV ratio {settings.ratio} must be in [0, 1): the fraction of image tokens dropped")
    n = len(_blocks(model))
    decoder_only = bool(model.config.use_decoder_only_language_model)
    last = n - 2 if decoder_only else n - 1
    if not 0 <= settings.layer <= last:
        where = "decoder layers" if decoder_only else "encoder blocks"
        raise ExploreError(f"FastV layer {settings.layer}: the LM has {n} {where}; choose 0 <= layer <= {last}"
                           + (" (tokens dropped after the last layer would save nothing)" if decoder_only else ""))  # fmt: skip


def fastv_settings(model: InstructBlipForConditionalGeneration) -> FastVSettings | None:
    """The FastV settings stored in ``model.config`` (None: no FastV)."""
    stored = getattr(model.config, CONFIG_FIELD, None)
    if stored is None:
        return None
    if not isinstance(stored, dict) or set(stored) != {"ratio", "layer"}:
        raise ExploreError(f"config field {CONFIG_FIELD} must be {{'ratio': float, 'layer': int}}, got {stored!r}")
    return FastVSettings(ratio=float(stored["ratio"]), layer=int(stored["layer"]))


class _FastV:
    """The hooks of one model and the state they share between them within one forward / generate call.

    Hooks are bound methods of this object, so ``copy.deepcopy(model)`` copies it with the model (and the
    copy's hooks share the copy's state, not the original's).
    """

    def __init__(self, settings: FastVSettings, image_token_id: int, decoder_only: bool):
        self.settings = settings
        self.image_token_id = image_token_id
        self.decoder_only = decoder_only
        self.image_mask: Tensor | None = None  # (B, T) True at image tokens, from the last LM input with images
        self.valid: Tensor | None = None  # (B, T) False at padding, from the stack's 2-D attention mask (None: none)
        self.keep: Tensor | None = None  # (B, T') positions kept after layer k, ascending, for that input
        self.projected: dict[str, Tensor] = {}  # layer k's query / key projections of the current prefill
        self.handles: list = []

    # -- where the LM input is embedded: remember where the image tokens are -------------------------------
    def on_embed(self, module, args, output):
        input_ids = args[0]
        if (input_ids == self.image_token_id).any():
            self.image_mask = input_ids == self.image_token_id
            self.keep = None

    def before_stack(self, module, args, kwargs):
        """The T5 encoder / LLaMA decoder stack: remember which tokens are padding (not counted as queries)."""
        mask = kwargs.get("attention_mask")
        self.valid = mask.bool() if mask is not None and mask.dim() == 2 else None
        return None

    def _full_length(self) -> int:
        return -1 if self.image_mask is None else self.image_mask.shape[1]

    # -- layer k's attention: rank the image tokens --------------------------------------------------------
    def on_query(self, module, args, output):
        self.projected["query"] = output.detach()  # kept, not recomputed: the ranking costs only the scores

    def on_key(self, module, args, output):
        self.projected["key"] = output.detach()

    def on_attention(self, module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] != self._full_length():
            return  # a decoding step (or a call without image tokens): nothing to rank
        query, key = self.projected.pop("query"), self.projected.pop("key")  # (B, T, H · d), this call's
        with torch.no_grad():
            if self.decoder_only:
                probs = self._llama_probs(module, query, key, kwargs)
            else:
                probs = self._t5_probs(module, query, key, kwargs, output)
            probs = probs.mean(dim=1)  # (B, Tq, Tk), mean over heads
            valid = self.valid if self.valid is not None and self.valid.shape == probs.shape[:2] else None
            if valid is None:
                received = probs.mean(dim=1)  # (B, T): attention each token receives, mean over queries
            else:  # padding rows are no queries
                received = (probs * valid[:, :, None]).sum(dim=1) / valid.sum(dim=1, keepdim=True).clamp(min=1)
        image = self.image_mask
        n_image = int(image[0].sum())
        if not (image.sum(dim=1) == n_image).all():
            raise ExploreError("FastV: every row of a batch must hold the same number of image tokens")
        n_keep = self.settings.kept(n_image)
        scores = received.masked_fill(~image, float("-inf"))
        top = torch.topk(scores, n_keep, dim=1).indices  # (B, n_keep) image positions kept
        keep_mask = ~image
        keep_mask = keep_mask.scatter(1, top, True)
        positions = torch.arange(image.shape[1], device=image.device).expand_as(image)
        self.keep = positions[keep_mask].view(image.shape[0], -1)  # (B, T'), ascending per row

    @staticmethod
    def _t5_probs(module, query: Tensor, key: Tensor, kwargs: dict, output) -> Tensor:
        batch, length, _ = query.shape
        query = query.view(batch, length, -1, module.key_value_proj_dim).transpose(1, 2)  # (B, H, T, d)
        key = key.view(batch, length, -1, module.key_value_proj_dim).transpose(1, 2)
        scores = query @ key.transpose(-1, -2) * module.scaling + output[1]  # + relative-position bias (1|B, H, T, T)
        return _softmax(scores, kwargs.get("mask"))

    @staticmethod
    def _llama_probs(module, query: Tensor, key: Tensor, kwargs: dict) -> Tensor:
        batch, length, _ = query.shape
        query = query.view(batch, length, -1, module.head_dim).transpose(1, 2)  # (B, H, T, d)
        key = key.view(batch, length, -1, module.head_dim).transpose(1, 2)  # (B, Hkv, T, d)
        cos, sin = kwargs["position_embeddings"]
        query, key = apply_rotary_pos_emb(query, key, cos, sin)
        key = key.repeat_interleave(query.shape[1] // key.shape[1], dim=1)
        scores = query @ key.transpose(-1, -2) * module.scaling
        causal = torch.ones(length, length, dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~causal, torch.finfo(scores.dtype).min)
        return _softmax(scores, kwargs.get("attention_mask"))

    # -- after layer k: drop the tokens ---------------------------------------------------------------------
    def on_block_output(self, module, args, kwargs, output):
        if self.keep is None:
            return output
        if self.decoder_only:
            if output.shape[1] != self._full_length():
                return output  # a decoding step
            return _gather_tokens(output, self.keep)
        hidden, *rest = output  # T5Block: (hidden, self-attention bias, cross-attention bias)
        rest[0] = _gather_square(rest[0], self.keep)  # the stack passes this bias on to the later blocks
        return (_gather_tokens(hidden, self.keep), *rest)

    def before_later_block(self, module, args, kwargs):
        """Gather the stack's full-length mask (and LLaMA's rotary embeddings / positions) to the kept tokens."""
        if self.keep is None:
            return None
        if self.decoder_only:
            hidden = args[0] if args else kwargs["hidden_states"]
            prefill = hidden.shape[1] == self.keep.shape[1]
            mask = kwargs.get("attention_mask")
            if mask is not None:
                mask = _gather_square(mask, self.keep) if prefill else _gather_keys(mask, self.keep, self._full_length())
                kwargs["attention_mask"] = mask
            if prefill:
                cos, sin = kwargs["position_embeddings"]
                kwargs["position_embeddings"] = (_gather_tokens(cos, self.keep), _gather_tokens(sin, self.keep))
                if kwargs.get("position_ids") is not None:
                    kwargs["position_ids"] = torch.gather(kwargs["position_ids"].expand(self.keep.shape[0], -1), 1,
                                                          self.keep)  # fmt: skip
            return args, kwargs
        args = list(args)  # T5Block(hidden, attention_mask, position_bias, ...): the mask is the stack's, full size
        if len(args) > 1 and args[1] is not None and args[1].shape[-1] == self._full_length():
            args[1] = _gather_square(args[1], self.keep)
        return tuple(args), kwargs

    def before_decoder(self, module, args, kwargs):
        """T5: the decoder cross-attends to the kept encoder tokens only."""
        mask = kwargs.get("encoder_attention_mask")
        states = kwargs.get("encoder_hidden_states")
        if self.keep is None or mask is None or states is None:
            return None
        if mask.shape[-1] == self._full_length() and states.shape[1] == self.keep.shape[1]:
            kwargs["encoder_attention_mask"] = torch.gather(mask, 1, self.keep)
        return args, kwargs

    def before_model(self, module, args, kwargs):
        if self.decoder_only and kwargs.get("labels") is not None:
            raise ExploreError(
                "FastV drops tokens of a LLaMA LM's sequence, so its logits no longer line up with labels; fine-tune "
                f"without FastV (remove config.{CONFIG_FIELD}) and apply it afterwards"
            )
        return None


def _softmax(scores: Tensor, mask: Tensor | None) -> Tensor:
    """Softmax over keys with an optional (B, 1, Tq|1, Tk) mask: boolean (True = attend) or additive."""
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    return scores.float().softmax(dim=-1)


def _gather_tokens(tensor: Tensor, keep: Tensor) -> Tensor:
    """(B|1, T, ...) → (B, T', ...) at positions ``keep`` (B, T')."""
    tensor = tensor.expand(keep.shape[0], *tensor.shape[1:])
    index = keep.view(*keep.shape, *([1] * (tensor.dim() - 2))).expand(*keep.shape, *tensor.shape[2:])
    return torch.gather(tensor, 1, index)


def _gather_square(tensor: Tensor, keep: Tensor) -> Tensor:
    """(B|1, H|1, T, T) → (B, H|1, T', T'): rows and columns at ``keep``."""
    tensor = tensor.expand(keep.shape[0], *tensor.shape[1:])
    heads = tensor.shape[1]
    rows = keep.view(keep.shape[0], 1, -1, 1).expand(-1, heads, -1, tensor.shape[-1])
    tensor = torch.gather(tensor, 2, rows)
    columns = keep.view(keep.shape[0], 1, 1, -1).expand(-1, heads, tensor.shape[2], -1)
    return torch.gather(tensor, 3, columns)


def _gather_keys(mask: Tensor, keep: Tensor, full: int) -> Tensor:
    """A decoding step's (B, 1, q, full + t) mask → (B, 1, q, T' + t): the kept prompt columns, then the new ones."""
    batch = keep.shape[0]
    new = torch.arange(full, mask.shape[-1], device=mask.device).expand(batch, -1)
    columns = torch.cat([keep, new], dim=1)  # (B, T' + t)
    mask = mask.expand(batch, *mask.shape[1:])
    index = columns.view(batch, 1, 1, -1).expand(-1, mask.shape[1], mask.shape[2], -1)
    return torch.gather(mask, 3, index)


def install_fastv(model: InstructBlipForConditionalGeneration) -> InstructBlipForConditionalGeneration:
    """Register the FastV hooks that ``model.config.explore_fastv`` asks for (replacing any installed before);
    no field, no hooks. Returns ``model`` (changed in place). Raises ExploreError for settings that do not fit."""
    remove_fastv(model)
    settings = fastv_settings(model)
    if settings is None:
        return model
    check_settings(model, settings)
    decoder_only = bool(model.config.use_decoder_only_language_model)
    fastv = _FastV(settings, int(model.config.image_token_id), decoder_only)
    blocks = _blocks(model)
    k = settings.layer
    attention = blocks[k].self_attn if decoder_only else blocks[k].layer[0].SelfAttention
    handles = [
        model.language_model.get_input_embeddings().register_forward_hook(fastv.on_embed),
        (attention.q_proj if decoder_only else attention.q).register_forward_hook(fastv.on_query),
        (attention.k_proj if decoder_only else attention.k).register_forward_hook(fastv.on_key),
        attention.register_forward_hook(fastv.on_attention, with_kwargs=True),
        blocks[k].register_forward_hook(fastv.on_block_output, with_kwargs=True),
        model.register_forward_pre_hook(fastv.before_model, with_kwargs=True),
        (model.language_model.model if decoder_only else model.language_model.encoder).register_forward_pre_hook(
            fastv.before_stack, with_kwargs=True
        ),
    ]
    handles += [block.register_forward_pre_hook(fastv.before_later_block, with_kwargs=True) for block in blocks[k + 1 :]]
    if not decoder_only:
        handles.append(model.language_model.decoder.register_forward_pre_hook(fastv.before_decoder, with_kwargs=True))
    fastv.handles = handles
    model._explore_fastv = fastv
    return model


def remove_fastv(model: InstructBlipForConditionalGeneration) -> None:
    """Remove the hooks :func:`install_fastv` registered (the config field stays)."""
    fastv = getattr(model, "_explore_fastv", None)
    if fastv is not None:
        for handle in fastv.handles:
            handle.remove()
        del model._explore_fastv


def kept_positions(model: InstructBlipForConditionalGeneration) -> Tensor | None:
    """(B, T') the LM input positions FastV kept in the model's last call with image tokens, ascending per row
    (None: no FastV, or no such call yet). For inspection and tests."""
    fastv = getattr(model, "_explore_fastv", None)
    return None if fastv is None or fastv.keep is None else fastv.keep.clone()
