"""What a model costs: parameters, bytes on disk and in memory, FLOPs and CPU latency per example.

FLOPs come from ``torch.utils.flop_counter.FlopCounterMode`` over one forward pass with labels
(teacher forcing), so they count the whole model once per example: ViT, Q-Former, projection
and the language model over the prompt and the answer.

Peak memory of generation (:func:`peak_memory`) is the most bytes of tensors alive at once beyond
those alive before (activations, KV cache, outputs): on CUDA from the caching allocator's
``max_memory_allocated``; on CPU, where torch keeps no such counter, from :class:`TensorMemoryTracker`,
which sees every tensor an aten op creates. The process's peak RSS (``ru_maxrss``) was not used:
measured on the embedded model, a first batch of 1 raised it by 18 MB (libraries and caches
warming up; the tracker: 0.5 MB), and a batch of 8 run twice raised it by 7.9 MB, then by 0
(freed memory stays in the process; the tracker: 3.9 MB both times).
"""

from __future__ import annotations

import weakref
from pathlib import Path

import torch
import torch.utils.benchmark as benchmark
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor

from explore.data.example import Example
from explore.models.collate import collate, to_model
from explore.models.generate import generate_answers


def parameter_counts(model: InstructBlipForConditionalGeneration) -> dict[str, int]:
    """Total, non-embedding (without the LM's token embeddings and output head) and trainable."""
    total = sum(p.numel() for p in model.parameters())
    lm = model.language_model
    embedding_params = {id(p): p for m in (lm.get_input_embeddings(), lm.get_output_embeddings()) if m is not None
                        for p in m.parameters()}  # fmt: skip  (tied weights counted once)
    return {
        "total": total,
        "non_embedding": total - sum(p.numel() for p in embedding_params.values()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def disk_bytes(folder: str | Path) -> int:
    """Bytes of the weight files (``*.safetensors``) in a saved model folder."""
    return sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))


@torch.no_grad()
def flops_per_example(model, processor: InstructBlipProcessor, examples: list[Example], max_length: int = 64) -> float:
    """Mean forward FLOPs per example (teacher-forced on ``answers[0]``)."""
    batch = collate(examples, processor, with_labels=True, max_length=max_length,
                    decoder_only=bool(model.config.use_decoder_only_language_model))  # fmt: skip
    batch = to_model(batch, model)
    counter = FlopCounterMode(display=False)
    with counter:
        model(**batch)
    return counter.get_total_flops() / len(examples)


@torch.inference_mode()
def latency_per_example(model, processor, examples: list[Example], *, batch_size: int, max_new_tokens: int = 10,
                        warmup: int = 1, min_run_time: float = 0.2) -> float:  # fmt: skip
    """Seconds per example to generate answers for ``examples`` in batches of ``batch_size``: the fastest of
    the whole passes that ``torch.utils.benchmark.Timer.blocked_autorange`` times until ``min_run_time``
    seconds are spent (at least one; noise on a shared CPU only ever adds time), at the process's thread
    count, after ``warmup`` untimed batches."""
    batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    for batch in batches[:warmup]:
        generate_answers(model, processor, batch, max_new_tokens=max_new_tokens)

    def one_pass() -> None:
        for batch in batches:
            generate_answers(model, processor, batch, max_new_tokens=max_new_tokens)

    timer = benchmark.Timer(stmt="one_pass()", globals={"one_pass": one_pass}, num_threads=torch.get_num_threads())
    return min(timer.blocked_autorange(min_run_time=min_run_time).times) / len(examples)


