"""Pretraining: build a from-scratch InstructBLIP and train it on the shapes world in stages.

The loop runs on ``accelerate`` (``accelerate launch explore pretrain ...`` spreads it over
processes; each process takes its own slice of every global batch). Each stage trains the
components it names with AdamW, warm-up and a cosine / linear / constant schedule; validation
runs every ``eval.every`` steps; checkpoints are atomic and resumable (``--resume latest``).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from transformers import get_scheduler

from explore.data.judge_prompt import prompt_words
from explore.errors import ExploreError
from explore.eval.world import evaluate_world
from explore.models.build import build_model, build_processor, count_parameters
from explore.models.collate import collate
from explore.models.loading import load_model, save_model, save_processor
from explore.models.presets import get_preset
from explore.models.tokenizer import build_word_tokenizer
from explore.runs import append_jsonl, rewind_jsonl, write_run_info
from explore.train.attributes import AttributeHead, attribute_targets
from explore.train.checkpoint import (
    RUN_FILE,
    check_run,
    find_checkpoint,
    load_optimizer_states,
    read_state,
    refuse_fresh_start,
    restore_rng,
    save_checkpoint,
)
from explore.train.config import OFFICIAL_JUDGE_TASKS, DataSection, ModelSection, StageSection, TrainConfig
from explore.train.consistency import colour_consistency_loss
from explore.train.objects import ObjectHeads, object_scenes, objects_loss, pixels, validate_objects
from explore.train.slots import (
    DIFFERENCE_HEAD_FILE,
    SLOT_HEAD_FILE,
    DifferenceHead,
    SlotHead,
    answer_differences,
    answer_slots,
    slot_token_ids,
)
from explore.train.step import optimizer_step
from explore.train.stream import WorldStream
from explore.world.judge import reason_words
from explore.world.scene import HELD_OUT_PAIRS, SceneSpec
from explore.world.vocabulary import vocabulary


@dataclass
class TrainerState:
    """Where pretraining stands: enough to continue exactly where it stopped."""

    global_step: int = 0  # optimizer steps done in all stages
    stage: int = 0  # index of the current stage
    stage_step: int = 0  # optimizer steps done in the current stage
    data_position: int = 0  # index of the next training example in the world stream


def run_identity(config: TrainConfig) -> dict:
    """What a checkpoint must agree with to be resumed: the parts of the config that decide the weights
    (not eval, checkpoint_every or output_dir)."""
    return {"kind": "pretrain", "config": config.model_dump(include={"seed", "model", "data", "stages"})}


def resume_identity(config: TrainConfig, checkpoint: Path) -> dict:
    """The identity a checkpoint is checked against on resume. A recipe may be *extended*: when the
    checkpoint's config has fewer stages and has finished them, the new config's first stages must equal
    them and the added stages run after (the weights of finished stages do not depend on later ones)."""
    identity = run_identity(config)
    path = checkpoint / RUN_FILE
    saved = json.loads(path.read_text()) if path.is_file() else {}
    saved_stages = (saved.get("config") or {}).get("stages")
    state = read_state(checkpoint) if isinstance(saved_stages, list) else None
    if state and len(saved_stages) < len(config.stages):
        finished = state["stage"] == len(saved_stages) - 1 and state["stage_step"] >= saved_stages[-1]["steps"]
        if finished:
            identity["config"]["stages"] = identity["config"]["stages"][: len(saved_stages)]
    if saved.get("config"):
        _drop_later_defaults(identity["config"], saved["config"])
    return identity


def _drop_later_defaults(now: dict, saved: dict) -> None:
    """Drop from ``now`` each section key that the checkpoint's config lacks and that holds its default: a
    field added to explore after the checkpoint was written keeps the old behaviour at its default (every new
    option does), so it does not make the run another one."""
    sections = {"model": ModelSection, "data": DataSection}
    pairs = [(now.get(name), saved.get(name), model) for name, model in sections.items()]
    pairs += [(a, b, StageSection) for a, b in zip(now.get("stages") or [], saved.get("stages") or [])]
    for current, old, model in pairs:
        if not isinstance(current, dict) or not isinstance(old, dict):
            continue
        for key in [k for k in current if k not in old and k in model.model_fields]:
            if current[key] == model.model_fields[key].default:
                del current[key]


def _component_module(model, component: str) -> torch.nn.Module:
    return {"vision": model.vision_model, "qformer": model.qformer, "projection": model.language_projection,
            "lm": model.language_model}[component]  # fmt: skip


def component_parameters(model, component: str) -> list[torch.nn.Parameter]:
    """The parameters of one InstructBLIP component (vision / qformer / query_tokens / projection / lm)."""
    if component == "query_tokens":
        return [model.query_tokens]
    return list(_component_module(model, component).parameters())


def component_state_names(model, components: list[str]) -> set[str]:
    """The state-dict names of ``components``' parameters and buffers (tied tensors under every name they have)."""
    tensors = []
    for component in components:
        if component == "query_tokens":
            tensors.append(model.query_tokens)
        else:
            module = _component_module(model, component)
            tensors += [*module.parameters(), *module.buffers()]
    pointers = {t.data_ptr() for t in tensors}
    return {name for name, tensor in model.state_dict().items() if tensor.data_ptr() in pointers}


