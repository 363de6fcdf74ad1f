"""Post-training quantization into ``compressed-tensors`` checkpoints, the format transformers and vLLM read:
W4A16 (4-bit integer weights in groups, 16-bit activations) and W8A8 (8-bit weights per output channel, 8-bit
activations per token, dynamic).

Two ways to choose the integer weights:

- :func:`quantize_rtn`: round to the nearest level with scales from each group's / row's min and max, through
  compressed-tensors' own quantization lifecycle (``apply_quantization_config`` → ``calculate_qparams``);
  compressed-tensors is the ``ptq`` extra.
- :func:`quantize_gptq`: GPTQ (arXiv 2210.17323) through ``llmcompressor``'s ``oneshot`` with a ``GPTQModifier``,
  calibrated on world examples. llmcompressor 0.14 declares ``transformers<=5.17`` and
  ``compressed-tensors==0.19.0``, so ``pip install llmcompressor`` would replace transformers 5.24 here; it is
  therefore no extra of explore. Installed beside 5.24 without its pins (``pip install --no-deps
  llmcompressor==0.14.0.1``) it ran GPTQ W4A16 on the tiny models on CPU (tests/compress/test_ptq.py, skipped
  without it); AWQ and SmoothQuant need per-architecture layer mappings llmcompressor has none of for InstructBLIP.

Both end in the same state (a model whose Linear layers carry compressed-tensors quantization parameters), which
:func:`save_ptq` compresses (``ModelCompressor.compress_model``) and saves.

Every ``nn.Linear`` is quantized except the LM head (as HF and llmcompressor recipes do). The saved folder holds
the compressed weights (W4A16: eight 4-bit values packed per int32; W8A8: int8) and ``config.json``'s
``quantization_config`` with ``"dequantize": true``, so that a plain ``from_pretrained(folder)`` on a CPU
decompresses them into ordinary ``nn.Linear`` layers: transformers 5.24 cannot build T5 with compressed
layers (its weight initialisation reads ``.weight``, which a compressed layer does not have). A serving stack
(vLLM) reads the compressed weights and ignores that key.

What runs where (measured on the tiny test models, see tests/compress/test_ptq.py): W4A16 reloads to the
same outputs as the quantized model before saving. W8A8's activation quantization is a runtime setting:
in memory (fake-quantized) it runs, after a dequantizing reload it does not, so the reload equals the model
with 8-bit weights and full-precision activations; int8 × int8 kernels need vLLM on a GPU.
"""

from __future__ import annotations

import copy
import json
import os
import tempfile
from pathlib import Path

import torch
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

from explore.data.example import Example
from explore.errors import ExploreError
from explore.models.collate import collate
from explore.models.loading import load_model, save_model
from explore.runs import atomic_folder

PTQ_SCHEMES: tuple[str, ...] = ("w4a16", "w8a8")
_PRESETS = {"w4a16": "W4A16", "w8a8": "W8A8"}  # compressed-tensors' preset scheme names
_FORMATS = {"w4a16": "pack-quantized", "w8a8": "int-quantized"}
PIP = "pip install 'explore-vlm[ptq]'  (compressed-tensors)"


def _compressed_tensors():
    """The compressed-tensors modules (an optional dependency: imported when PTQ is asked for)."""
    try:
        from compressed_tensors.compressors import ModelCompressor
        from compressed_tensors.quantization import (
            QuantizationConfig,
            QuantizationStatus,
            QuantizationStrategy,
            apply_quantization_config,
            preset_name_to_scheme,
        )
        from compressed_tensors.quantization.utils import calculate_qparams
    except ImportError as error:
        raise ExploreError(f"post-training quantization needs compressed-tensors: {PIP}") from error
    return (ModelCompressor, QuantizationConfig, QuantizationStatus, QuantizationStrategy, apply_quantization_config,
            preset_name_to_scheme, calculate_qparams)  # fmt: skip


