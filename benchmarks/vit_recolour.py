"""Does the ViT read held-out colour-shape pairs better after training on shapes in unnamed colours?

Issue 14's last target (compositional shape >= 80%) is bounded by the frozen ViT: a linear probe fitted on the
train-split objects reads the shape of held-out-pair objects from the token under them at about 92% (the same probe as
``vision_probe.py --held-out``, last layer). This experiment continues the ViT's ``objects`` pretraining
(:mod:`explore.train.objects`) on batches whose second half is drawn in unnamed colours
(:func:`explore.world.examples.unnamed_colour`: no held-out pair is ever drawn), those objects scored on shape, size and
position only, optionally anchored to the original ViT's features on the first half (``--anchor``: weight of the
relative mean squared drift), then prints the held-out probe before and after and the feature drift on validation
scenes, and saves the whole model with the new ViT to ``--out`` (the start of a re-alignment run such as
``configs/pretrain/shapes-judge-47.yaml``).

    python benchmarks/vit_recolour.py --steps 1000 --anchor 0 --lr 3e-4 --out runs/vit-recolour
    python benchmarks/vit_recolour.py --steps 400 --anchor 1 --lr 1e-4 --out runs/vit-recolour-anchored

Fresh linear heads are fitted first (100 steps, ViT frozen). Not a test; prints figures.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
import torch.nn.functional as F
from vision_probe import held_out_scenes, object_tokens, probe

from explore.models.loading import load_model
from explore.train.objects import ATTRIBUTES, ObjectHeads, object_targets, pixels
from explore.world.examples import unnamed_colour
from explore.world.render import render
from explore.world.splits import split_scene

HEAD_STEPS = 100  # heads alone before the ViT trains
RECOLOURED_ATTRIBUTES = ("shape", "size", "position")  # an unnamed colour has no colour label


def held_out_probe(vision, processor, n: int) -> tuple[float, float]:
    """(shape, colour) accuracy of linear probes fitted on the objects of ``n`` train scenes (beyond the ones the
    training below draws) and scored on the held-out-pair objects of the first ``n`` compositional scenes."""
    scenes = [split_scene("train", 100_000 + i) for i in range(n)]
    fit = sum(len(s.objects) for s in scenes)
    last = vision.config.num_hidden_layers
    feats, labels = object_tokens(vision.eval(), processor, scenes + held_out_scenes(n), [last])
    return (probe(feats[last], labels["shape"], len(ATTRIBUTES["shape"]), n=fit),
            probe(feats[last], labels["colour"], len(ATTRIBUTES["colour"]), n=fit))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="'embedded' or a model folder")
    parser.add_argument("--steps", type=int, default=1000, help="ViT training steps (after the heads' warm-up)")
    parser.add_argument("--anchor", type=float, default=0.0, help="weight of the feature-drift loss (0: none)")
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=32, help="scenes per step, half of them recoloured")
    parser.add_argument("--probe-scenes", type=int, default=800)
    parser.add_argument("--out", required=True, help="folder for the model with the new ViT")
    args = parser.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model, processor = load_model(args.model)
    vision = model.vision_model
    teacher = copy.deepcopy(vision).eval().requires_grad_(False)
    size = vision.config.image_size
    grid = size // vision.config.patch_size
    half = args.batch_size // 2

    shape, colour = held_out_probe(vision, processor, args.probe_scenes)
    print(f"before: held-out pairs, linear probe on the last layer: shape {shape:.1%}, colour {colour:.1%}", flush=True)
    heads = ObjectHeads(vision.config.hidden_size)
    head_optimizer = torch.optim.AdamW(heads.parameters(), lr=1e-2)
    optimizer = torch.optim.AdamW([*vision.parameters(), *heads.parameters()], lr=args.lr, weight_decay=0.0)
    vision.train()
    for step in range(HEAD_STEPS + args.steps):
        scenes = [split_scene("train", 200_000 + step * args.batch_size + i) for i in range(args.batch_size)]
        named, recoloured = scenes[:half], scenes[half:]
        colours = [[unnamed_colour(rng, o.shape) for o in s.objects] for s in recoloured]
        images = [render(s, size) for s in named] + [render(s, size, c) for s, c in zip(recoloured, colours)]
        values = processor.image_processor(images, return_tensors="pt")["pixel_values"]
        warm_up = step < HEAD_STEPS
        vision.requires_grad_(not warm_up)
        hidden = vision(pixel_values=values).last_hidden_state
        loss = torch.zeros(())
        for part, group, keys in ((slice(0, half), named, tuple(ATTRIBUTES)),
                                  (slice(half, None), recoloured, RECOLOURED_ATTRIBUTES)):  # fmt: skip
            rows, tokens, labels = object_targets(group, grid)
            logits = heads(hidden[part][rows, tokens])
            loss = loss + sum(F.cross_entropy(logits[k], labels[k]) for k in keys)
        if not warm_up and args.anchor:
            with torch.no_grad():
                target = teacher(pixel_values=values[:half]).last_hidden_state
            loss = loss + args.anchor * F.mse_loss(hidden[:half], target) / target.pow(2).mean()
        active = head_optimizer if warm_up else optimizer
        active.zero_grad()
        loss.backward()
        active.step()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.4f}", flush=True)
    shape, colour = held_out_probe(vision, processor, args.probe_scenes)
    print(f"after: held-out pairs, linear probe on the last layer: shape {shape:.1%}, colour {colour:.1%}")
    with torch.no_grad():
        values = pixels([split_scene("val", i) for i in range(64)], processor, size)
        new, old = vision.eval()(pixel_values=values).last_hidden_state, teacher(pixel_values=values).last_hidden_state
        print(f"relative feature drift on 64 validation scenes: {((new - old).pow(2).mean() / old.pow(2).mean()):.2%}")
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    print(f"saved the model with the new ViT to {args.out}")


if __name__ == "__main__":
    main()
