"""Adapter targets: each component's patterns hit that component's layers, and only those."""

import re

import pytest
import torch

from explore.adapt.adapters import prepare_model
from explore.adapt.config import FinetuneConfig
from explore.adapt.targets import ADAPTER_COMPONENTS, adapter_targets, component_of
from explore.errors import ConfigError

FAMILIES = ["t5", "llama"]
# tiny presets: 1 ViT layer, 1 Q-Former layer (with cross-attention); T5 1 + 1 blocks, LLaMA 2 layers
EXPECTED = {
    # (family, component, kind): (adapted modules, of which IA3 feed-forward)
    ("t5", "vision", "lora"): (4, 0), ("t5", "vision", "ia3"): (2, 1),
    ("t5", "qformer", "lora"): (12, 0), ("t5", "qformer", "ia3"): (6, 2),
    ("t5", "projection", "lora"): (1, 0), ("t5", "projection", "ia3"): (1, 0),
    ("t5", "lm", "lora"): (4 + 3 + 4 + 4 + 3, 0), ("t5", "lm", "ia3"): (2 + 1 + 2 + 2 + 1, 2),
    ("llama", "lm", "lora"): (14, 0), ("llama", "lm", "ia3"): (6, 2),
}  # fmt: skip


def _adapted(peft_model) -> set[str]:
    """Names (relative to the InstructBLIP) of the modules peft wrapped."""
    names = set()
    for name, module in peft_model.get_base_model().named_modules():
        if hasattr(module, "lora_A") or hasattr(module, "ia3_l"):
            names.add(name)
    return names


@pytest.mark.parametrize("kind", ["lora", "ia3"])
@pytest.mark.parametrize("component", ADAPTER_COMPONENTS)
@pytest.mark.parametrize("family", FAMILIES)
def test_targets_hit_only_their_component(tiny_factory, family, component, kind):
    model, _ = tiny_factory(family)
    targets = adapter_targets(model, [component], kind)
    linear = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert targets.modules and set(targets.modules) <= linear
    assert {component_of(name) for name in targets.modules} == {component}
    assert set(targets.feedforward) <= set(targets.modules)
    expected = EXPECTED.get((family, component, kind)) or EXPECTED[("t5", component, kind)]
    assert (len(targets.modules), len(targets.feedforward)) == expected
    method = "ia3" if kind == "ia3" else "lora"
    wrapped = prepare_model(model, FinetuneConfig(method=method, components=[component]))
    assert _adapted(wrapped) == set(targets.modules)  # peft wraps exactly what we resolved


@pytest.mark.parametrize("family", FAMILIES)
def test_ia3_feedforward_is_the_mlp_output_not_the_attention_output(tiny_factory, family):
    model, _ = tiny_factory(family)
    targets = adapter_targets(model, ["vision", "qformer", "lm"], "ia3")
    assert "qformer.encoder.layer.0.output.dense" in targets.feedforward
    assert "qformer.encoder.layer.0.output_query.dense" in targets.feedforward
    assert not any("attention.output" in name for name in targets.modules)
    down = "wo" if family == "t5" else "down_proj"
    assert all(re.search(rf"(fc2|output(_query)?\.dense|{down})$", name) for name in targets.feedforward)
    assert not any(name.endswith(("query", "q", "q_proj")) for name in targets.modules)  # keys and values only


@pytest.mark.parametrize("family", FAMILIES)
def test_all_components_cover_every_block_linear_but_the_head(tiny_factory, family):
    model, _ = tiny_factory(family)
    targets = adapter_targets(model, list(ADAPTER_COMPONENTS), "lora")
    linear = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert linear - set(targets.modules) == {"language_model.lm_head"}


def test_unknown_component_is_a_one_line_error(tiny_factory):
    model, _ = tiny_factory("t5")
    with pytest.raises(ConfigError) as err:
        adapter_targets(model, ["qformer", "decoder"])
    message = str(err.value)
    assert "'decoder'" in message and "['vision', 'qformer', 'projection', 'lm']" in message and "\n" not in message
    with pytest.raises(ConfigError, match="query_tokens is a parameter"):
        adapter_targets(model, ["query_tokens"])
    with pytest.raises(ConfigError, match="unknown adapter kind"):
        adapter_targets(model, ["qformer"], "prefix")