@torch.inference_mode()
def interleaved_latency(models: dict[str, tuple], examples: list[Example], *, batch_sizes: list[int], rounds: int = 3,
                        max_new_tokens: int = 10, min_run_time: float = 0.0) -> dict[str, dict[int, float]]:  # fmt: skip
    """Seconds per example to generate answers for ``examples`` with every model of ``models`` (name → (model,
    processor)) at every batch size, measured side by side in one pass.

    Each model first runs one untimed pass per batch size (its first use pays one-time costs). Then in each of
    ``rounds`` rounds every model is timed once per batch size, round-robin, the first model moving by one each
    round: ``torch.utils.benchmark.Timer.blocked_autorange`` runs one untimed pass over
    ``examples`` (its block-size estimate, which also warms the model up) and then timed passes until
    ``min_run_time`` seconds are spent (at least one). A slow spell of a shared machine then falls on every model
    in turn, not on whichever one happened to be timed during it, so ratios between the models are fair when
    each model keeps the median over the rounds (:func:`statistics.median` of the returned lists).

    Returns ``{name: {batch_size: [seconds per example of its median pass, one per round]}}``; raises
    ValueError for ``rounds`` < 1.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    names = list(models)
    timers = {}
    for name, (model, processor) in models.items():
        for batch_size in batch_sizes:
            batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]

            def one_pass(model=model, processor=processor, batches=batches) -> None:
                for batch in batches:
                    generate_answers(model, processor, batch, max_new_tokens=max_new_tokens)

            one_pass()  # the first use of a model pays one-time costs (allocations, kernel choices): not timed
            timers[name, batch_size] = benchmark.Timer(stmt="one_pass()", globals={"one_pass": one_pass},
                                                       num_threads=torch.get_num_threads())  # fmt: skip
    medians: dict[tuple[str, int], list[float]] = {key: [] for key in timers}
    for round_index in range(rounds):
        start = round_index % len(names)
        for name in names[start:] + names[:start]:
            for batch_size in batch_sizes:
                measurement = timers[name, batch_size].blocked_autorange(min_run_time=min_run_time)
                medians[name, batch_size].append(measurement.median / len(examples))
    return {name: {b: medians[name, b] for b in batch_sizes} for name in names}


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters and buffers as stored: quantized tensors count their packed
    data and scales (``get_memory_footprint`` counts a torchao int8 weight as float32)."""
    seen: set[int] = set()  # tied weights counted once
    total = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) not in seen:
            seen.add(id(tensor))
            total += _tensor_bytes(tensor)
    return total


def _tensor_bytes(tensor: torch.Tensor) -> int:
    if hasattr(tensor, "__tensor_flatten__"):  # a tensor subclass (torchao): sum its inner tensors
        names, _ = tensor.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(tensor, name)) for name in names if getattr(tensor, name) is not None)
    return tensor.numel() * tensor.element_size()


class TensorMemoryTracker(TorchDispatchMode):
    """Count bytes of CPU or CUDA tensors alive at once among those created inside the ``with`` block.

    Every aten op's outputs are seen; a storage that no input shares is new and counts until it is
    freed (a weak reference to its storage). ``peak_bytes`` is the most counted at once. Not seen:
    memory outside tensors (Python objects, oneDNN scratch space, allocator rounding and
    fragmentation) and temporaries inside a tensor subclass's own dispatch (e.g. torchao's).
    """

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}  # storage id -> bytes
        self.now_bytes = 0
        self.peak_bytes = 0

    def _release(self, key: int) -> None:
        self.now_bytes -= self.live.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if type(t) is torch.Tensor}
        for tensor in tree_flatten(out)[0]:
            if type(tensor) is not torch.Tensor or tensor.device.type == "meta":
                continue  # subclasses are counted through the plain tensors inside them
            storage = tensor.untyped_storage()
            key = storage._cdata
            if key in inputs or key in self.live:
                continue  # a view, an in-place result, or already counted
            self.live[key] = storage.nbytes()
            self.now_bytes += storage.nbytes()
            self.peak_bytes = max(self.peak_bytes, self.now_bytes)
            weakref.finalize(storage, self._release, key)
        return out


@torch.inference_mode()
def peak_memory(model, processor, examples: list[Example], *, max_new_tokens: int = 10) -> dict[str, int]:
    """Memory of generating answers for ``examples`` as one batch, in bytes.

    Returns ``weights`` (:func:`weight_bytes`) and ``peak_generation``: the most bytes of tensors
    alive at once during ``generate`` beyond those alive before it (CUDA: ``max_memory_allocated``;
    CPU: :class:`TensorMemoryTracker`; see the module docstring for what each leaves out).
    """
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
        torch.cuda.reset_peak_memory_stats(model.device)
        before = torch.cuda.memory_allocated(model.device)
        generate_answers(model, processor, examples, max_new_tokens=max_new_tokens)
        torch.cuda.synchronize(model.device)
        peak = torch.cuda.max_memory_allocated(model.device) - before
    else:
        with TensorMemoryTracker() as tracker:
            generate_answers(model, processor, examples, max_new_tokens=max_new_tokens)
        peak = tracker.peak_bytes
    return {"weights": weight_bytes(model), "peak_generation": peak}
