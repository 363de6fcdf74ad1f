"""Recovery fine-tuning: adapters (LoRA, DoRA, IA3, QLoRA) or full tuning of chosen components.

The public API is five functions (the adapter's own in :mod:`explore.adapt.adapters`, also importable from here)::

    result = finetune(model, processor, config)              # train; result.model is a PeftModel (or the model, full)
    save_adapter(result.model, folder, processor)            # adapter_config.json + adapter_model.safetensors
    peft_model = load_adapter(base_model, folder)            # the adapter back onto a base model
    plain = merge_adapter(result.model)                      # an ordinary InstructBlipForConditionalGeneration
    save_model(plain, processor, folder)                     # (explore.models.loading) a normal HF folder

A long fine-tune can be interrupted and resumed: with ``checkpoint_dir`` it writes an atomic
checkpoint every ``config.checkpoint_every`` steps (the trainable weights, the optimizer, the
scheduler, the RNG states, the data position and the losses so far), and ``resume="latest"``
continues from the newest one to the weights an uninterrupted run would end with.

Generation works on the wrapped model as on a plain one (``generate_answers(result.model, ...)``):
peft forwards ``generate`` and ``config`` to the InstructBLIP inside. Merging first makes
inference a little faster, since the adapter layers disappear.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import InstructBlipForConditionalGeneration, InstructBlipProcessor, get_scheduler

from explore.adapt.adapters import (  # noqa: F401  (the public API, here too)
    QLORA_NEEDS_CUDA,
    base_model,
    load_adapter,
    merge_adapter,
    prepare_model,
    save_adapter,
)
from explore.adapt.config import FinetuneConfig
from explore.adapt.distill import TeacherAnswers, answer_logits, distillation_loss, same_answer_tokens
from explore.adapt.layerwise import eager_attention, forward_options, layerwise_loss
from explore.data.example import Example
from explore.errors import ConfigError, ExploreError
from explore.models.collate import collate
from explore.runs import model_fingerprint as weights_fingerprint
from explore.train.checkpoint import (
    check_run,
    find_checkpoint,
    load_optimizer_states,
    read_state,
    restore_rng,
    save_checkpoint,
)
from explore.train.loop import training_progress
from explore.train.step import optimizer_step
from explore.train.stream import WorldStream
from explore.world.scene import SceneSpec

SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}  # ours → transformers'
TRAINABLE_FILE = "trainable.safetensors"  # in a checkpoint: every parameter the optimizer updates, by name


class BatchSource(Protocol):
    """Anything that gives training batches by position, like :class:`~explore.train.stream.WorldStream`."""

    def batch(self, start: int, size: int) -> list[Example]: ...


@dataclass
class _Checkpoints:
    """Where and how often ``_train`` saves checkpoints, and the one it resumes from."""

    root: Path | None  # the checkpoints folder; None: no checkpoints
    every: int  # steps between checkpoints (0: none)
    resume_from: Path | None  # a complete checkpoint to continue from
    run: dict  # what a checkpoint must match to be resumed (see explore.train.checkpoint.check_run)


@dataclass
class FinetuneResult:
    """What a fine-tune returns: the trained model and a small log."""

    model: nn.Module  # a PeftModel (lora / dora / ia3 / qlora) or the InstructBLIP itself (full)
    config: FinetuneConfig  # the config it ran with
    losses: list[float] = field(default_factory=list)  # training loss per step (the CE / KL mix with a teacher)
    task_losses: list[float] = field(default_factory=list)  # cross-entropy on the answers, per step
    distill_losses: list[float] = field(default_factory=list)  # KL(teacher ‖ student) per step; empty without one
    layerwise_losses: list[float] = field(default_factory=list)  # weighted hidden + attention transfer per step
    trainable_parameters: int = 0  # parameters the optimizer updated
    total_parameters: int = 0  # all parameters of the (wrapped) model, adapters included
    seconds: float = 0.0  # wall time of the training loop

    def summary(self) -> dict:
        """A JSON-ready digest: loss at the start and the end (means over the first / last tenth of the steps)."""
        window = max(1, len(self.losses) // 10)

        def mean(values: list[float]) -> float | None:
            return round(sum(values) / len(values), 5) if values else None

        return {
            "method": self.config.method,
            "components": list(self.config.components),
            "steps": len(self.losses),
            "loss_start": mean(self.losses[:window]),
            "loss_end": mean(self.losses[-window:]),
            "task_loss_start": mean(self.task_losses[:window]),
            "task_loss_end": mean(self.task_losses[-window:]),
            "distill_loss_start": mean(self.distill_losses[:window]),
            "distill_loss_end": mean(self.distill_losses[-window:]),
            "layerwise_loss_start": mean(self.layerwise_losses[:window]),
            "layerwise_loss_end": mean(self.layerwise_losses[-window:]),
            "trainable_parameters": self.trainable_parameters,
            "total_parameters": self.total_parameters,
            "seconds": round(self.seconds, 2),
        }


def finetune(
    model: InstructBlipForConditionalGeneration,
    processor: InstructBlipProcessor,
    config: FinetuneConfig,
    *,
    teacher: InstructBlipForConditionalGeneration | None = None,
    teacher_processor: InstructBlipProcessor | None = None,
    data: BatchSource | None = None,
    progress: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: str | None = None,
    teacher_answers: TeacherAnswers | None = None,
) -> FinetuneResult:
    """Fine-tune ``model`` with ``config`` on the shapes world (or ``data``) and return the result.

    Args:
        model: the (compressed) model to recover, in float32 or bfloat16, on its training device.
            It is changed in place (adapters injected, or weights trained); deep-copy it to keep it.
        processor: the model's processor.
        config: method, components, schedule, data mix, distillation.
        teacher: the original model, needed when ``config.distill_weight > 0``; it stays frozen.
        teacher_processor: the teacher's processor when it differs from ``processor`` (another
            query count or image size); its LM tokenizer must be the student's.
        data: batches by position (default: :class:`WorldStream` with the config's task mix, its
            images rendered at each model's own resolution).
        progress: show a progress bar (a line every tenth of the run when stderr is not a terminal).
        checkpoint_dir: where to write a resumable checkpoint every ``config.checkpoint_every``
            steps and at the end (``step-NNNNNNN`` folders, only the newest kept); None: none.
        resume: ``"latest"`` (the newest complete checkpoint in ``checkpoint_dir``) or a checkpoint
            folder. ``model`` must be the same base model as in the interrupted run; the adapter (or
            the tuned weights), optimizer, scheduler, RNG and data position come from the checkpoint.
        teacher_answers: the teacher's answer logits by data position, shared with other fine-tunes of the
            same ``config`` and ``teacher`` on the same data (the caller's promise): read where present,
            filled where not, so the teacher runs once per batch for all of them (same result).

    Returns:
        A :class:`FinetuneResult` whose ``model`` is a PeftModel (adapter methods) or ``model`` (full),
        in eval mode; after a resume its losses cover the whole run.

    Raises:
        ExploreError: a non-finite loss or gradient (the last good checkpoint is kept), qlora without
        CUDA, a float16 model, a teacher missing (or given without ``distill_weight``), teacher and
        student that do not line up, or a checkpoint that is missing or was written with another
        config, base model or teacher.
    """
    if config.method == "qlora" and not torch.cuda.is_available():
        raise ExploreError(QLORA_NEEDS_CUDA)
    if model.dtype == torch.float16:
        raise ExploreError("finetune does not scale the loss, so float16 training would underflow; "
                           "load the model in float32 or bfloat16")  # fmt: skip
    distilling = config.needs_teacher
    if distilling and teacher is None:
        raise ConfigError(f"distill_weight is {config.distill_weight} (hidden {config.distill_hidden_weight}, attention "
                          f"{config.distill_attention_weight}) but no teacher was given; pass the original model as "
                          "teacher (CLI: --distill-from) or set the distill weights to 0")  # fmt: skip
    if teacher is not None and not distilling:
        raise ConfigError("a teacher was given but distill_weight is 0 (and so are distill_hidden_weight and "
                          "distill_attention_weight); set one of them > 0 to distil from it")  # fmt: skip
    if teacher is model:
        raise ExploreError("the teacher is the student itself; finetune changes the student, so pass a copy "
                           "(copy.deepcopy) of the original model as teacher")  # fmt: skip
    teacher_processor = teacher_processor or processor
    _check_queries(model, processor, "student")
    if teacher is not None:
        _check_queries(teacher, teacher_processor, "teacher")
        if (
            teacher_processor is not processor
            and teacher_processor.tokenizer.get_vocab() != processor.tokenizer.get_vocab()
        ):
            raise ExploreError("distillation needs the teacher and the student to share one LM tokenizer; "
                               "their vocabularies differ")  # fmt: skip
        teacher.eval()

    root = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume is not None and root is None and resume == "latest":
        raise ExploreError("resume='latest' needs checkpoint_dir, the folder the checkpoints were written to")
    resume_from = find_checkpoint(resume, root or Path(resume).parent) if resume is not None else None
    run = {}
    if root is not None or resume_from is not None:
        run = {"kind": "finetune", "config": {"finetune": config.model_dump(), "base_model": model_fingerprint(model),
                                              "teacher": model_fingerprint(teacher) if teacher is not None else None}}  # fmt: skip
    if resume_from is not None:
        check_run(resume_from, run)  # before any work: a mismatch is a one-line error
    checkpoints = _Checkpoints(root, config.checkpoint_every if root is not None else 0, resume_from, run)

    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):  # adapter init and dropout draw from the global RNG
        torch.manual_seed(config.seed)
        trained = prepare_model(model, config)
        return _train(trained, processor, config, teacher, teacher_processor, data, progress, checkpoints,
                      teacher_answers)  # fmt: skip


def model_fingerprint(model: nn.Module, samples: int = 4096) -> dict:
    """A short identity of a model: its architecture and a hash of every tensor's name, shape, dtype and
    the bytes of ``samples`` evenly spaced values (exact, cheap even for billions of weights, and the
    same whatever the thread count; another checkpoint of the same architecture gives another hash)."""
    config = getattr(model, "config", None)
    architecture = _without_paths(config.to_dict()) if config is not None else None
    return {"architecture": json.loads(json.dumps(architecture, default=str)),
            "weights": weights_fingerprint(model, samples)}  # fmt: skip


def _without_paths(value):
    """A model config without the keys that name where or how it was loaded (a moved folder is the same model)."""
    ignored = ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures")
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if k not in ignored}
    return value


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def _write_trainable(model: nn.Module, folder: Path) -> None:
    """A finetune checkpoint's weights: every trainable parameter (the adapter, or the tuned components)."""
    save_file({name: p.detach().cpu().contiguous() for name, p in _trainable(model).items()}, folder / TRAINABLE_FILE)


def _load_trainable(model: nn.Module, checkpoint: Path) -> None:
    """Put the trainable weights saved in ``checkpoint`` into ``model``: every one, by name, finite, or an error."""
    path = checkpoint / TRAINABLE_FILE
    if not path.is_file():
        raise ExploreError(f"checkpoint {checkpoint} has no {TRAINABLE_FILE}; it is not a finetune checkpoint")
    saved, params = load_file(path), _trainable(model)
    if saved.keys() != params.keys():
        extra, missing = sorted(saved.keys() - params.keys()), sorted(params.keys() - saved.keys())
        raise ExploreError(f"checkpoint {checkpoint} does not fit this model: {len(missing)} trainable weights "
                           f"missing (e.g. {missing[:2]}), {len(extra)} unexpected (e.g. {extra[:2]})")  # fmt: skip
    with torch.no_grad():
        for name, param in params.items():
            value = saved[name]
            if value.shape != param.shape or not torch.isfinite(value).all():
                problem = "contains NaN or Inf" if value.shape == param.shape else f"has shape {tuple(value.shape)}"
                raise ExploreError(f"checkpoint {checkpoint}: weight {name!r} {problem}; use an earlier checkpoint")
            param.copy_(value)


def _train(model: nn.Module, processor: InstructBlipProcessor, config: FinetuneConfig,
           teacher: InstructBlipForConditionalGeneration | None, teacher_processor: InstructBlipProcessor,
           data: BatchSource | None, progress: bool, checkpoints: _Checkpoints,
           teacher_answers_cache: TeacherAnswers | None = None) -> FinetuneResult:  # fmt: skip
    base = base_model(model)
    device = base.device
    pixel_dtype = _pixel_dtype(model)
    decoder_only = bool(base.config.use_decoder_only_language_model)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ExploreError(f"method {config.method} on {config.components} left nothing to train")
    optimizer = torch.optim.AdamW(
        [{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
         {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],  # biases, norms, IA3 / DoRA vectors
        lr=config.lr,
    )  # fmt: skip
    scheduler = get_scheduler(SCHEDULES[config.schedule], optimizer, num_warmup_steps=config.warmup_steps,
                              num_training_steps=config.steps)  # fmt: skip
    stream, teacher_stream = data, None
    if stream is None:
        stream = _world_stream(config, _resolution(processor))
        if teacher is not None and _resolution(teacher_processor) != _resolution(processor):
            teacher_stream = _world_stream(config, _resolution(teacher_processor))  # same scenes, its own renders
    teacher_decoder_only = bool(teacher.config.use_decoder_only_language_model) if teacher is not None else False

    result = FinetuneResult(model=model, config=config, trainable_parameters=sum(p.numel() for p in params),
                            total_parameters=sum(p.numel() for p in model.parameters()))  # fmt: skip
    interactive = progress and sys.stderr.isatty()
    every = max(1, config.steps // 10)
    position, done = config.data_start, 0
    if checkpoints.resume_from is not None:
        state = read_state(checkpoints.resume_from)
        _load_trainable(model, checkpoints.resume_from)
        load_optimizer_states(checkpoints.resume_from, optimizer, scheduler)
        position, done = state["position"], state["step"]
        result.losses, result.task_losses = state["losses"], state["task_losses"]
        result.distill_losses = state["distill_losses"]
        result.layerwise_losses = state.get("layerwise_losses", [])  # absent in checkpoints from before it existed
        restore_rng(checkpoints.resume_from)  # last: nothing may draw from the RNG between here and step done + 1
    model.train()
    started = time.perf_counter()
    layerwise = teacher is not None and (config.distill_hidden_weight > 0 or config.distill_attention_weight > 0)
    options = forward_options(hidden=layerwise and config.distill_hidden_weight > 0,
                              attention=layerwise and config.distill_attention_weight > 0)  # fmt: skip
    eager = eager_attention(base_model(model), teacher) if options.get("output_attentions") else nullcontext()
    with training_progress(interactive) as bar, eager:
        task = bar.add_task(f"{config.method} {'+'.join(config.components)}", total=config.steps, completed=done,
                            loss=float("nan"), rate=0.0)  # fmt: skip
        for step in range(done + 1, config.steps + 1):
            examples = stream.batch(position, config.batch_size)
            batch = _inputs(examples, processor, config, decoder_only, device, pixel_dtype)
            output = model(**batch, **options)
            loss = output.loss
            result.task_losses.append(loss.item())
            if teacher is not None:
                cached = teacher_answers_cache is not None and not layerwise  # layer-wise terms need the teacher's run
                kept_answers = teacher_answers_cache.get(position) if cached else None
                if kept_answers is None:
                    teacher_examples = teacher_stream.batch(position, config.batch_size) if teacher_stream else examples
                    teacher_batch = _inputs(teacher_examples, teacher_processor, config, teacher_decoder_only,
                                            base_model(teacher).device, _pixel_dtype(teacher))  # fmt: skip
                    teacher_labels = teacher_batch["labels"].cpu()
                else:
                    teacher_answers, teacher_labels = kept_answers
                if not same_answer_tokens(batch["labels"].cpu(), teacher_labels):
                    raise ExploreError(f"distillation: at step {step} the teacher's answer tokens differ from the "
                                       "student's; both need the same LM tokenizer")  # fmt: skip
                if kept_answers is None:
                    with torch.no_grad():
                        teacher_output = teacher(**teacher_batch, **options)
                        teacher_logits = teacher_output.logits
                    teacher_answers = answer_logits(
                        teacher_logits, teacher_batch["labels"], decoder_only=teacher_decoder_only
                    )
                    if cached:
                        teacher_answers_cache.put(position, teacher_answers, teacher_labels)
                student_answers = answer_logits(output.logits, batch["labels"], decoder_only=decoder_only)
                weight, temperature = config.distill_weight, config.distill_temperature
                teacher_answers = teacher_answers.to(student_answers.device)
                loss, kl = distillation_loss(
                    loss, student_answers, teacher_answers, weight=weight, temperature=temperature
                )
                result.distill_losses.append(kl.item())
                if layerwise:
                    transfer = layerwise_loss(output, batch, base_model(model), teacher_output, teacher_batch, teacher,
                                              hidden_weight=config.distill_hidden_weight,
                                              attention_weight=config.distill_attention_weight)  # fmt: skip
                    loss = loss + transfer
                    result.layerwise_losses.append(transfer.item())
            kept = f"; the last good checkpoint is kept in {checkpoints.root}" if checkpoints.every else ""
            if not torch.isfinite(loss):
                raise ExploreError(f"non-finite loss {loss.item()} at fine-tuning step {step} ({config.method})"
                                   f"{kept}; lower lr or raise warmup_steps")  # fmt: skip
            optimizer_step(loss, optimizer, scheduler, params, max_norm=config.grad_clip,
                           nonfinite_message=f"non-finite gradient norm at fine-tuning step {step} "
                                             f"({config.method}){kept}; lower lr")  # fmt: skip
            position += config.batch_size
            result.losses.append(loss.item())
            if checkpoints.every and (step % checkpoints.every == 0 or step == config.steps):
                state = {"step": step, "position": position, "losses": result.losses,
                         "task_losses": result.task_losses, "distill_losses": result.distill_losses,
                         "layerwise_losses": result.layerwise_losses}  # fmt: skip
                save_checkpoint(checkpoints.root, step, write_weights=partial(_write_trainable, model),
                                optimizer=optimizer, scheduler=scheduler, state=state, run=checkpoints.run)  # fmt: skip
            rate = (step - done) * config.batch_size / (time.perf_counter() - started)
            bar.update(task, advance=1, loss=loss.item(), rate=rate)
            if progress and not interactive and (step % every == 0 or step == 1):
                print(
                    f"step {step}/{config.steps} loss {loss.item():.4f} ({rate:.1f} ex/s)", file=sys.stderr, flush=True
                )
    result.seconds = time.perf_counter() - started
    model.eval()
    return result


def _pixel_dtype(model: nn.Module) -> torch.dtype:
    """The dtype the ViT's patch embedding expects its pixels in."""
    return base_model(model).vision_model.embeddings.patch_embedding.weight.dtype


def _check_queries(model: InstructBlipForConditionalGeneration, processor: InstructBlipProcessor, role: str) -> None:
    queries = model.config.num_query_tokens
    if processor.num_query_tokens != queries:
        raise ExploreError(f"the {role}'s processor inserts {processor.num_query_tokens} <image> placeholders but "
                           f"the {role} has {queries} query tokens; pass the processor that belongs to it")  # fmt: skip


def _resolution(processor: InstructBlipProcessor) -> int:
    return int(processor.image_processor.size["height"])


def _world_stream(config: FinetuneConfig, resolution: int) -> WorldStream:
    return WorldStream(config.tasks, templates=config.templates, resolution=resolution, world_seed=config.world_seed,
                       spec=SceneSpec(max_objects=config.max_objects))  # fmt: skip


def _inputs(examples: list[Example], processor: InstructBlipProcessor, config: FinetuneConfig, decoder_only: bool,
            device: torch.device, pixel_dtype: torch.dtype) -> dict[str, torch.Tensor]:  # fmt: skip
    batch = collate(examples, processor, with_labels=True, max_length=config.max_length, decoder_only=decoder_only)
    batch = {name: tensor.to(device) for name, tensor in batch.items()}
    batch["pixel_values"] = batch["pixel_values"].to(pixel_dtype)
    return batch

