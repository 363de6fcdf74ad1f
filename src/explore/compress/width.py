"""Narrower layers: structured width pruning of attention heads and FFN channels, by importance on a
calibration batch.

Every layer of a component keeps the same number of heads and FFN channels (which ones differs per
layer), because an HF config states one size per component: after pruning, ``config.json`` states the
new sizes and a plain ``from_pretrained`` builds the narrower model and loads the weights. Per-layer
sizes (LLM-Pruner, Sheared-LLaMA) would need a config field transformers does not have.

What each component can lose:

==========  ==========================================  =============================================
component   FFN channels (config field)                 attention heads (config field)
==========  ==========================================  =============================================
vision      ``vision_config.intermediate_size``         no: its head size is ``hidden / num_heads``, so a
                                                        config cannot state fewer heads of the same size
qformer     ``qformer_config.intermediate_size``        no (as vision); both of its MLPs (text and query)
                                                        are pruned, each by its own importance
lm (T5)     ``text_config.d_ff``, encoder and decoder   ``text_config.num_heads`` (``d_kv`` stays): self-
                                                        and cross-attention of both stacks, and the
                                                        relative-position bias table
lm (LLaMA)  ``text_config.intermediate_size``           ``num_attention_heads`` = ``num_key_value_heads``
                                                        (``head_dim`` stays); the count must divide the
                                                        hidden size (LlamaConfig checks it); grouped-
                                                        query attention (fewer KV heads) is refused
==========  ==========================================  =============================================

T5 has one ``num_heads`` and one ``d_ff`` for both stacks, so its encoder and decoder are pruned together
(``lm``). transformers 5 no longer ships ``prune_heads`` (nor the ``pruned_heads`` config field that once
re-applied it on load), so the slicing goes through Torch-Pruning's per-layer pruning functions
(``torch_pruning.prune_linear_out_channels`` and friends), which update weights, biases and the
``in_features`` / ``out_features`` of each layer.

Importance, measured on one forward pass over a calibration batch (hooks on the projection that
reads the channels back into the residual stream, the way Wanda and LLM-Pruner's "element" criteria do
without gradients):

- an FFN channel j: mean over tokens of ``|a_j|`` times ``‖W_down[:, j]‖₂``, where ``a`` is the input of
  the down projection (``fc2``, ``output.dense``, ``wo``, ``down_proj``);
- a head h: mean over tokens of ``‖a_h W_o[:, h]ᵀ‖₂``, the norm of what that head adds to the residual
  stream (``a_h`` the head's slice of the output projection's input).

The lowest-scoring channels / heads of each layer are removed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch_pruning as tp
from torch import nn
from transformers import InstructBlipForConditionalGeneration

from explore.errors import ExploreError

WIDTH_COMPONENTS: tuple[str, ...] = ("vision", "qformer", "lm")


@dataclass
class _FFN:
    """One MLP: the layers whose outputs are its channels (``up``) and the one that reads them (``down``)."""

    up: list[nn.Linear]
    down: nn.Linear


@dataclass
class _Attention:
    """One attention: the projections whose outputs are split into heads, and the output projection."""

    module: nn.Module  # T5Attention / LlamaAttention (its head count attributes are updated)
    qkv: list[nn.Linear]
    out: nn.Linear
    head_dim: int
    bias_table: nn.Embedding | None = None  # T5's relative-position bias (buckets × heads), block 0 only


def _is_t5(model: InstructBlipForConditionalGeneration) -> bool:
    return not model.config.use_decoder_only_language_model


def _ffns(model: InstructBlipForConditionalGeneration, component: str) -> list[_FFN]:
    if component == "vision":
        return [_FFN([layer.mlp.fc1], layer.mlp.fc2) for layer in model.vision_model.encoder.layers]
    if component == "qformer":
        found = []
        for layer in model.qformer.encoder.layer:
            found.append(_FFN([layer.intermediate.dense], layer.output.dense))
            found.append(_FFN([layer.intermediate_query.dense], layer.output_query.dense))
        return found
    if component == "lm":
        lm = model.language_model
        if not _is_t5(model):
            return [_FFN([layer.mlp.gate_proj, layer.mlp.up_proj], layer.mlp.down_proj) for layer in lm.model.layers]
        found = []
        for stack in (lm.encoder, lm.decoder):
            for block in stack.block:
                ffn = block.layer[-1].DenseReluDense
                up = [ffn.wi_0, ffn.wi_1] if hasattr(ffn, "wi_0") else [ffn.wi]
                found.append(_FFN(up, ffn.wo))
        return found
    raise ExploreError(f"unknown component {component!r}; choose one of: {', '.join(WIDTH_COMPONENTS)}")


def _attentions(model: InstructBlipForConditionalGeneration, component: str) -> list[_Attention]:
    if component in ("vision", "qformer"):
        raise ExploreError(
            f"{component}: attention heads cannot be pruned so that the config states it (its head size is "
            "hidden_size / num_attention_heads); prune its FFN channels (ffn_keep) instead"
        )
    if component != "lm":
        raise ExploreError(f"unknown component {component!r}; choose one of: {', '.join(WIDTH_COMPONENTS)}")
    lm = model.language_model
    if not _is_t5(model):
        config = lm.config
        if config.num_key_value_heads != config.num_attention_heads:
            raise ExploreError(
                f"lm: grouped-query attention ({config.num_attention_heads} query heads, {config.num_key_value_heads} "
                "KV heads) is not supported by head pruning; prune its FFN channels (ffn_keep) instead"
            )
        return [_Attention(layer.self_attn, [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj],
                           layer.self_attn.o_proj, layer.self_attn.head_dim) for layer in lm.model.layers]  # fmt: skip
    found = []
    for stack in (lm.encoder, lm.decoder):
        for block in stack.block:
            for sub in block.layer[:-1]:  # self-attention, and the decoder's cross-attention
                attention = getattr(sub, "SelfAttention", None) or sub.EncDecAttention
                table = attention.relative_attention_bias if attention.has_relative_attention_bias else None
                found.append(_Attention(attention, [attention.q, attention.k, attention.v], attention.o,
                                        attention.key_value_proj_dim, table))  # fmt: skip
    return found


@torch.no_grad()
def _token_means(model: nn.Module, batch: dict, modules: list[nn.Module], score, what: str) -> list[torch.Tensor]:
    """One forward pass over ``batch``; for each module, the mean over tokens of ``score(i, module, x)``, where
    ``x`` (tokens, features) is the module's input and the score is (tokens, k)."""
    sums: list[torch.Tensor | None] = [None] * len(modules)
    counts = [0] * len(modules)

    def hook(index: int):
        def record(module, args):
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])  # (tokens, features)
            total = score(index, module, x).sum(dim=0)
            sums[index] = total if sums[index] is None else sums[index] + total
            counts[index] += x.shape[0]

        return record

    handles = [module.register_forward_pre_hook(hook(i)) for i, module in enumerate(modules)]
    try:
        model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    if any(s is None for s in sums):
        raise ExploreError(f"width importance: the calibration batch did not reach every {what}")
    return [s / c for s, c in zip(sums, counts, strict=True)]


