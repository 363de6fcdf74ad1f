"""Lower-precision weights, through transformers' own quantization configs (no hand-written kernels).

Precisions (``PRECISIONS``):

========  =================================================  ==========  ==============================
name      weights                                            device      backend
========  =================================================  ==========  ==============================
fp32      float32 (the default, as trained)                  CPU / CUDA  torch
bf16      bfloat16 cast                                      CPU / CUDA  torch (``dtype=``)
fp16      float16 cast; HF keeps ``_keep_in_fp32_modules``   CUDA (CPU   torch (``dtype=``)
          (``query_tokens``, T5's ``wo``) in float32         runs, slow)
int8      int8 per output row + float32 scale, weight-only;  CPU / CUDA  torchao ``Int8WeightOnlyConfig``
          activations stay float32                                       via ``TorchAoConfig``
int8-bnb  LLM.int8() (arXiv 2208.07339), float16 activations CUDA only   bitsandbytes ``load_in_8bit``
nf4       4-bit NormalFloat, bfloat16 compute                CUDA only   bitsandbytes ``load_in_4bit``
w4a16     4-bit integer weights in groups of 32 (RTN),       CPU / CUDA  compressed-tensors, see
          saved as a compressed-tensors checkpoint                       :mod:`explore.compress.ptq`
w8a8      int8 weights per row, int8 activations per token   CPU / CUDA  compressed-tensors (activations
          (dynamic; fake-quantized in memory)                            only in memory, see there)
========  =================================================  ==========  ==============================

Only ``nn.Linear`` weights are quantized, and not the LM's output head or embeddings (HF's default
``modules_to_not_convert``); the ViT patch convolution, norms, biases and ``query_tokens`` stay as
they are. bitsandbytes also skips ``_keep_in_fp32_modules`` (T5's ``wo``). torchao int8 quantizes
``wo`` (transformers 5.24 matches the short name ``wo`` against parameter names such as
``...DenseReluDense.wo.weight``, which do not end in it); that is harmless there, as activations
stay float32 and the fp16 overflow that ``wo`` is kept for cannot arise. Weight-only int8 is per row, so any width works: the tiny test
models (width 16) quantize and run, and no module needs skipping for shape.

Why torchao for CPU int8: torchao 0.18 imports beside torch 2.13+cpu, runs weight-only int8 on CPU,
and transformers 5 writes it as safetensors, so optimum-quanto was not needed. bitsandbytes >= 0.45
has CPU code too, but explore supports one CPU int8 path, the measured one, and refuses the
bitsandbytes precisions off CUDA.

Measured on the embedded model (CPU, 1 thread, 200 test-split VQA questions): int8 weights take
4.4 MB on disk against 15.4 MB at fp32, give the same greedy answer on 199 of 200 (same accuracy,
0.615) and take ~1.13× the fp32 time per example (weight-only int8 saves memory, not time, on CPU);
bf16 takes 7.7 MB, agrees on 196 of 200 and is ~3.9× slower on this CPU.

The precision table and the loader live in :mod:`explore.models.quantized` (loading a folder saved
quantized needs them too, and models never import compress); this module re-exports them.

Public API:

- :func:`load_at_precision` — load a saved model folder (or ``"embedded"``) at a precision;
- :func:`quantize` — the same for a model in memory (saved to a temporary folder and reloaded);
- :func:`save_quantized` — save such a model (safetensors) so that a plain
  ``InstructBlipForConditionalGeneration.from_pretrained(folder)`` reloads it unchanged.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor, TorchAoConfig

from explore.errors import ExploreError
from explore.compress.ptq import PTQ_SCHEMES, quantize_rtn, save_ptq
from explore.models.loading import _resolve, save_model
from explore.models.quantized import (
    PRECISIONS,
    check_device,
    from_pretrained_at_precision,
    precision_of,
    precision_spec,
    saved_precision,
)
from explore.runs import atomic_folder

__all__ = ["PRECISIONS", "load_at_precision", "quantize", "save_quantized", "saved_precision"]


def load_at_precision(
    source: str | os.PathLike, precision: str, *, device: str | torch.device = "cpu"
) -> tuple[InstructBlipForConditionalGeneration, InstructBlipProcessor]:
    """Load a model folder written by ``save_model`` (or ``"embedded"``) at ``precision``, in eval mode.

    A folder that is already quantized (written by :func:`save_quantized`) loads only at the
    precision it was saved in.

    Raises:
        ExploreError: an unknown precision, a CUDA-only precision or ``device="cuda"`` without a
            CUDA GPU, a missing backend package (names the pip install), a bad folder, weights that
            do not match the config, or a NaN / Inf weight.
    """
    check_device(precision_spec(precision), device)  # refuse before looking at the folder
    source = _resolve(source)
    if precision in PTQ_SCHEMES and saved_precision(source) is None:  # compressed-tensors: quantized after loading
        model, processor = from_pretrained_at_precision(source, "fp32", device=device)
        return quantize_rtn(model, precision), processor
    return from_pretrained_at_precision(source, precision, device=device)


def quantize(
    model: InstructBlipForConditionalGeneration,
    processor: InstructBlipProcessor,
    precision: str,
    *,
    device: str | torch.device = "cpu",
) -> tuple[InstructBlipForConditionalGeneration, InstructBlipProcessor]:
    """A copy of an unquantized ``model`` at ``precision``: saved to a temporary folder, then loaded
    with :func:`load_at_precision` (quantizers act while loading). Raises as that function does."""
    check_device(precision_spec(precision), device)  # refuse before writing anything
    if getattr(model, "hf_quantizer", None) is not None:
        done = precision_of(model.config.quantization_config) or "quantized"
        raise ExploreError(f"quantize: the model is already {done}; quantize its unquantized original to {precision}")
    with tempfile.TemporaryDirectory(prefix="explore-quantize-", ignore_cleanup_errors=True) as tmp:
        save_model(model, processor, Path(tmp) / "model")
        return load_at_precision(Path(tmp) / "model", precision, device=device)


def save_quantized(
    model: InstructBlipForConditionalGeneration, processor: InstructBlipProcessor, folder: str | os.PathLike
) -> Path:
    """Save a model from :func:`load_at_precision` / :func:`quantize` to ``folder`` as safetensors,
    atomically (as ``save_model``), with its quantization config and weight dtype in ``config.json``,
    so that a plain ``from_pretrained(folder)`` gives the same model. Returns ``folder``.

    Raises ExploreError if the backend cannot write safetensors (explore never writes pickles).
    """
    folder = Path(folder)
    if getattr(model, "_explore_ptq", None) is not None:  # w4a16 / w8a8 from explore.compress.ptq
        return save_ptq(model, processor, folder)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and not quantizer.is_serializable():
        precision = precision_of(model.config.quantization_config) or "these quantized"
        raise ExploreError(
            f"save_quantized: {precision} weights cannot be written as safetensors with the installed "
            f"{type(quantizer).__name__}; upgrade transformers and the backend, or save the unquantized model and "
            "load it with load_at_precision"
        )
    dtype = _weights_dtype(model)
    with atomic_folder(folder) as staging:
        if quantizer is not None and isinstance(model.config.quantization_config, TorchAoConfig):
            original = quantizer.get_state_dict_and_metadata
            quantizer.get_state_dict_and_metadata = _torchao_reloadable(original)  # this save only
            try:
                save_model(model, processor, staging)
            finally:
                del quantizer.get_state_dict_and_metadata  # back to the class's method
        else:
            save_model(model, processor, staging)
        # transformers records `model.dtype`, the dtype of the first parameter: under fp16 that is
        # `query_tokens`, kept in float32, and a plain from_pretrained would then load it all in float32.
        config_file = staging / "config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "dtype": dtype}, indent=2) + "\n")
    return folder


def _weights_dtype(model: torch.nn.Module) -> str:
    """The floating dtype that holds most of the parameters, e.g. "float16" (packed integer
    bitsandbytes weights are not floating; a torchao int8 weight reports its float32 dtype)."""
    counts: dict[torch.dtype, int] = {}
    for parameter in model.parameters():
        if parameter.is_floating_point():
            counts[parameter.dtype] = counts.get(parameter.dtype, 0) + parameter.numel()
    return str(max(counts, key=counts.get)).removeprefix("torch.")


def _torchao_reloadable(get_state_dict_and_metadata):
    """Wrap torchao's flattening so that the file reloads.

    torchao 0.18's ``unflatten_tensor_state_dict`` splits every listed tensor name at its last dot
    to find the module; InstructBLIP's top-level ``query_tokens`` has no dot, so reloading fails
    and transformers leaves every int8 weight randomly initialised (reported only as MISSING
    keys). Plain tensors need no entry in that list (they load the ordinary way), so they are
    left out of it.
    """

    def state_dict_and_metadata(model):
        state_dict, metadata = get_state_dict_and_metadata(model)
        names = json.loads(metadata["tensor_names"])
        keep = [n for n in names if "." in n or json.loads(metadata[n]).get("_type") != "Tensor"]
        return state_dict, {**metadata, "tensor_names": json.dumps(keep)}

    return state_dict_and_metadata
