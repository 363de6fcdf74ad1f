"""Which modules of an InstructBLIP each adapter method wraps, per component.

peft has default targets for ``blip-2`` but none for ``instructblip``, and its usual suffix lists
are wrong here: ``["query", "value"]`` hits the Q-Former's self- *and* cross-attention, and
``"output.dense"`` is both the Q-Former's MLP output and its attention output. So every target is
a regular expression that peft matches against the *whole* module name (``re.fullmatch``),
anchored on the component's prefix, and a component's adapters never reach another component.

Module names (transformers 5, checked on tiny T5- and LLaMA-backed models; no ``model.`` prefix):

- ``vision``: ``vision_model.encoder.layers.N.self_attn.{qkv,projection}`` (qkv is fused),
  ``vision_model.encoder.layers.N.mlp.{fc1,fc2}``;
- ``qformer``: ``qformer.encoder.layer.N.{attention,crossattention}.attention.{query,key,value}``,
  ``....{attention,crossattention}.output.dense``, ``qformer.encoder.layer.N.{intermediate,output}{,_query}.dense``;
- ``projection``: ``language_projection``;
- ``lm`` (T5): ``language_model.{encoder,decoder}.block.N.layer.M.{SelfAttention,EncDecAttention}.{q,k,v,o}``,
  ``....DenseReluDense.{wi_0,wi_1,wo}`` (``wi`` for non-gated T5);
- ``lm`` (LLaMA): ``language_model.model.layers.N.self_attn.{q,k,v,o}_proj``, ``....mlp.{gate,up,down}_proj``.

LoRA / DoRA / QLoRA wrap every linear layer of the component's blocks (QLoRA, arXiv 2305.14314:
adapting all linear layers is what matches full fine-tuning); the LM head, the embeddings and the
ViT's patch convolution are left alone. IA3 (arXiv 2205.05638) rescales keys, values and the
hidden activations of each MLP: it wraps the key / value projections (the ViT's fused ``qkv``,
whose queries are rescaled too) and the MLP's *second* linear layer, which peft must be told is a
feed-forward module (``feedforward_modules``) so that it scales that layer's input, the MLP's
hidden activation, instead of its output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from torch import nn
from transformers import InstructBlipForConditionalGeneration

from explore.errors import ConfigError

ADAPTER_COMPONENTS: tuple[str, ...] = ("vision", "qformer", "projection", "lm")
ADAPTER_KINDS: tuple[str, ...] = ("lora", "ia3")  # dora and qlora use the lora targets
LM_FAMILIES: tuple[str, ...] = ("t5", "llama")

# The prefix every module of a component starts with (for checks and for quantisation skips).
COMPONENT_PREFIXES: dict[str, str] = {
    "vision": "vision_model.",
    "qformer": "qformer.",
    "projection": "language_projection",
    "lm": "language_model.",
}

_VISION = r"vision_model\.encoder\.layers\.\d+\."
_QFORMER = r"qformer\.encoder\.layer\.\d+\."
_T5 = r"language_model\.(?:encoder|decoder)\.block\.\d+\.layer\.\d+\."
_LLAMA = r"language_model\.model\.layers\.\d+\."


@dataclass(frozen=True)
class ComponentPatterns:
    """The module-name patterns of one component (full-match regular expressions)."""

    lora: str  # every linear layer of the component's blocks
    ia3: str  # key / value projections and the MLP's second linear layer
    ia3_feedforward: str | None  # the MLP's second linear layer (IA3 scales its input); None: no MLP


_SHARED: dict[str, ComponentPatterns] = {
    "vision": ComponentPatterns(
        lora=_VISION + r"(?:self_attn\.(?:qkv|projection)|mlp\.(?:fc1|fc2))",
        ia3=_VISION + r"(?:self_attn\.qkv|mlp\.fc2)",
        ia3_feedforward=_VISION + r"mlp\.fc2",
    ),
    "qformer": ComponentPatterns(
        lora=_QFORMER + r"(?:(?:attention|crossattention)\.(?:attention\.(?:query|key|value)|output\.dense)"
        r"|(?:intermediate|intermediate_query|output|output_query)\.dense)",
        # "output.dense" directly under the layer is the MLP's; "attention.output.dense" is not matched
        ia3=_QFORMER + r"(?:(?:attention|crossattention)\.attention\.(?:key|value)|(?:output|output_query)\.dense)",
        ia3_feedforward=_QFORMER + r"(?:output|output_query)\.dense",
    ),
    "projection": ComponentPatterns(lora=r"language_projection", ia3=r"language_projection", ia3_feedforward=None),
}

_LM: dict[str, ComponentPatterns] = {
    "t5": ComponentPatterns(
        lora=_T5 + r"(?:(?:SelfAttention|EncDecAttention)\.(?:q|k|v|o)|DenseReluDense\.(?:wi|wi_0|wi_1|wo))",
        ia3=_T5 + r"(?:(?:SelfAttention|EncDecAttention)\.(?:k|v)|DenseReluDense\.wo)",
        ia3_feedforward=_T5 + r"DenseReluDense\.wo",
    ),
    "llama": ComponentPatterns(
        lora=_LLAMA + r"(?:self_attn\.(?:q|k|v|o)_proj|mlp\.(?:gate|up|down)_proj)",
        ia3=_LLAMA + r"(?:self_attn\.(?:k|v)_proj|mlp\.down_proj)",
        ia3_feedforward=_LLAMA + r"mlp\.down_proj",
    ),
}


@dataclass(frozen=True)
class AdapterTargets:
    """What to pass to a peft config, and the module names it resolves to on the model."""

    target_modules: str  # one full-match regex (peft's ``target_modules``)
    feedforward_modules: str | None  # IA3: full-match regex, a subset of the targets; None: none (and LoRA)
    modules: tuple[str, ...]  # the model's module names that ``target_modules`` matches, in order
    feedforward: tuple[str, ...]  # the subset that ``feedforward_modules`` matches (IA3)


def lm_family(model: InstructBlipForConditionalGeneration) -> str:
    """``"t5"`` or ``"llama"``: the family of the model's language model (its text config's model_type)."""
    model_type = model.config.text_config.model_type
    if model_type not in LM_FAMILIES:
        raise ConfigError(
            f"adapter targets are defined for T5 and LLaMA language models, not {model_type!r}; "
            "add its module names to explore.adapt.targets"
        )
    return model_type


def check_components(components: list[str] | tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` for an empty list or a component adapters cannot target."""
    unknown = [c for c in components if c not in ADAPTER_COMPONENTS]
    if unknown or not components:
        hint = (
            " (query_tokens is a parameter, not a layer: train it with method 'full')"
            if "query_tokens" in unknown
            else ""
        )
        raise ConfigError(f"unknown adapter components {unknown}; choose from {list(ADAPTER_COMPONENTS)}{hint}")


