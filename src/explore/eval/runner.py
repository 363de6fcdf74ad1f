"""Run a model over an evaluation task: batched, length-sorted, resumable, with a progress bar.

Each finished example is appended to ``predictions.jsonl`` (id, prompt, output, score, ...) as soon
as its batch is done, so an interrupted run continues where it stopped: ids already in the file
are skipped (a line cut off by a kill is truncated and redone). ``header.json`` says which model (by
its weights' fingerprint), task, judge and seed wrote the folder; a resume with any of them changed is
refused. ``summary.json`` holds the task's scores, computed from all predictions. All writes go through
:mod:`explore.runs` (fsync-ed appends, atomic summary).

Data parallel (``accelerate launch -m explore eval ...``): given an accelerate ``PartialState`` with several
processes, the batches (formed over all examples, exactly as one process forms them) are dealt out round-robin,
each process predicts its own, and the main process gathers them and appends them in batch order; only it
writes. The predictions and the summary are then the same as one process's (byte for byte when the outputs
are), and a killed run resumes the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from accelerate.utils import broadcast_object_list, gather_object
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from explore.data.example import Example
from explore.errors import ExploreError
from explore.eval.generative_judge import judge_generatively
from explore.eval.likelihood import judge_by_likelihood
from explore.eval.scoring import RELATION_MAX_NEW_TOKENS, answer_budget, score_records, summarize
from explore.eval.tasks import EvalTask
from explore.models.generate import generate_answers
from explore.runs import JsonlLog, check_header, model_fingerprint, read_jsonl, write_json

PREDICTIONS = "predictions.jsonl"
SUMMARY = "summary.json"
MAX_NEW_TOKENS = {"vqa": 10, "caption": 64, "judge": 64}


def read_predictions(path: Path) -> list[dict]:
    """Records already written; a last line cut off by a crash is ignored (it will be redone)."""
    return read_jsonl(path)


def run_header(model, task: EvalTask, *, judge: str, judge_samples: int, seed: int) -> dict:
    """What identifies an evaluation run: resuming a folder with another model, task or judge is refused
    (see :func:`explore.runs.check_header`) instead of mixing two runs in one summary."""
    generative = task.kind == "judge" and judge == "generative"
    return {"command": "eval", "task": task.name, "kind": task.kind, "model": model_fingerprint(model),
            "judge": judge if task.kind == "judge" else None, "judge_samples": judge_samples if generative else None,
            "seed": seed, "max_new_tokens": MAX_NEW_TOKENS.get(task.kind),
            "relation_max_new_tokens": RELATION_MAX_NEW_TOKENS if task.kind == "vqa" else None}  # fmt: skip


def sorted_batches(examples: list[Example], batch_size: int, length: Callable[[Example], int]) -> Iterator[list[Example]]:
    """Batches of examples with similar prompt lengths (less padding), longest first (so a too-large
    batch fails at once, not at the end)."""
    ordered = sorted(examples, key=length, reverse=True)
    for start in range(0, len(ordered), batch_size):
        yield ordered[start : start + batch_size]


def find_batch_size(probe: Callable[[int], None], start: int = 256) -> int:
    """The first batch size from ``start`` down (accelerate's ``find_executable_batch_size``: x0.9 at each
    try) for which ``probe`` does not run out of memory."""
    from accelerate.utils import find_executable_batch_size

    @find_executable_batch_size(starting_batch_size=start)
    def _try(batch_size: int) -> int:
        probe(batch_size)
        return batch_size

    return _try()


class Predictor:
    """Turns a batch of examples into model outputs for one task kind."""

    def __init__(self, model, processor, kind: str, *, judge: str = "likelihood", judge_samples: int = 10,
                 seed: int = 0) -> None:  # fmt: skip
        self.model, self.processor, self.kind = model, processor, kind
        self.judge, self.judge_samples, self.seed = judge, judge_samples, seed

    def __call__(self, batch: list[Example]) -> list[dict]:
        if self.kind == "judge" and self.judge == "likelihood":
            choices = judge_by_likelihood(self.model, self.processor, batch)
            return [{"output": choice, "choice": choice} for choice in choices]
        if self.kind == "judge":
            return judge_generatively(self.model, self.processor, batch, samples=self.judge_samples, seed=self.seed)
        budget = MAX_NEW_TOKENS[self.kind]
        if self.kind == "vqa":  # room for a stepwise answer to a relation question (scored by its last step)
            budget = answer_budget(batch, short=budget)
        texts = generate_answers(self.model, self.processor, batch, max_new_tokens=budget)
        return [{"output": text} for text in texts]


def run_task(
    model,
    processor,
    task: EvalTask,
    examples: list[Example],
    out_dir: Path,
    *,
    batch_size: int | str = 32,
    judge: str = "likelihood",
    judge_samples: int = 10,
    seed: int = 0,
    unparsed: str = "drop",
    progress: bool = True,
    state=None,
) -> dict:
    """Evaluate ``examples`` of ``task``, resuming from ``out_dir`` if it holds earlier predictions.

    ``state``: an accelerate ``PartialState`` to share the batches among its processes (see the module
    docstring); every process passes the same ``examples``. Returns the summary (also written to
    ``out_dir/summary.json``), in every process.
    """
    if not examples:
        raise ExploreError(f"task {task.name!r} has no examples; check --data / --limit")
    processes = state.num_processes if state is not None else 1
    main = state is None or state.is_main_process
    path = out_dir / PREDICTIONS
    log = None
    problem = None
    if main:  # only the main process repairs a cut line and writes the header; the others wait for its verdict
        try:
            log = JsonlLog(path)  # a line cut off by a kill is truncated away and redone
            check_header(out_dir, run_header(model, task, judge=judge, judge_samples=judge_samples, seed=seed),
                         has_outputs=bool(log.records))  # fmt: skip
        except ExploreError as error:
            problem = error
    if processes > 1:
        problem = _from_main(problem)
    if problem is not None:
        raise problem if main else ExploreError(str(problem))
    done_ids = {record["id"] for record in (log.records if main else read_predictions(path))}
    unknown = done_ids - {example.id for example in examples}
    if unknown:
        raise ExploreError(f"{path} holds predictions for ids not in this task ({sorted(unknown)[:3]} ...); "
                           "use a new --out folder for a different task or data")  # fmt: skip
    todo = [example for example in examples if example.id not in done_ids]
    for example in todo:  # decode (and check) images before spending model time
        example.image = example.load_image()
    predictor = Predictor(model, processor, task.kind, judge=judge, judge_samples=judge_samples, seed=seed)
    tokenizer = processor.tokenizer
    length = lambda example: len(tokenizer(example.prompt, add_special_tokens=False)["input_ids"])  # noqa: E731
    if batch_size == "auto":
        batch_size = find_batch_size(lambda size: predictor(sorted(todo, key=length, reverse=True)[:size])) if todo else 1
        if processes > 1:  # every process must form the same batches: the main process's size
            batch_size = _from_main(batch_size)
    model.eval()
    # Batches are formed over all examples, not just those left, so a resumed run pads every example exactly
    # as an uninterrupted one (same outputs); a batch is appended whole or not at all.
    batches = [[example for example in batch if example.id not in done_ids]
               for batch in sorted_batches(examples, int(batch_size), length)]  # fmt: skip
    batches = [batch for batch in batches if batch]
    started, seen = time.perf_counter(), 0
    columns = (TextColumn(f"[bold]{task.name}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]:.1f} ex/s"), TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, disable=not (progress and main)) as bar:
        job = bar.add_task(task.name, total=len(examples), completed=len(examples) - len(todo), rate=0.0)
        with torch.inference_mode():
            for start in range(0, len(batches), processes):  # one batch per process at a time
                rank = state.process_index if state is not None else 0
                mine = batches[start + rank] if start + rank < len(batches) else []
                records = score_records(task.kind, mine, predictor(mine)) if mine else []
                gathered = gather_object([records]) if processes > 1 else [records]  # in rank order = batch order
                for part in gathered:
                    if main and part:
                        log.append(part)
                    seen += len(part)
                bar.update(job, completed=len(examples) - len(todo) + seen,
                           rate=seen / (time.perf_counter() - started))  # fmt: skip
    summary = None
    if main:
        records = log.records
        summary = summarize(task.kind, records, unparsed=unparsed)
        summary.update(task=task.name, examples=len(records), batch_size=batch_size,
                       judge=judge if task.kind == "judge" else None)  # fmt: skip
        write_json(out_dir / SUMMARY, summary)
    return _from_main(summary) if processes > 1 else summary


def _from_main(value):
    """``value`` as the main process has it, in every process (accelerate's ``broadcast_object_list``)."""
    holder = [value]
    broadcast_object_list(holder, from_process=0)
    return holder[0]
