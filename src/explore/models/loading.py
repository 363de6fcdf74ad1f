"""Load and save InstructBLIPs safely: safetensors only, no remote code, finite weights.

``load_model`` accepts three kinds of names:

- ``"embedded"``: the small model packaged with explore (``src/explore/embedded/shapes-small/``);
- a local folder written by :func:`save_model` (or any HF ``save_pretrained``);
- a Hub id such as ``Salesforce/instructblip-flan-t5-xl`` (needs the Hub cache when offline).

Pickle weights (``pytorch_model.bin``, ``.pt``, ``.pkl``) are refused before anything reads them:
unpickling can run arbitrary code. ``trust_remote_code`` is never passed, so only transformers'
own InstructBLIP code runs.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from tokenizers.models import WordLevel
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

from explore.runs import atomic_folder
from explore.errors import ConfigError, ExploreError
from explore.models.fastv import install_fastv
from explore.models.presets import list_presets
from explore.models.tokenizer import clear_call_state, set_special_tokens
from explore.models.quantized import from_pretrained_at_precision, saved_precision
from explore.packaged import packaged

EMBEDDED = "embedded"
EMBEDDED_PRESET = "shapes-small"
EMBEDDED_RECIPE = Path("configs/pretrain/shapes-judge-14.yaml")  # the last of nine runs; its header names them all
PRETRAIN_COMMAND = f"explore pretrain --config {EMBEDDED_RECIPE.as_posix()}"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # "owner/name"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def embedded_folder() -> Path:
    """Where the packaged model lives (it may not exist until it has been trained)."""
    return packaged(EMBEDDED_PRESET)


def load_model(
    name_or_path: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None
) -> tuple[InstructBlipForConditionalGeneration, InstructBlipProcessor]:
    """Load an InstructBLIP and its processor, in eval mode on ``device``.

    Args:
        name_or_path: ``"embedded"``, a local folder, or a Hub id (see the module docstring).
        device: where to put the model, e.g. ``"cpu"`` or ``"cuda"``.
        dtype: ``torch.float32`` (default), ``torch.bfloat16`` / ``torch.float16``, or their names.

    Raises:
        ExploreError: a missing or incomplete folder, pickle-only weights, a Hub id that is not
            cached while offline, missing or mis-shaped weights, or a NaN / Inf weight (named).
    """
    source = _resolve(name_or_path)
    torch_dtype = _dtype(dtype)
    if isinstance(source, Path):
        saved = saved_precision(source)
        if saved is not None and saved not in ("fp32", "bf16", "fp16"):  # int8 / nf4 weights: their backend loads them
            return from_pretrained_at_precision(source, saved, device=device)
    try:
        model, info = InstructBlipForConditionalGeneration.from_pretrained(
            source, dtype=torch_dtype, use_safetensors=True, output_loading_info=True
        )
        processor = InstructBlipProcessor.from_pretrained(source)
    except OSError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(source, Path):
            raise ExploreError(f"cannot load model folder {source}: {first_line}") from error
        raise ExploreError(
            f"cannot load {source!r} from the Hugging Face Hub: {first_line} If offline, download it once where "
            f"there is network (`hf download {source}`) or pass a local folder written by save_model"
        ) from error
    problems = [f"{kind} {info[kind][:3]}" for kind in ("missing_keys", "mismatched_keys") if info.get(kind)]
    if problems:
        raise ExploreError(
            f"model {source}: the weights do not match its config.json ({'; '.join(problems)}); "
            "re-save the model with explore.models.loading.save_model"
        )
    check_finite(model, str(source))
    install_fastv(model)  # a saved FastV setting (config.explore_fastv) needs its hooks; plain HF ignores it
    return model.to(device).eval(), processor


def save_model(
    model: InstructBlipForConditionalGeneration, processor: InstructBlipProcessor, folder: str | os.PathLike
) -> Path:
    """Save ``model`` (safetensors) and ``processor`` to ``folder``, atomically.

    Both are written to a temporary sibling folder that is renamed into place when complete; an
    existing ``folder`` is replaced only after the new one is written. Returns ``folder``.
    (transformers >= 5 always writes safetensors; its ``safe_serialization`` flag is gone.)
    """
    folder = Path(folder)
    with atomic_folder(folder) as staging:
        model.save_pretrained(staging)
        save_processor(processor, staging, decoder_only=bool(model.config.use_decoder_only_language_model))
        if not list(staging.glob("*.safetensors")):
            raise ExploreError(f"save_model: transformers wrote no .safetensors file to {staging}")
    return folder


def save_processor(processor: InstructBlipProcessor, folder: str | os.PathLike, *, decoder_only: bool) -> None:
    """``processor.save_pretrained(folder)``, with tokenizers that behave through a plain
    ``InstructBlipProcessor`` as they do inside explore: no truncation / padding state left by the last
    call, and a word-level LM tokenizer that adds the bos / eos that :mod:`explore.models.collate`
    adds (real hub tokenizers already do; they are left as they are)."""
    for tokenizer in (processor.tokenizer, processor.qformer_tokenizer):
        if hasattr(tokenizer, "backend_tokenizer"):
            clear_call_state(tokenizer)
    backend = getattr(processor.tokenizer, "backend_tokenizer", None)
    if backend is not None and isinstance(backend.model, WordLevel):
        set_special_tokens(processor.tokenizer, "llama" if decoder_only else "t5")
    processor.save_pretrained(folder)


def check_finite(model: torch.nn.Module, source: str) -> None:
    """Raise :class:`ExploreError` naming the first parameter or buffer that holds NaN or Inf."""
    tensors = list(model.named_parameters()) + list(model.named_buffers())
    for name, tensor in tensors:
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ExploreError(
                f"model {source}: weight {name!r} contains NaN or Inf; the checkpoint is corrupt "
                "(a diverged training run?) — use an earlier checkpoint"
            )


def _resolve(name_or_path: str | os.PathLike) -> Path | str:
    """Turn a name into a checked local folder (Path) or a Hub id (str)."""
    name = str(name_or_path)
    if name == EMBEDDED:
        folder = embedded_folder()
        if not folder.is_dir():
            raise ExploreError(
                f"the embedded model is not built yet (no folder {folder}); build it with the runs in the header "
                f"of {EMBEDDED_RECIPE.as_posix()}, the last being `{PRETRAIN_COMMAND}`, and copy "
                f"runs/{EMBEDDED_RECIPE.stem}/model there"
            )
        return _check_folder(folder)
    path = Path(name).expanduser()
    if path.exists() or isinstance(name_or_path, os.PathLike) or name.startswith(("/", ".", "~")):
        return _check_folder(path)
    if HUB_ID.match(name):
        return name
    raise ExploreError(
        f"unknown model {name!r}: expected {EMBEDDED!r}, a local folder with config.json, or a Hub id like "
        f"'Salesforce/instructblip-flan-t5-xl'; the presets ({', '.join(list_presets())}) are untrained "
        "architectures: build one with explore.models.build.build_model(preset, tokenizer, seed)"
    )


def refuse_pickles(what: str, names: list[str] | None = None) -> ExploreError:
    """The error for pickle weights (``what`` is a pickle file, or a folder whose weights are the files ``names``):
    why explore will not read them and how to convert them."""
    found = f"has only pickle weights ({', '.join(names)})" if names else "is a pickle file"
    return ExploreError(
        f"{what} {found}, which can run arbitrary code when loaded, so explore refuses pickles; if you trust "
        "the source, convert to safetensors elsewhere: `from_pretrained(folder)` then "
        "`save_pretrained(new_folder)` (writes model.safetensors), or for a bare state dict "
        "`safetensors.torch.save_file(torch.load(file, weights_only=True), 'model.safetensors')`"
    )


def _check_folder(folder: Path) -> Path:
    """Check that ``folder`` holds an InstructBLIP config and safetensors weights (no pickle)."""
    if folder.is_file() and folder.suffix in PICKLE_SUFFIXES:
        raise refuse_pickles(f"model {folder}")
    if folder.is_file():
        raise ExploreError(f"model {folder} is a file; pass the folder that holds config.json and the weights")
    if not folder.is_dir():
        raise ExploreError(f"model folder {folder} does not exist or is not a folder; pass a folder from save_model")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ExploreError(
            f"model folder {folder} has no config.json; expected a folder written by save_model / save_pretrained"
        )
    try:
        model_type = json.loads(config_file.read_text()).get("model_type")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as error:
        raise ExploreError(f"{config_file} is not a JSON object ({error}); re-save the model") from error
    if model_type != "instructblip":
        raise ExploreError(f"{config_file}: model_type is {model_type!r}, expected 'instructblip'")
    if not list(folder.glob("*.safetensors")):
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise refuse_pickles(f"model folder {folder}", pickles)
        raise ExploreError(f"model folder {folder} has no .safetensors weights; save it with save_model")
    return folder


def _dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """Default float32 (diffusers-style: speed-ups are opt-in); accept a torch dtype or its name."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; expected one of: {', '.join(DTYPES)}")
    return DTYPES[dtype]