def _linear_names(model: InstructBlipForConditionalGeneration) -> list[str]:
    head = model.language_model.get_output_embeddings()
    return [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and module is not head]


GROUP_SIZES: tuple[int, ...] = (128, 64, 32, 16, 8)  # W4A16 group sizes tried, widest first (compressed-tensors: 128)


def quantize_rtn(
    model: InstructBlipForConditionalGeneration, scheme: str, *, group_size: int | None = None
) -> InstructBlipForConditionalGeneration:
    """A copy of ``model`` with every Linear but the LM head quantized to ``scheme`` ("w4a16" or "w8a8") by
    round-to-nearest, fake-quantized in memory (it runs like the saved model served with the same scheme).

    ``group_size``: W4A16 weights share one scale per ``group_size`` input features; it must divide every layer's
    input width. Default: the widest of 128, 64, 32, 16, 8 that does (compressed-tensors' preset is 128; the
    embedded model's 160-wide layers take 32, the tiny test models 16). Raises ExploreError for an unknown
    scheme, a group size that does not divide a layer, or a missing compressed-tensors.
    """
    if scheme not in PTQ_SCHEMES:
        raise ExploreError(f"unknown PTQ scheme {scheme!r}; choose one of: {', '.join(PTQ_SCHEMES)}")
    (_, QuantizationConfig, QuantizationStatus, QuantizationStrategy, apply_quantization_config,
     preset_name_to_scheme, calculate_qparams) = _compressed_tensors()  # fmt: skip
    model = copy.deepcopy(model)
    targets = _linear_names(model)
    quant_scheme = preset_name_to_scheme(_PRESETS[scheme], targets)
    weights = quant_scheme.weights
    if weights.strategy == QuantizationStrategy.GROUP:
        modules = dict(model.named_modules())
        widths = {modules[n].in_features for n in targets}
        if group_size is None:
            group_size = next((g for g in GROUP_SIZES if all(w % g == 0 for w in widths)), GROUP_SIZES[-1])
        weights.group_size = group_size
        bad = sorted(w for w in widths if w % group_size)
        if bad:
            raise ExploreError(f"w4a16: group size {group_size} does not divide the input widths {bad}; choose a "
                               "divisor of every Linear's in_features")  # fmt: skip
    config = QuantizationConfig(config_groups={"group_0": quant_scheme},
                                quantization_status=QuantizationStatus.INITIALIZED)  # fmt: skip
    apply_quantization_config(model, config, show_progress=False)
    for name, module in model.named_modules():
        if name not in targets:
            continue
        weight = module.weight.detach()
        if weights.strategy == QuantizationStrategy.GROUP:
            grouped = weight.reshape(weight.shape[0], -1, weights.group_size)  # (out, groups, group_size)
            low, high = grouped.amin(dim=-1), grouped.amax(dim=-1)
        else:  # one scale per output row
            low, high = weight.amin(dim=-1, keepdim=True), weight.amax(dim=-1, keepdim=True)
        scale, zero_point = calculate_qparams(low, high, weights)
        module.weight_scale.data.copy_(scale.reshape(module.weight_scale.shape))
        module.weight_zero_point.data.copy_(zero_point.reshape(module.weight_zero_point.shape))
    for module in model.modules():
        if hasattr(module, "quantization_status"):
            module.quantization_status = QuantizationStatus.FROZEN
    model._explore_ptq = scheme
    return model.eval()