def set_trainable(model, components: list[str]) -> list[torch.nn.Parameter]:
    """Freeze everything except ``components``; return the trainable parameters."""
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for component in components:
        for p in component_parameters(model, component):
            if not p.requires_grad:
                p.requires_grad_(True)
                params.append(p)
    return params


def _make_optimizer(model, stage: StageSection, extra: list[torch.nn.Parameter] = ()):
    params = set_trainable(model, stage.trainable) + list(extra)
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]  # biases, LayerNorm weights
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": stage.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=stage.lr,
    )
    if stage.schedule == "constant":
        scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=stage.warmup_steps)
    elif stage.schedule == "cosine":
        scheduler = get_scheduler("cosine_with_min_lr", optimizer, num_warmup_steps=stage.warmup_steps,
                                  num_training_steps=stage.steps, scheduler_specific_kwargs={"min_lr_rate": stage.min_lr_ratio})  # fmt: skip
    else:
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_with_floor(stage))
    return optimizer, scheduler


def _linear_with_floor(stage: StageSection):
    def factor(step: int) -> float:
        if step < stage.warmup_steps:
            return (step + 1) / stage.warmup_steps
        progress = (step - stage.warmup_steps) / max(1, stage.steps - stage.warmup_steps)
        return max(stage.min_lr_ratio, 1.0 - progress * (1.0 - stage.min_lr_ratio))

    return factor


