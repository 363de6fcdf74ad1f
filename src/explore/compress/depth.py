"""Fewer layers: drop blocks of the ViT, the Q-Former or the language model (T5 encoder / decoder,
LLaMA decoder), by position.

Each operator edits a copy of the model so that it stays a normal transformers model: the kept
blocks are renumbered (``layer_idx``, used by the KV cache), the config's layer count changes,
and the result saves and reloads with ``from_pretrained``. Two architectural details need care:

- T5 keeps its relative-position bias table only in block 0 of each stack; when block 0 is
  dropped, the table moves to the new first block (as a fresh T5 of that depth expects).
- The Q-Former cross-attends to the image every ``cross_attention_frequency``-th layer, decided by
  the layer index when the model is built; a drop that would break that pattern is refused.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import InstructBlipForConditionalGeneration

from explore.errors import ExploreError

DEPTH_COMPONENTS: tuple[str, ...] = ("vision", "qformer", "lm_encoder", "lm_decoder")


def _parent(model: InstructBlipForConditionalGeneration, component: str) -> tuple[nn.Module, str]:
    """The module that holds ``component``'s blocks, and the attribute name of the ModuleList."""
    lm = model.language_model
    decoder_only = bool(model.config.use_decoder_only_language_model)
    if component == "vision":
        return model.vision_model.encoder, "layers"
    if component == "qformer":
        return model.qformer.encoder, "layer"
    if component == "lm_decoder":
        return (lm.model, "layers") if decoder_only else (lm.decoder, "block")
    if component == "lm_encoder":
        if decoder_only:
            raise ExploreError("a decoder-only language model has no encoder; drop 'lm_decoder' layers instead")
        return lm.encoder, "block"
    raise ExploreError(f"unknown component {component!r}; choose one of: {', '.join(DEPTH_COMPONENTS)}")


def _blocks(model: InstructBlipForConditionalGeneration, component: str) -> nn.ModuleList:
    parent, name = _parent(model, component)
    return getattr(parent, name)


def block_count(model: InstructBlipForConditionalGeneration, component: str) -> int:
    """How many blocks ``component`` has now (ExploreError for an unknown component)."""
    return len(_blocks(model, component))


def _set_layer_count(model: InstructBlipForConditionalGeneration, component: str, n: int) -> None:
    config = model.config
    if component == "vision":
        config.vision_config.num_hidden_layers = n
    elif component == "qformer":
        config.qformer_config.num_hidden_layers = n
    else:
        text_configs = {id(c): c for c in (config.text_config, model.language_model.config)}.values()
        for text_config in text_configs:
            if model.config.use_decoder_only_language_model:
                text_config.num_hidden_layers = n
            elif component == "lm_encoder":
                text_config.num_layers = n
            else:
                text_config.num_decoder_layers = n


def drop_layers(
    model: InstructBlipForConditionalGeneration, component: str, drop: list[int]
) -> InstructBlipForConditionalGeneration:
    """A copy of ``model`` without the blocks at positions ``drop`` of ``component``.

    Raises ExploreError for an unknown component, positions out of range, dropping every block,
    or a Q-Former drop that breaks its cross-attention pattern.
    """
    blocks = _blocks(model, component)
    n = len(blocks)
    bad = sorted(i for i in set(drop) if not 0 <= i < n)
    if bad:
        raise ExploreError(f"{component} has layers 0..{n - 1}; cannot drop {bad}")
    keep = [i for i in range(n) if i not in set(drop)]
    if not keep:
        raise ExploreError(f"cannot drop all {n} {component} layers; keep at least one")
    if component == "qformer":
        frequency = model.config.qformer_config.cross_attention_frequency
        for new, old in enumerate(keep):
            if blocks[old].has_cross_attention != (new % frequency == 0):
                raise ExploreError(f"dropping Q-Former layers {sorted(set(drop))} breaks its pattern of cross-attention "
                                   f"every {frequency} layers; drop whole groups of {frequency} consecutive layers")  # fmt: skip
    model = copy.deepcopy(model)
    blocks = _blocks(model, component)
    kept = [blocks[i] for i in keep]
    if component.startswith("lm_") and not model.config.use_decoder_only_language_model and 0 not in keep:
        # T5: only block 0 owns the relative-position bias; hand it to the new first block.
        old_attention, new_attention = blocks[0].layer[0].SelfAttention, kept[0].layer[0].SelfAttention
        new_attention.relative_attention_bias = old_attention.relative_attention_bias
        new_attention.has_relative_attention_bias = True
    for new_index, block in enumerate(kept):
        for module in block.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_index
    parent, name = _parent(model, component)
    setattr(parent, name, nn.ModuleList(kept))
    _set_layer_count(model, component, len(kept))
    return model


def _hidden(value):
    """The hidden-states tensor of a block's input or output (blocks return tensors or tuples)."""
    return value[0] if isinstance(value, (tuple, list)) else value


@torch.no_grad()
def block_influence(model: InstructBlipForConditionalGeneration, batch: dict, component: str) -> list[float]:
    """ShortGPT's block influence of each block of ``component`` on a calibration ``batch``:
    1 − cosine similarity between the block's input and output hidden states, averaged over tokens
    (arXiv 2403.03853). Low influence = the block changes little = a candidate to drop."""
    blocks = _blocks(model, component)
    scores: list[list[float]] = [[] for _ in blocks]

    def hook(index: int):
        def record(module, args, kwargs, output):
            hidden_in = _hidden(args[0] if args else kwargs["hidden_states"])
            hidden_out = _hidden(output)
            similarity = torch.nn.functional.cosine_similarity(hidden_in.float(), hidden_out.float(), dim=-1)
            scores[index].append(float((1 - similarity).mean()))

        return record

    handles = [block.register_forward_hook(hook(i), with_kwargs=True) for i, block in enumerate(blocks)]
    try:
        model(**batch)
    finally:
        for handle in handles:
            handle.remove()
    return [sum(s) / len(s) if s else float("nan") for s in scores]


def drop_least_influential(
    model: InstructBlipForConditionalGeneration, batch: dict, component: str, n: int
) -> tuple[InstructBlipForConditionalGeneration, list[int]]:
    """Drop the ``n`` blocks of ``component`` with the lowest block influence on ``batch``.

    Returns the smaller copy and the dropped positions. (For a Q-Former with cross-attention every
    other layer, choose positions yourself with :func:`drop_layers`; a free choice may break it.)
    """
    influence = block_influence(model, batch, component)
    order = sorted(range(len(influence)), key=lambda i: influence[i])
    dropped = sorted(order[:n])
    return drop_layers(model, component, dropped), dropped