def quantize_gptq(
    model: InstructBlipForConditionalGeneration,
    processor: InstructBlipProcessor,
    calibration: list[Example],
    scheme: str,
    *,
    group_size: int | None = None,
) -> InstructBlipForConditionalGeneration:
    """A copy of ``model`` quantized to ``scheme`` by GPTQ on ``calibration`` (one example per forward pass),
    through llmcompressor (see the module docstring for installing it). Same layers and group sizes as
    :func:`quantize_rtn`; save it with :func:`save_ptq`. Raises ExploreError for an unknown scheme, a missing
    llmcompressor, or no calibration examples."""
    if scheme not in PTQ_SCHEMES:
        raise ExploreError(f"unknown PTQ scheme {scheme!r}; choose one of: {', '.join(PTQ_SCHEMES)}")
    if not calibration:
        raise ExploreError("quantize_gptq: no calibration examples; pass a few (e.g. 64 validation questions)")
    try:
        from datasets import Dataset
        from llmcompressor import oneshot
        from llmcompressor.modifiers.quantization import GPTQModifier
    except ImportError as error:
        raise ExploreError("GPTQ needs llmcompressor, which pins transformers <= 5.17; install it beside this "
                           "transformers with `pip install --no-deps llmcompressor==0.14.0.1`") from error  # fmt: skip
    preset_name_to_scheme = _compressed_tensors()[5]
    rtn_shape = quantize_rtn(model, scheme, group_size=group_size)  # the scheme and group size RTN would use
    quant_scheme = preset_name_to_scheme(_PRESETS[scheme], ["Linear"])
    if quant_scheme.weights.group_size is not None:
        quant_scheme.weights.group_size = next(
            m.quantization_scheme.weights.group_size for m in rtn_shape.modules() if hasattr(m, "quantization_scheme")
        )
    del rtn_shape
    decoder_only = bool(model.config.use_decoder_only_language_model)
    rows = []
    for example in calibration:
        batch = collate([example], processor, with_labels=True, max_length=64, decoder_only=decoder_only)
        rows.append({name: tensor[0].tolist() for name, tensor in batch.items()})

    def one_example(batch: list[dict]) -> dict:
        return {name: torch.tensor(value).unsqueeze(0) for name, value in batch[0].items()}

    head = model.language_model.get_output_embeddings()
    head_name = next(name for name, module in model.named_modules() if module is head)
    with tempfile.TemporaryDirectory(prefix="explore-gptq-") as tmp:
        # llmcompressor reads the model's config back from model.config.name_or_path: work on a saved copy
        save_model(model, processor, Path(tmp) / "model")
        quantized, _ = load_model(Path(tmp) / "model")
        recipe = GPTQModifier(config_groups={"group_0": quant_scheme}, ignore=[head_name])
        oneshot(model=quantized, processor=processor, dataset=Dataset.from_list(rows), recipe=recipe,
                data_collator=one_example, num_calibration_samples=len(rows), pipeline="basic")  # fmt: skip
    # llmcompressor wraps this model's save_pretrained to also write its recipe, read back from the (deleted)
    # folder above; save_ptq compresses and saves as for RTN, so the class's own method is put back
    quantized.__dict__.pop("save_pretrained", None)
    quantized._explore_ptq = scheme
    return quantized.eval()


def save_ptq(
    model: InstructBlipForConditionalGeneration, processor: InstructBlipProcessor, folder: str | os.PathLike
) -> Path:
    """Save a model from :func:`quantize_rtn` as a compressed-tensors checkpoint (safetensors), atomically, so
    that a plain ``InstructBlipForConditionalGeneration.from_pretrained(folder)`` loads it (decompressed, see the
    module docstring). ``model`` itself is left as it was. Returns ``folder``."""
    scheme = getattr(model, "_explore_ptq", None)
    if scheme is None:
        raise ExploreError("save_ptq: the model is not quantized; quantize it with quantize_rtn first")
    ModelCompressor = _compressed_tensors()[0]
    folder = Path(folder)
    compressed = copy.deepcopy(model)  # compress_model replaces the weights in place
    compressor = ModelCompressor.from_pretrained_model(compressed, quantization_format=_FORMATS[scheme])
    compressor.compress_model(compressed)
    with atomic_folder(folder) as staging:
        save_model(compressed, processor, staging)
        compressor.update_config(str(staging))
        config_file = staging / "config.json"
        config = json.loads(config_file.read_text())
        config["quantization_config"]["dequantize"] = True  # see the module docstring
        config_file.write_text(json.dumps(config, indent=2) + "\n")
    return folder