def training_progress(enabled: bool) -> Progress:
    """The bar of a training loop: steps, loss, examples/s, elapsed and remaining time."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("{task.fields[rate]:.1f} ex/s"),
        TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled,
    )  # fmt: skip


def _log(run_dir: Path, record: dict) -> None:
    append_jsonl(run_dir / "train_log.jsonl", [record])  # fsync-ed; a line cut by a kill is truncated first


def judge_words() -> list[str]:
    """Words a generative judge reads and writes beyond the world's: the official VL-RewardBench prompt
    and the judge reasons (``data.judge_vocabulary``)."""
    return sorted(set(prompt_words()) | set(reason_words()))


def build_fresh(config: TrainConfig):
    """The model and processor a config starts from: freshly initialised, then, with
    ``model.init_from``, the weights of that folder copied in (:func:`copy_weights`)."""
    words = vocabulary()
    extra = judge_words() if config.data.judge_vocabulary else ()
    tokenizer = build_word_tokenizer(words, extra_words=extra)
    qformer_tokenizer = build_word_tokenizer(words, image_token=False, extra_words=extra)
    preset = get_preset(config.model.preset)
    model = build_model(preset, tokenizer, seed=config.model.seed)
    processor = build_processor(preset, tokenizer, qformer_tokenizer)
    if config.model.init_from is not None:
        source, source_processor = load_model(config.model.init_from)
        for name in ("tokenizer", "qformer_tokenizer"):
            old, new = getattr(source_processor, name).get_vocab(), getattr(processor, name).get_vocab()
            moved = sorted(word for word, index in old.items() if new.get(word) != index)
            if moved:
                raise ExploreError(f"model.init_from {config.model.init_from}: its {name} gives other ids to "
                                   f"{moved[:5]}; it was trained on another vocabulary")  # fmt: skip
        components = config.model.init_components
        copy_weights(source, model, only=None if components is None else component_state_names(model, components))
    return model, processor


@torch.no_grad()
def copy_weights(source, target, only: set[str] | None = None) -> None:
    """Copy every tensor of ``source`` (with ``only``: the tensors of those names) into the same-named tensor of
    ``target``. Where ``target``'s first dimension is larger (a longer vocabulary, more position embeddings) the
    old rows are copied and the new rows keep their initialisation. Any other difference is an
    :class:`ExploreError`."""
    target_state = target.state_dict()
    for name, tensor in source.state_dict().items():
        if only is not None and name not in only:
            continue
        if name not in target_state:
            raise ExploreError(f"model.init_from: the new model has no tensor {name!r}; use the same preset family")
        goal = target_state[name]
        if goal.shape == tensor.shape:
            goal.copy_(tensor)
        elif goal.dim() == tensor.dim() and goal.shape[1:] == tensor.shape[1:] and goal.shape[0] > tensor.shape[0]:
            goal[: tensor.shape[0]].copy_(tensor)
        else:
            raise ExploreError(f"model.init_from: tensor {name!r} has shape {tuple(tensor.shape)}, the new model "
                               f"{tuple(goal.shape)}; only a larger first dimension can be grown")  # fmt: skip


def pretrain(config: TrainConfig, *, resume: str | None = None, progress: bool = True) -> Path:
    """Train ``config`` to completion and save the final model to ``<output_dir>/model``.

    With ``resume`` (``"latest"`` or a ``checkpoints/step-*`` folder) training continues from a
    checkpoint and ends with the weights an uninterrupted run would have (same machine). The
    global torch RNG is seeded with ``config.seed`` inside and restored afterwards.

    Returns the folder of the final model. Raises ExploreError on a non-finite loss or gradient
    (the last good checkpoint is kept) or a resume problem (no checkpoint, another config).
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        return _pretrain(config, resume, progress)


