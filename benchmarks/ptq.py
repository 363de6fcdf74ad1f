"""Post-training quantization of the embedded model: RTN against GPTQ, W4A16 and W8A8, side by side.

Each variant is made from the same fp32 model (GPTQ calibrated on 64 validation questions of the world) and
evaluated on the frontier sweep's tasks (300 VQA questions, 200 judge pairs, 100 captions, test split, seed 0);
prints one JSON line per variant with its scores and the seconds quantization took. GPTQ needs llmcompressor
beside transformers 5.24 (``pip install --no-deps llmcompressor==0.14.0.1``, see explore.compress.ptq); without
it the GPTQ variants are left out.

    python benchmarks/ptq.py
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import time
from pathlib import Path

import torch

from explore.compress.ptq import PTQ_SCHEMES, quantize_gptq, quantize_rtn
from explore.eval.runner import run_task
from explore.eval.tasks import TaskOptions, get_task
from explore.models.loading import load_model
from explore.sweep.run import primary_score
from explore.world.examples import world_examples

TASKS = {"world-vqa": 300, "world-judge": 200, "world-caption": 100}


def main() -> None:
    torch.manual_seed(0)
    model, processor = load_model("embedded")
    resolution = int(processor.image_processor.size["height"])
    data = {}
    for name, limit in TASKS.items():
        examples = get_task(name).load(TaskOptions(split="test", seed=0, limit=limit, resolution=resolution))
        for example in examples:
            example.image = example.load_image()
        data[name] = examples
    calibration = world_examples("val", 64, "vqa", seed=0, resolution=resolution)
    variants = {"fp32": lambda: model}
    for scheme in PTQ_SCHEMES:
        variants[f"rtn-{scheme}"] = lambda s=scheme: quantize_rtn(model, s)
        if importlib.util.find_spec("llmcompressor") is not None:
            variants[f"gptq-{scheme}"] = lambda s=scheme: quantize_gptq(model, processor, calibration, s)
    with tempfile.TemporaryDirectory() as out:
        for name, build in variants.items():
            started = time.perf_counter()
            quantized = build()
            seconds = time.perf_counter() - started
            scores = {}
            for task_name, examples in data.items():
                task = get_task(task_name)
                summary = run_task(quantized, processor, task, examples, Path(out) / name / task_name, batch_size=64,
                                   seed=0, progress=False)  # fmt: skip
                scores[task_name] = round(primary_score(task.kind, summary), 3)
            print(json.dumps({"variant": name, "seconds_to_quantize": round(seconds, 1), **scores}), flush=True)


if __name__ == "__main__":
    main()
