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

Public API:

- :func:`load_at_precision` — load a saved model folder (or ``"embedded"``) at a precision;
- :func:`quantize` — the same for a model in memory (saved to a temporary folder and reloaded);
- :func:`save_quantized` — save such a model (safetensors) so that a plain
  ``InstructBlipForConditionalGeneration.from_pretrained(folder)`` reloads it unchanged.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    BitsAndBytesConfig,
    InstructBlipForConditionalGeneration,
    InstructBlipProcessor,
    TorchAoConfig,
)

from explore.errors import ExploreError
from explore.models.loading import _resolve, save_model


@dataclass(frozen=True)
class Precision:
    """How one precision is loaded."""

    name: str  # the name users pass, e.g. "int8"
    dtype: torch.dtype  # dtype of the weights left unquantized, and of the activations
    backend: str  # "torch" (a dtype cast), "torchao" or "bitsandbytes"
    cuda_only: bool  # refused unless the device is a CUDA GPU
    pip: str  # the install that provides the backend ("" for torch itself)


_TABLE: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", torch.float32, "torch", cuda_only=False, pip=""),
        Precision("bf16", torch.bfloat16, "torch", cuda_only=False, pip=""),
        Precision("fp16", torch.float16, "torch", cuda_only=False, pip=""),
        Precision("int8", torch.float32, "torchao", cuda_only=False, pip="pip install 'torchao>=0.18,<0.19'"),
        # LLM.int8() kernels take float16 activations; under float16 HF keeps T5's `wo` in float32.
        Precision("int8-bnb", torch.float16, "bitsandbytes", cuda_only=True, pip="pip install 'explore-vlm[gpu]'"),
        Precision("nf4", torch.bfloat16, "bitsandbytes", cuda_only=True, pip="pip install 'explore-vlm[gpu]'"),
    )
}
PRECISIONS: tuple[str, ...] = tuple(_TABLE)


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
    spec = _spec(precision)
    device = _device(spec, device)
    folder = _resolve(source)
    saved = saved_precision(folder)
    if saved is not None and saved != spec.name:
        raise ExploreError(
            f"model {folder} is saved quantized as {saved!r}; load it at {saved!r}, or quantize its unquantized "
            f"original to {spec.name!r}"
        )
    kwargs = {} if saved is not None else {"quantization_config": _quantization_config(spec)}
    fix = "if it was saved quantized, save it again with explore.compress.precision.save_quantized"
    try:
        model, info = InstructBlipForConditionalGeneration.from_pretrained(
            folder, dtype=spec.dtype, device_map={"": str(device)}, use_safetensors=True, output_loading_info=True,
            **kwargs,
        )  # fmt: skip
    except OSError as error:
        raise ExploreError(f"cannot load model {folder}: {_first_line(error)}") from error
    except RuntimeError as error:
        if "conversion of the weights" not in str(error):
            raise
        # with output_loading_info, transformers raises where a plain from_pretrained only logs
        raise ExploreError(f"model {folder} at {spec.name}: weights could not be loaded (see the report "
                           f"above); {fix}") from error  # fmt: skip
    problems = [f"{kind} {sorted(info[kind])[:3]}" for kind in ("missing_keys", "mismatched_keys") if info.get(kind)]
    if problems:
        raise ExploreError(f"model {folder} at {spec.name}: weights could not be loaded ({'; '.join(problems)}); {fix}")
    _check_finite(model, f"{folder} at {spec.name}")
    return model.eval(), InstructBlipProcessor.from_pretrained(folder)