def _pretrain(config: TrainConfig, resume: str | None, progress: bool) -> Path:
    run_dir = Path(config.output_dir)
    if resume is None:
        refuse_fresh_start(run_dir / "checkpoints")
    accelerator = Accelerator()
    state = TrainerState()
    checkpoint = None
    if resume is not None:
        checkpoint = find_checkpoint(resume, run_dir / "checkpoints")
        check_run(checkpoint, resume_identity(config, checkpoint))
        state = TrainerState(**read_state(checkpoint))
        model, processor = load_model(checkpoint / "model")  # safetensors only, finite weights checked
        restore_rng(checkpoint)
    else:
        model, processor = build_fresh(config)
    if accelerator.is_main_process:
        # steps after the checkpoint (all of them on a fresh start) are redone: their log lines go, so each
        # step is logged once
        rewind_jsonl(run_dir / "train_log.jsonl", state.global_step)
        write_run_info(run_dir, config.model_dump())
        counts = count_parameters(model)
        accelerator.print(f"model {config.model.preset}: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    model = accelerator.prepare_model(model)
    unwrapped = accelerator.unwrap_model(model)
    decoder_only = bool(unwrapped.config.use_decoder_only_language_model)
    resolution = get_preset(config.model.preset).image_size
    num_processes = accelerator.num_processes
    interactive = progress and sys.stderr.isatty()

    for stage_index, stage in enumerate(config.stages):
        if stage_index < state.stage or (stage_index == state.stage and state.stage_step >= stage.steps):
            continue
        if stage_index > state.stage:
            state.stage, state.stage_step = stage_index, 0
        heads = None
        if stage.objective == "objects":
            heads = _object_heads(unwrapped, config, checkpoint if state.stage_step > 0 else None)
            heads.to(accelerator.device)
        slot_ids = difference_head = None
        if stage.slot_loss or stage.difference_loss:
            if decoder_only:
                raise ExploreError(f"stage {stage.name!r}: slot_loss and difference_loss read a T5 encoder's states; "
                                   "this model's LM is decoder-only: drop them")  # fmt: skip
            slot_ids = slot_token_ids(processor.tokenizer)
        if stage.slot_loss:
            heads = _slot_head(unwrapped, config, checkpoint if state.stage_step > 0 else None)
            heads.to(accelerator.device)
        if stage.difference_loss:
            difference_head = _difference_head(unwrapped, config, checkpoint if state.stage_step > 0 else None)
            difference_head.to(accelerator.device)
        attribute_head = None
        if stage.attribute_loss:
            attribute_head = _attribute_head(unwrapped, config, checkpoint if state.stage_step > 0 else None)
            attribute_head.to(accelerator.device)
        consistency_teacher = None
        if stage.colour_consistency and stage.consistency_target == "init_from":
            consistency_teacher = load_model(config.model.init_from)[0].to(accelerator.device).eval()
            consistency_teacher.requires_grad_(False)
        trained_heads = [head for head in (heads, attribute_head, difference_head) if head is not None]
        head_parameters = [p for head in trained_heads for p in head.parameters()]
        optimizer, scheduler = _make_optimizer(unwrapped, stage, head_parameters)
        if checkpoint is not None and state.stage_step > 0:
            load_optimizer_states(checkpoint, optimizer, scheduler)
        optimizer = accelerator.prepare_optimizer(optimizer)
        spec = SceneSpec(max_objects=stage.max_objects or config.data.max_objects, noise=config.data.noise)
        stream = None
        if stage.objective == "language":
            stream = WorldStream(stage.tasks, templates=stage.templates, resolution=resolution,
                                 world_seed=config.data.world_seed, spec=spec,
                                 relation_sentence=stage.relation_sentence, recoloured_counts=stage.recoloured_counts,
                                 recolour_margin=stage.recolour_margin,
                                 avoid_pairs=HELD_OUT_PAIRS if stage.avoid_held_out_pairs else frozenset())  # fmt: skip
        model.train()
        started, seen = time.perf_counter(), 0
        with training_progress(interactive) as bar:
            task = bar.add_task(
                f"{stage.name}", total=stage.steps, completed=state.stage_step, loss=float("nan"), rate=0.0
            )
            while state.stage_step < stage.steps:
                start = state.data_position + accelerator.process_index * stage.batch_size
                if stream is None:  # objects: the ViT alone, on every object of the batch's scenes
                    scenes = object_scenes("train", start, stage.batch_size, world_seed=config.data.world_seed,
                                           spec=spec)  # fmt: skip
                    loss, _ = objects_loss(unwrapped.vision_model, heads,
                                           pixels(scenes, processor, resolution).to(accelerator.device), scenes)  # fmt: skip
                else:
                    examples = stream.batch(start, stage.batch_size)
                    official = stream.task_of(start) in OFFICIAL_JUDGE_TASKS
                    max_length = config.data.judge_max_length if official else config.data.max_length
                    batch = collate(examples, processor, with_labels=True, max_length=max_length,
                                    decoder_only=decoder_only)  # fmt: skip
                    batch = {k: v.to(accelerator.device) for k, v in batch.items()}
                    if slot_ids is not None and official:
                        outputs = model(**batch)
                        states = outputs.language_model_outputs.encoder_last_hidden_state
                        slots = answer_slots(batch["input_ids"], slot_ids)  # once for both auxiliary losses
                        loss = outputs.loss
                        if stage.slot_loss:
                            loss = loss + stage.slot_loss * heads.loss(states, slots)
                        if difference_head is not None:
                            differences = answer_differences(batch["input_ids"], slots)
                            loss = loss + stage.difference_loss * difference_head.loss(states, differences)
                    elif attribute_head is not None:
                        outputs = model(**batch)
                        queries = outputs.qformer_outputs.last_hidden_state[:, : unwrapped.config.num_query_tokens]
                        attribute = attribute_head.loss(queries, *attribute_targets(examples))
                        loss = outputs.loss + stage.attribute_loss * attribute
                    else:
                        loss = model(**batch).loss
                    if stage.colour_consistency and not official:
                        avoid = HELD_OUT_PAIRS if stage.avoid_held_out_pairs else frozenset()
                        consistency = colour_consistency_loss(unwrapped, processor, examples, resolution, avoid,
                                                              consistency_teacher, stage.consistency_scene)  # fmt: skip
                        loss = loss + stage.colour_consistency * consistency
                if not torch.isfinite(loss):
                    raise ExploreError(f"non-finite loss {loss.item()} at step {state.global_step + 1} "
                                       f"(stage {stage.name!r}); the last good checkpoint is kept in "
                                       f"{run_dir / 'checkpoints'}; lower the lr or raise warmup_steps")  # fmt: skip
                grad_norm = optimizer_step(
                    loss, optimizer, scheduler, [p for g in optimizer.param_groups for p in g["params"]],
                    max_norm=stage.grad_clip, accelerator=accelerator,
                    average_grads=stream is None and num_processes > 1,  # the ViT ran outside the DDP wrapper
                    nonfinite_message=f"non-finite gradient norm at step {state.global_step + 1} "
                                      f"(stage {stage.name!r}); the last good checkpoint is kept in "
                                      f"{run_dir / 'checkpoints'}; lower the lr or raise warmup_steps",
                )  # fmt: skip
                state.global_step += 1
                state.stage_step += 1
                state.data_position += stage.batch_size * num_processes
                seen += stage.batch_size * num_processes
                rate = seen / (time.perf_counter() - started)
                bar.update(task, advance=1, loss=loss.item(), rate=rate)
                if accelerator.is_main_process and (state.stage_step % 25 == 0 or state.stage_step == 1):
                    record = {"step": state.global_step, "stage": stage.name, "loss": round(loss.item(), 5),
                              "lr": scheduler.get_last_lr()[0], "grad_norm": float(grad_norm), "ex_per_s": round(rate, 1)}  # fmt: skip
                    _log(run_dir, record)
                    if not interactive and progress:
                        print(json.dumps(record), flush=True)
                last = state.stage_step == stage.steps
                if accelerator.is_main_process and (state.stage_step % config.eval.every == 0 or last):
                    _validate(unwrapped, processor, config, run_dir, state, stage, progress,
                              heads if stream is None else None)  # fmt: skip
                    model.train()
                if accelerator.is_main_process and (state.global_step % config.checkpoint_every == 0 or last):
                    save_checkpoint(run_dir / "checkpoints", state.global_step,
                                    write_weights=partial(_write_model, unwrapped, processor, trained_heads),
                                    optimizer=optimizer, scheduler=scheduler, state=asdict(state),
                                    run=run_identity(config), keep=config.keep_checkpoints)  # fmt: skip
                accelerator.wait_for_everyone()
        checkpoint = None

    final = run_dir / "model"
    if accelerator.is_main_process:
        save_model(unwrapped, processor, final)  # atomic; checks that safetensors were written
    accelerator.wait_for_everyone()
    return final


HEADS_FILE = ObjectHeads.file


def _write_model(model, processor, heads: list[torch.nn.Module], folder: Path) -> None:
    """A checkpoint's weights: the whole model and its processor under ``folder/model`` (safetensors),
    and the stage's training heads (object, answer-slot, answer-difference, query-attribute) beside them, each in its
    ``file``."""
    model.save_pretrained(folder / "model")  # transformers >= 5 always writes safetensors
    save_processor(processor, folder / "model", decoder_only=bool(model.config.use_decoder_only_language_model))
    for head in heads:  # kept for a resume; never in the model folder
        save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, folder / head.file)


