"""peft adapters on InstructBLIP: their config per method and component, the 4-bit base of QLoRA, and the
adapter folder (save, load back onto a base, merge into a plain model).

:func:`prepare_model` is what :func:`explore.adapt.finetune.finetune` trains; the rest works on any PeftModel
over an InstructBLIP, trained here or not. peft's ``task_type`` is left unset on purpose: ``CAUSAL_LM`` /
``SEQ_2_SEQ_LM`` wrap the forward for a text-only LM and break BLIP-style models (peft#2528).
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import IA3Config, LoraConfig, PeftConfig, PeftModel, get_peft_model
from torch import nn
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

from explore.adapt.config import FinetuneConfig
from explore.adapt.targets import COMPONENT_PREFIXES, adapter_targets
from explore.errors import ConfigError, ExploreError
from explore.models.loading import PICKLE_SUFFIXES, check_finite, refuse_pickles, save_processor
from explore.runs import atomic_folder
from explore.train.loop import set_trainable

ADAPTER_FILES: tuple[str, ...] = ("adapter_config.json", "adapter_model.safetensors")
QLORA_NEEDS_CUDA = "method qlora needs a CUDA GPU (bitsandbytes 4-bit NF4 kernels); on CPU use method lora or dora"


def peft_config(model: InstructBlipForConditionalGeneration, config: FinetuneConfig) -> PeftConfig:
    """The peft config for ``config.method`` on ``config.components`` of ``model`` (not for ``full``)."""
    if config.method == "full":
        raise ConfigError("method 'full' trains the weights themselves; it has no peft config")
    if config.method == "ia3":
        targets = adapter_targets(model, config.components, "ia3")
        return IA3Config(target_modules=targets.target_modules, feedforward_modules=targets.feedforward_modules or [])
    targets = adapter_targets(model, config.components, "lora")
    return LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets.target_modules,
        use_dora=config.method == "dora",
        bias="none",
    )


def prepare_model(model: InstructBlipForConditionalGeneration, config: FinetuneConfig) -> nn.Module:
    """Make ``model`` ready to train with ``config.method``: the PeftModel, or ``model`` with only the
    components trainable (full). Adapter weights are drawn from the global RNG (seed it first).

    ``model`` itself is changed (adapters are injected into it); deep-copy it first to keep the original.
    QLoRA returns a 4-bit copy on the GPU instead and leaves ``model`` alone.
    """
    if config.method == "full":
        set_trainable(model, list(config.components))
        return model
    if config.method == "qlora":
        model = quantize_4bit(model, config.components)
    with quiet_peft():
        return get_peft_model(model, peft_config(model, config))


def quantize_4bit(
    model: InstructBlipForConditionalGeneration, components: list[str]
) -> InstructBlipForConditionalGeneration:
    """A copy of ``model`` on the GPU whose ``components`` have 4-bit NF4 linear layers (QLoRA's base).

    The other components, the LM head and the query tokens stay in higher precision; compute runs
    in bfloat16 (fp16 would overflow T5's ``wo``). Raises ExploreError without CUDA or bitsandbytes.
    """
    if not torch.cuda.is_available():
        raise ExploreError(QLORA_NEEDS_CUDA)
    try:
        import bitsandbytes  # noqa: F401  (imported only to check that it is installed)
    except ImportError:
        raise ExploreError("method qlora needs bitsandbytes: pip install 'explore-vlm[gpu]'") from None
    from peft import prepare_model_for_kbit_training
    from transformers import BitsAndBytesConfig

    skip = [prefix.rstrip(".") for component, prefix in COMPONENT_PREFIXES.items() if component not in components]
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=[*skip, "language_model.lm_head"],
    )
    with tempfile.TemporaryDirectory(prefix="explore-qlora-") as staging:
        model.save_pretrained(staging)
        quantized = InstructBlipForConditionalGeneration.from_pretrained(
            staging,
            quantization_config=quantization,
            dtype=torch.bfloat16,
            device_map={"": torch.cuda.current_device()},
        )
    # Freezes the base and casts the non-4-bit weights to float32 for stable training (QLoRA recipe).
    return prepare_model_for_kbit_training(quantized, use_gradient_checkpointing=False)


def save_adapter(model: PeftModel, folder: str | os.PathLike, processor: InstructBlipProcessor | None = None) -> Path:
    """Save only the adapter of ``model`` (``adapter_config.json`` + ``adapter_model.safetensors``), atomically.

    No base weights are written: load the adapter back onto its base with :func:`load_adapter`.
    With ``processor`` its files are saved too, so the folder says how to feed the model. An
    existing ``folder`` is replaced once the new one is complete. Returns ``folder``.
    """
    if not isinstance(model, PeftModel):
        raise ExploreError(
            f"save_adapter needs a peft model (from finetune with an adapter method), got {type(model).__name__}; "
            "save a fully tuned model with explore.models.loading.save_model"
        )
    folder = Path(folder)
    with atomic_folder(folder) as staging:
        model.save_pretrained(staging)
        (staging / "README.md").unlink(missing_ok=True)  # peft's empty model-card template
        missing = [name for name in ADAPTER_FILES if not (staging / name).is_file()]
        if missing:
            raise ExploreError(f"save_adapter: peft wrote no {', '.join(missing)} to {staging}")
        if processor is not None:
            save_processor(processor, staging, decoder_only=bool(model.config.use_decoder_only_language_model))
    return folder


def load_adapter(base_model: InstructBlipForConditionalGeneration, folder: str | os.PathLike) -> PeftModel:
    """Put the adapter saved in ``folder`` onto ``base_model`` (changed in place); eval mode, frozen.

    Raises ExploreError when ``folder`` holds no adapter, its weights do not fit the base (a
    target module the base lacks), or they contain NaN / Inf.
    """
    folder = Path(folder)
    missing = [name for name in ADAPTER_FILES if not (folder / name).is_file()]
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES) if folder.is_dir() else []
    if missing == [ADAPTER_FILES[1]] and pickles:
        raise refuse_pickles(f"adapter folder {folder}", pickles)
    if missing:
        raise ExploreError(f"adapter folder {folder} has no {', '.join(missing)}; expected a folder from save_adapter")
    try:
        with quiet_peft():
            model = PeftModel.from_pretrained(base_model, folder, is_trainable=False)
    except (ValueError, RuntimeError, KeyError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ExploreError(f"adapter {folder} does not fit this base model: {first_line}") from error
    check_finite(model, str(folder))
    return model.eval()


def merge_adapter(model: PeftModel) -> InstructBlipForConditionalGeneration:
    """Fold the adapter into the base weights and return the plain InstructBLIP (eval mode).

    The result saves as a normal HF folder with :func:`explore.models.loading.save_model`. The
    base is changed in place (its layers now hold the merged weights). A 4-bit (QLoRA) base cannot
    be merged losslessly: load the adapter onto the full-precision base and merge that instead.
    """
    if not isinstance(model, PeftModel):
        raise ExploreError(f"merge_adapter needs a peft model, got {type(model).__name__} (a fully tuned model "
                           "has nothing to merge; save it as it is)")  # fmt: skip
    if getattr(base_model(model), "is_quantized", False):
        raise ExploreError("cannot merge a QLoRA adapter into its 4-bit base; save the adapter, then "
                           "merge_adapter(load_adapter(full_precision_base, folder))")  # fmt: skip
    return model.merge_and_unload().eval()


@contextmanager
def quiet_peft() -> Iterator[None]:
    """Silence one known-harmless warning: peft 0.21 reads ``is_gradient_checkpointing``, deprecated in transformers 5."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def base_model(model: nn.Module) -> InstructBlipForConditionalGeneration:
    """The InstructBLIP inside a PeftModel (or the model itself)."""
    return model.get_base_model() if isinstance(model, PeftModel) else model