def quantize(
    model: InstructBlipForConditionalGeneration,
    processor: InstructBlipProcessor,
    precision: str,
    *,
    device: str | torch.device = "cpu",
) -> tuple[InstructBlipForConditionalGeneration, InstructBlipProcessor]:
    """A copy of an unquantized ``model`` at ``precision``: saved to a temporary folder, then loaded
    with :func:`load_at_precision` (quantizers act while loading). Raises as that function does."""
    _device(_spec(precision), device)  # refuse before writing anything
    if getattr(model, "hf_quantizer", None) is not None:
        done = _precision_of(model.config.quantization_config) or "quantized"
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
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and not quantizer.is_serializable():
        precision = _precision_of(model.config.quantization_config) or "these quantized"
        raise ExploreError(
            f"save_quantized: {precision} weights cannot be written as safetensors with the installed "
            f"{type(quantizer).__name__}; upgrade transformers and the backend, or save the unquantized model and "
            "load it with load_at_precision"
        )
    dtype = _weights_dtype(model)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        if quantizer is not None and isinstance(model.config.quantization_config, TorchAoConfig):
            original = quantizer.get_state_dict_and_metadata
            quantizer.get_state_dict_and_metadata = _torchao_reloadable(original)  # this save only
            try:
                staged = save_model(model, processor, staging / folder.name)
            finally:
                del quantizer.get_state_dict_and_metadata  # back to the class's method
        else:
            staged = save_model(model, processor, staging / folder.name)
        # transformers records `model.dtype`, the dtype of the first parameter: under fp16 that is
        # `query_tokens`, kept in float32, and a plain from_pretrained would then load it all in float32.
        config_file = staged / "config.json"
        config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "dtype": dtype}, indent=2) + "\n")
        if folder.exists():
            previous = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, previous / folder.name)
            os.replace(staged, folder)
            shutil.rmtree(previous)
        else:
            os.replace(staged, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _weights_dtype(model: torch.nn.Module) -> str:
    """The floating dtype that holds most of the parameters, e.g. "float16" (packed integer
    bitsandbytes weights are not floating; a torchao int8 weight reports its float32 dtype)."""
    counts: dict[torch.dtype, int] = {}
    for parameter in model.parameters():
        if parameter.is_floating_point():
            counts[parameter.dtype] = counts.get(parameter.dtype, 0) + parameter.numel()
    return str(max(counts, key=counts.get)).removeprefix("torch.")


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _spec(precision: str) -> Precision:
    if precision not in _TABLE:
        raise ExploreError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    return _TABLE[precision]


def _device(spec: Precision, device: str | torch.device) -> torch.device:
    """Check that ``spec`` can run on ``device`` and that its backend is installed."""
    device = torch.device(device)
    if spec.cuda_only and (device.type != "cuda" or not torch.cuda.is_available()):
        if torch.cuda.is_available():
            raise ExploreError(f"{spec.name} runs on CUDA only; pass device='cuda' (got {str(device)!r})")
        raise ExploreError(f"{spec.name} needs a CUDA GPU and bitsandbytes; use int8 on CPU")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ExploreError(f"device {str(device)!r} asked for, but no CUDA GPU is visible; use device='cpu'")
    if device.type not in ("cpu", "cuda"):
        raise ExploreError(f"device {str(device)!r} is not supported for precisions; use 'cpu' or 'cuda'")
    if spec.backend != "torch" and importlib.util.find_spec(spec.backend) is None:
        raise ExploreError(f"{spec.name} needs the {spec.backend} package, which is not installed: {spec.pip}")
    return device


def _quantization_config(spec: Precision) -> TorchAoConfig | BitsAndBytesConfig | None:
    if spec.backend == "torchao":
        from torchao.quantization import Int8WeightOnlyConfig

        return TorchAoConfig(Int8WeightOnlyConfig())
    if spec.name == "int8-bnb":
        return BitsAndBytesConfig(load_in_8bit=True)
    if spec.name == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=spec.dtype)
    return None


def _precision_of(quantization_config) -> str | None:
    """The explore precision of a transformers quantization config (object or config.json dict)."""
    config = quantization_config if isinstance(quantization_config, dict) else quantization_config.to_dict()
    method = config.get("quant_method")
    if method == "torchao":
        quant_type = config.get("quant_type", {}).get("default", {}).get("_type")
        return "int8" if quant_type == "Int8WeightOnlyConfig" else None
    if method == "bitsandbytes":
        if config.get("load_in_8bit"):
            return "int8-bnb"
        if config.get("load_in_4bit") and config.get("bnb_4bit_quant_type") == "nf4":
            return "nf4"
    return None


def saved_precision(folder: Path | str) -> str | None:
    """The precision a local folder was saved quantized at; None if it is not quantized."""
    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        return None  # a Hub id: transformers reads its config
    quantization_config = json.loads(config_file.read_text()).get("quantization_config")
    if quantization_config is None:
        return None
    precision = _precision_of(quantization_config)
    if precision is None:
        method = quantization_config.get("quant_method")
        raise ExploreError(
            f"model {folder} is quantized with {method!r} settings explore does not know; expected one of: "
            f"{', '.join(PRECISIONS)}"
        )
    return precision


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


def _check_finite(model: torch.nn.Module, source: str) -> None:
    """Raise ExploreError naming the first parameter or buffer with NaN or Inf; torchao tensors are
    checked dequantized, bitsandbytes' packed integer weights are not checked."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if hasattr(tensor, "__tensor_flatten__"):  # a torchao tensor subclass
            tensor = tensor.dequantize()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ExploreError(
                f"model {source}: weight {name!r} contains NaN or Inf; the checkpoint is corrupt — use an earlier one"
            )