def _slot_head(model, config: TrainConfig, checkpoint: Path | None) -> SlotHead:
    """A fresh answer-slot head, or a checkpoint's (:func:`_training_head`)."""
    return _training_head(lambda: SlotHead(model.config.text_config.d_model), config, checkpoint, SLOT_HEAD_FILE,
                          "a slot_loss stage")  # fmt: skip


def _difference_head(model, config: TrainConfig, checkpoint: Path | None) -> DifferenceHead:
    """A fresh answer-difference head, or a checkpoint's (:func:`_training_head`)."""
    return _training_head(lambda: DifferenceHead(model.config.text_config.d_model), config, checkpoint,
                          DIFFERENCE_HEAD_FILE, "a difference_loss stage")  # fmt: skip


def _attribute_head(model, config: TrainConfig, checkpoint: Path | None) -> AttributeHead:
    """A fresh query-attribute head, or a checkpoint's (:func:`_training_head`)."""
    size = (model.config.num_query_tokens, model.config.qformer_config.hidden_size)
    return _training_head(lambda: AttributeHead(*size), config, checkpoint, AttributeHead.file,
                          "an attribute_loss stage")  # fmt: skip


def _object_heads(model, config: TrainConfig, checkpoint: Path | None) -> ObjectHeads:
    """Fresh object heads, or a checkpoint's (:func:`_training_head`)."""
    return _training_head(lambda: ObjectHeads(model.config.vision_config.hidden_size), config, checkpoint, HEADS_FILE,
                          "an objects stage")  # fmt: skip