def component_patterns(family: str, component: str) -> ComponentPatterns:
    """The patterns of one component for an LM ``family`` (``"t5"`` / ``"llama"``)."""
    check_components([component])
    if family not in LM_FAMILIES:
        raise ConfigError(f"unknown language-model family {family!r}; choose from {list(LM_FAMILIES)}")
    return _LM[family] if component == "lm" else _SHARED[component]


def adapter_targets(
    model: InstructBlipForConditionalGeneration, components: list[str] | tuple[str, ...], kind: str = "lora"
) -> AdapterTargets:
    """The peft targets for adapting ``components`` of ``model`` with ``kind`` (``"lora"`` or ``"ia3"``).

    DoRA and QLoRA use the ``"lora"`` targets. Raises :class:`ConfigError` for an unknown
    component, kind or LM family, or when a component's pattern matches no linear layer of the
    model (e.g. all its layers were dropped).
    """
    if kind not in ADAPTER_KINDS:
        raise ConfigError(f"unknown adapter kind {kind!r}; choose from {list(ADAPTER_KINDS)}")
    check_components(components)
    family = lm_family(model)
    patterns = [component_patterns(family, c) for c in dict.fromkeys(components)]
    linear = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    for component, pattern in zip(dict.fromkeys(components), patterns, strict=True):
        regex = pattern.lora if kind == "lora" else pattern.ia3
        if not any(re.fullmatch(regex, name) for name in linear):
            raise ConfigError(
                f"component {component!r} has no layer matching {regex!r} in this model; nothing to adapt"
            )
    target = _join([p.lora if kind == "lora" else p.ia3 for p in patterns])
    feedforward_parts = [p.ia3_feedforward for p in patterns if p.ia3_feedforward is not None]
    feedforward = _join(feedforward_parts) if kind == "ia3" and feedforward_parts else None
    modules = tuple(name for name in linear if re.fullmatch(target, name))
    ff_modules = tuple(name for name in modules if feedforward and re.fullmatch(feedforward, name))
    return AdapterTargets(target, feedforward, modules, ff_modules)


def component_of(module_name: str) -> str | None:
    """The component a module name belongs to (``None`` for ``query_tokens`` or the top level)."""
    for component, prefix in COMPONENT_PREFIXES.items():
        if module_name == prefix or module_name.startswith(prefix if prefix.endswith(".") else prefix + "."):
            return component
    return None


def _join(patterns: list[str]) -> str:
    return "|".join(f"(?:{p})" for p in patterns)
