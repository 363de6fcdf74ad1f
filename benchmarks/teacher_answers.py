"""What the sweep saves by keeping the original's answer logits between points that distil with one recipe.

A point of the default sweep (``vq4+full-distill``: 4 merged queries, 48 px, a ViT and a Q-Former block
dropped) is compressed, then fine-tuned with the ``full-distill`` recipe for ``--steps`` steps, alternately
- computing the teacher's answer logits at every step (the first point of a recipe, or explore before issue 17),
- reading them from a :class:`~explore.adapt.distill.TeacherAnswers` filled by an earlier run (later points),
``--repeats`` times each, side by side. The script checks that both give the same weights and prints the
seconds of each and their ratio.

    python benchmarks/teacher_answers.py [--steps 40] [--repeats 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from explore.adapt.distill import TeacherAnswers
from explore.adapt.finetune import finetune
from explore.models.loading import load_model
from explore.sweep.config import load_sweep_config, default_config_path
from explore.sweep.run import compress
from explore.world.examples import world_examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    config = load_sweep_config(default_config_path())
    point = next(p for p in config.all_points() if p.name == "vq4+full-distill")
    recipe = config.recovery[point.recover].model_copy(update={"steps": args.steps, "warmup_steps": 2})
    original = load_model(config.model)
    resolution = int(original[1].image_processor.size["height"])
    calibration = world_examples("val", config.calibration_examples, "vqa", seed=config.seed, resolution=resolution)

    def run(kept: TeacherAnswers) -> tuple[float, dict]:
        student, processor, _ = compress(*original, point.compress, calibration)
        started = time.perf_counter()
        result = finetune(student, processor, recipe, teacher=original[0], teacher_processor=original[1],
                          progress=False, teacher_answers=kept)  # fmt: skip
        return time.perf_counter() - started, result.model.state_dict()

    filled = TeacherAnswers()
    seconds = {"teacher runs": [], "answers kept": []}
    weights = {}
    for repeat in range(args.repeats):
        took, weights["teacher runs"] = run(filled if repeat == 0 else TeacherAnswers())  # the first fills it
        seconds["teacher runs"].append(took)
        took, weights["answers kept"] = run(filled)
        seconds["answers kept"].append(took)
    same = all(torch.equal(weights["teacher runs"][k], weights["answers kept"][k]) for k in weights["teacher runs"])
    print(f"{point.name}, {args.steps} steps of {point.recover}, torch threads {torch.get_num_threads()}; "
          f"same weights: {same}; kept batches read: {filled.hits}")
    for name, values in seconds.items():
        print(f"  {name:13s} " + "  ".join(f"{v:6.1f} s" for v in values) + f"   median {statistics.median(values):.1f} s")
    ratio = statistics.median(seconds["teacher runs"]) / statistics.median(seconds["answers kept"])
    print(f"  speed-up from kept answers: {ratio:.2f}x")


if __name__ == "__main__":
    main()