def _training_head(make, config: TrainConfig, checkpoint: Path | None, file: str, stage_kind: str):
    """A head trained beside the model and never saved in its folder: fresh from ``make()`` (seeded by
    ``model.seed``, leaving the global RNG alone), or loaded from ``checkpoint/file`` for a resume."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.model.seed)
        head = make()
    if checkpoint is not None:
        path = checkpoint / file
        if not path.is_file():
            raise ExploreError(f"{checkpoint} has no {file}: it was not written in {stage_kind}; "
                               "resume from a checkpoint of this stage or start the run anew")  # fmt: skip
        head.load_state_dict(load_file(path))
    return head


def _validate(model, processor, config: TrainConfig, run_dir: Path, state: TrainerState, stage: StageSection,
              progress: bool, heads: ObjectHeads | None = None):  # fmt: skip
    """Score the model on the val split, with prompts as the stage trains them (templates or not);
    in an objects stage, the heads' accuracy per attribute."""
    started = time.perf_counter()
    if heads is not None:
        resolution = model.config.vision_config.image_size
        scores = {"objects": validate_objects(model.vision_model, heads, processor, n=config.eval.objects,
                                              world_seed=config.data.world_seed, resolution=resolution,
                                              batch_size=config.eval.batch_size, spec=SceneSpec())}  # fmt: skip
    else:
        scores = evaluate_world(model, processor, split="val", n_vqa=config.eval.vqa, n_judge=config.eval.judge,
                                n_caption=config.eval.caption, seed=config.data.world_seed,
                                batch_size=config.eval.batch_size, templates=stage.templates)  # fmt: skip
    record = {"step": state.global_step, "stage": stage.name, "templates": stage.templates, "validation": scores,
              "seconds": round(time.perf_counter() - started, 1)}  # fmt: skip
    _log(run_dir, record)
    if progress:
        flat = {
            f"{task}/{k}": round(v, 3)
            for task, s in scores.items()
            for k, v in s.items()
            if k in ("overall", "exact_scene")
        }
        print(f"step {state.global_step} validation: {flat}", flush=True)
    if any(math.isnan(v) for s in scores.values() for v in s.values()):
        raise ExploreError(
            f"validation produced NaN scores at step {state.global_step}; see {run_dir / 'train_log.jsonl'}"
        )
