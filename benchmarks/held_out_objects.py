"""Held-out colour-shape pairs drawn alone: how often does the model name their shape, with and without the colour?

The compositional split's objects whose (colour, shape) pair is held out of training (explore.world.HELD_OUT_PAIRS),
each drawn alone in its scene's place, the first 150 in split order. Asked "What shape is the object?" the answer
needs no colour; asked "What shape is the <colour> object?" the question names a colour never seen with that shape.
The gap between the two is the named-colour prior of issue 14 without any object to pick.

    python benchmarks/held_out_objects.py embedded [MODEL ...]
"""

from __future__ import annotations

import argparse

import torch

from explore.data.example import Example
from explore.eval.world import normalize_answer
from explore.models.generate import generate_answers
from explore.models.loading import load_model
from explore.world.render import render
from explore.world.splits import held_out_objects

QUESTIONS = {"colour unnamed": "What shape is the object?", "colour named": "What shape is the {colour} object?"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="'embedded', folders or hub ids")
    parser.add_argument("--n", type=int, default=150, help="objects")
    args = parser.parse_args()
    if args.n < 1:
        parser.error("--n must be at least 1")
    scenes = held_out_objects(args.n)
    images = [render(scene) for scene in scenes]
    for name in args.models:
        model, processor = load_model(name)
        scores = []
        for label, question in QUESTIONS.items():
            examples = [Example(id=str(k), task="vqa", image=image, answers=[scene.objects[0].shape],
                                prompt=question.format(colour=scene.objects[0].colour))
                        for k, (scene, image) in enumerate(zip(scenes, images))]  # fmt: skip
            with torch.inference_mode():
                answers = generate_answers(model, processor, examples, max_new_tokens=6)
            right = sum(normalize_answer(a) == e.answers[0] for a, e in zip(answers, examples))
            scores.append(f"{label} {right} of {len(examples)}")
        print(f"{name}: " + ", ".join(scores))


if __name__ == "__main__":
    main()