def _down_inputs(model: nn.Module, batch: dict, layers: list[nn.Linear]) -> list[torch.Tensor]:
    """For each layer, the mean over tokens of ``|input|``, (features,)."""
    return _token_means(model, batch, layers, lambda index, module, x: x.abs(), "layer")


def _head_contributions(model: nn.Module, batch: dict, attentions: list[_Attention]) -> list[torch.Tensor]:
    """Per attention, (heads,): mean over tokens of the norm of each head's output in the residual stream."""

    def per_head(index: int, module: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        head_dim = attentions[index].head_dim
        heads = x.shape[1] // head_dim
        weight = module.weight.float().view(module.weight.shape[0], heads, head_dim)  # (D, H, hd)
        return torch.einsum("thd,ohd->tho", x.view(-1, heads, head_dim), weight).norm(dim=-1)  # (tokens, H)

    return _token_means(model, batch, [a.out for a in attentions], per_head, "attention layer")


def width_importance(
    model: InstructBlipForConditionalGeneration, batch: dict, component: str, part: str
) -> list[torch.Tensor]:
    """Importance of each FFN channel (``part="ffn"``) or head (``part="heads"``) of every layer of
    ``component`` on the calibration ``batch`` (model inputs, see :func:`explore.models.collate.collate`).

    Returns one 1-D tensor per MLP / attention, in model order (T5: encoder then decoder; the Q-Former:
    text MLP then query MLP per layer). Raises ExploreError for an unknown component or part, or heads
    of a component that cannot lose them.
    """
    if part == "ffn":
        ffns = _ffns(model, component)
        activations = _down_inputs(model, batch, [f.down for f in ffns])
        return [a * f.down.weight.detach().float().norm(dim=0) for a, f in zip(activations, ffns, strict=True)]
    if part == "heads":
        return _head_contributions(model, batch, _attentions(model, component))
    raise ExploreError(f"unknown part {part!r}; choose 'ffn' or 'heads'")


def _kept_count(total: int, keep: float, what: str) -> int:
    if not 0 < keep <= 1:
        raise ExploreError(f"{what}: keep fraction {keep} must be in (0, 1]")
    return max(1, round(total * keep))


def _lowest(scores: torch.Tensor, n_keep: int) -> list[int]:
    """The indices of all but the ``n_keep`` highest scores (ties broken by position, deterministic)."""
    order = torch.argsort(scores, descending=True, stable=True)
    return sorted(order[n_keep:].tolist())


def _set_text_config(model: InstructBlipForConditionalGeneration, **values: int) -> None:
    """Set fields on every copy of the LM config (InstructBLIP's text_config, the LM's, T5's stacks')."""
    lm = model.language_model
    configs = [model.config.text_config, lm.config]
    if _is_t5(model):
        configs += [lm.encoder.config, lm.decoder.config]
    for config in {id(c): c for c in configs}.values():
        for name, value in values.items():
            setattr(config, name, value)


def prune_width(
    model: InstructBlipForConditionalGeneration,
    batch: dict,
    component: str,
    *,
    ffn_keep: float = 1.0,
    heads_keep: float = 1.0,
) -> tuple[InstructBlipForConditionalGeneration, dict]:
    """A copy of ``model`` with ``component``'s FFN channels and / or attention heads pruned to the
    fractions ``ffn_keep`` / ``heads_keep`` (of the current sizes; 1.0 = untouched), by importance on the
    calibration ``batch``. Every layer keeps the same count (rounded, at least one).

    Returns (model, sizes) where ``sizes`` states the new ``ffn`` and / or ``heads`` sizes. Raises
    ExploreError for an unknown component, a fraction outside (0, 1], or heads of a component that
    cannot lose them (vision, qformer; grouped-query LLaMA).
    """
    if component not in WIDTH_COMPONENTS:
        raise ExploreError(f"unknown component {component!r}; choose one of: {', '.join(WIDTH_COMPONENTS)}")
    sizes: dict[str, int] = {}
    model = copy.deepcopy(model)
    if heads_keep != 1.0:
        attentions = _attentions(model, component)
        heads = attentions[0].out.in_features // attentions[0].head_dim
        n_keep = _kept_count(heads, heads_keep, f"{component} heads")
        hidden = model.language_model.config.hidden_size
        if not _is_t5(model) and hidden % n_keep:
            allowed = [n for n in range(1, heads + 1) if hidden % n == 0]
            raise ExploreError(
                f"lm: keeping {n_keep} of {heads} heads is not a size transformers' LlamaConfig accepts (hidden size "
                f"{hidden} must be a multiple of the head count); choose heads_keep giving one of {allowed} heads"
            )
        scores = width_importance(model, batch, component, "heads")
        for attention, score in zip(attentions, scores, strict=True):
            _prune_heads(attention, _lowest(score, n_keep))
        if _is_t5(model):
            _set_text_config(model, num_heads=n_keep)
        else:
            _set_text_config(model, num_attention_heads=n_keep, num_key_value_heads=n_keep,
                             head_dim=attentions[0].head_dim)  # fmt: skip
        sizes["heads"] = n_keep
    if ffn_keep != 1.0:
        ffns = _ffns(model, component)
        n_keep = _kept_count(ffns[0].down.in_features, ffn_keep, f"{component} FFN")
        scores = width_importance(model, batch, component, "ffn")
        for ffn, score in zip(ffns, scores, strict=True):
            drop = _lowest(score, n_keep)
            for layer in ffn.up:
                tp.prune_linear_out_channels(layer, drop)
            tp.prune_linear_in_channels(ffn.down, drop)
        if component == "vision":
            model.config.vision_config.intermediate_size = n_keep
        elif component == "qformer":
            model.config.qformer_config.intermediate_size = n_keep
        elif _is_t5(model):
            _set_text_config(model, d_ff=n_keep)
        else:
            _set_text_config(model, intermediate_size=n_keep)
        sizes["ffn"] = n_keep
    return model, sizes


def _prune_heads(attention: _Attention, drop: list[int]) -> None:
    """Remove heads ``drop`` from one attention: rows of q / k / v, columns of the output projection, and
    columns of T5's relative-position bias table."""
    channels = [h * attention.head_dim + i for h in drop for i in range(attention.head_dim)]
    for layer in attention.qkv:
        tp.prune_linear_out_channels(layer, channels)
    tp.prune_linear_in_channels(attention.out, channels)
    if attention.bias_table is not None:
        tp.prune_embedding_out_channels(attention.bias_table, drop)
    heads = attention.out.in_features // attention.head_dim
    module = attention.module
    if hasattr(module, "n_heads"):  # T5Attention
        module.n_heads, module.inner_dim = heads, heads * attention.head_dim
    if hasattr(module, "num_key_value_groups"):  # LlamaAttention: kv heads == query heads, one group each
        module.num_key_value_groups = 1
