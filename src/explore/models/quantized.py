"""Load an InstructBLIP at a precision: a dtype cast or one of transformers' quantization configs.

The precisions themselves (what each one quantizes, on which device, measured how) are described in
:mod:`explore.compress.precision`, which quantizes and saves models. This module is the part that
loading needs too: :func:`explore.models.loading.load_model` hands a folder saved quantized to
:func:`from_pretrained_at_precision`, so models never import compress.
"""

from __future__ import annotations

import importlib.util
import json
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
from explore.models.fastv import install_fastv


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
        # compressed-tensors checkpoints (explore.compress.ptq): quantized in memory and saved, not while loading
        Precision("w4a16", torch.float32, "compressed-tensors", cuda_only=False, pip="pip install 'explore-vlm[ptq]'"),
        Precision("w8a8", torch.float32, "compressed-tensors", cuda_only=False, pip="pip install 'explore-vlm[ptq]'"),
    )
}
PRECISIONS: tuple[str, ...] = tuple(_TABLE)


def from_pretrained_at_precision(
    source: Path | str, precision: str, *, device: str | torch.device = "cpu"
) -> tuple[InstructBlipForConditionalGeneration, InstructBlipProcessor]:
    """Load ``source`` (a checked local folder or a Hub id) at ``precision``, in eval mode.

    A folder that is already quantized loads only at the precision it was saved in.

    Raises:
        ExploreError: an unknown precision, a CUDA-only precision or ``device="cuda"`` without a
            CUDA GPU, a missing backend package (names the pip install), a bad folder, weights that
            do not match the config, or a NaN / Inf weight.
    """
    spec = precision_spec(precision)
    device = check_device(spec, device)
    saved = saved_precision(source)
    if saved is not None and saved != spec.name:
        raise ExploreError(
            f"model {source} is saved quantized as {saved!r}; load it at {saved!r}, or quantize its unquantized "
            f"original to {spec.name!r}"
        )
    if spec.backend == "compressed-tensors" and saved is None:
        raise ExploreError(f"{spec.name} weights are made by explore.compress.ptq (quantize_rtn, save_ptq), not while "
                           "loading; use explore.compress.precision.load_at_precision, which quantizes after loading")  # fmt: skip
    kwargs = {} if saved is not None else {"quantization_config": _quantization_config(spec)}
    fix = "if it was saved quantized, save it again with explore.compress.precision.save_quantized"
    try:
        model, info = InstructBlipForConditionalGeneration.from_pretrained(
            source, dtype=spec.dtype, device_map={"": str(device)}, use_safetensors=True, output_loading_info=True,
            **kwargs,
        )  # fmt: skip
    except OSError as error:
        raise ExploreError(f"cannot load model {source}: {_first_line(error)}") from error
    except RuntimeError as error:
        if "conversion of the weights" not in str(error):
            raise
        # with output_loading_info, transformers raises where a plain from_pretrained only logs
        raise ExploreError(f"model {source} at {spec.name}: weights could not be loaded (see the report "
                           f"above); {fix}") from error  # fmt: skip
    problems = [f"{kind} {sorted(info[kind])[:3]}" for kind in ("missing_keys", "mismatched_keys") if info.get(kind)]
    if problems:
        raise ExploreError(f"model {source} at {spec.name}: weights could not be loaded ({'; '.join(problems)}); {fix}")
    check_finite_quantized(model, f"{source} at {spec.name}")
    install_fastv(model)  # a saved FastV setting (config.explore_fastv) needs its hooks; plain HF ignores it
    return model.eval(), InstructBlipProcessor.from_pretrained(source)


def precision_spec(precision: str) -> Precision:
    """The :class:`Precision` called ``precision``; ExploreError listing the known ones otherwise."""
    if precision not in _TABLE:
        raise ExploreError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    return _TABLE[precision]


def check_device(spec: Precision, device: str | torch.device) -> torch.device:
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
    if spec.backend != "torch" and importlib.util.find_spec(spec.backend.replace("-", "_")) is None:
        raise ExploreError(f"{spec.name} needs the {spec.backend} package, which is not installed: {spec.pip}")
    return device


def _quantization_config(spec: Precision) -> TorchAoConfig | BitsAndBytesConfig | None:
    if spec.backend == "torchao":
        # torchao is optional (the int8 precision only): imported when that precision is asked for
        from torchao.quantization import Int8WeightOnlyConfig

        return TorchAoConfig(Int8WeightOnlyConfig())
    if spec.name == "int8-bnb":
        return BitsAndBytesConfig(load_in_8bit=True)
    if spec.name == "nf4":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=spec.dtype)
    return None


def precision_of(quantization_config) -> str | None:
    """The explore precision of a transformers quantization config (object or config.json dict)."""
    config = quantization_config if isinstance(quantization_config, dict) else quantization_config.to_dict()
    method = config.get("quant_method")
    if method == "torchao":
        quant_type = config.get("quant_type", {}).get("default", {}).get("_type")
        return "int8" if quant_type == "Int8WeightOnlyConfig" else None
    if method == "compressed-tensors":  # explore.compress.ptq's formats
        return {"pack-quantized": "w4a16", "int-quantized": "w8a8"}.get(config.get("format"))
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
    precision = precision_of(quantization_config)
    if precision is None:
        method = quantization_config.get("quant_method")
        raise ExploreError(
            f"model {folder} is quantized with {method!r} settings explore does not know; expected one of: "
            f"{', '.join(PRECISIONS)}"
        )
    return precision


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_finite_quantized(model: torch.nn.Module, source: str) -> None:
    """Raise ExploreError naming the first parameter or buffer with NaN or Inf; torchao tensors are
    checked dequantized, bitsandbytes' packed integer weights are not checked."""
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if hasattr(tensor, "__tensor_flatten__"):  # a torchao tensor subclass
            tensor = tensor.dequantize()
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ExploreError(
                f"model {source}: weight {name!r} contains NaN or Inf; the checkpoint is corrupt — use an earlier one"
            )
