"""Linear probes of a VLM's vision tokens: does the ViT encode each object's shape, colour, size and position?

For every object of N shapes-world scenes, the probe reads the ViT token of the patch under the
object's centre (from every layer) and fits a linear classifier (multinomial logistic regression,
AdamW, full batch) for each attribute of ``explore.train.objects`` on 80% of the objects; it reports
accuracy on the other 20%. The same probe on a randomly initialised ViT of the same config is the
control: what the patch pixels and the position table alone give a linear read-out.

If the trained ViT's tokens give shape and position linearly, the VQA errors on those questions come
from the Q-Former / LM path; if not, from the vision encoder (the reason for the ``objects``
pretraining stage, :mod:`explore.train.objects`).

    python benchmarks/vision_probe.py --model embedded --scenes 2000
    python benchmarks/vision_probe.py --vision src/explore/embedded/world-vit --scenes 2000  # the first model's ViT
    python benchmarks/vision_probe.py --model embedded --scenes 2000 --held-out --layers -1

``--held-out`` asks whether the ViT's read-out generalises to colour-shape pairs it never saw: the probe is
fitted on every object of the train-split scenes and scored on the objects of compositional-split scenes whose
colour-shape pair is held out (explore.world.HELD_OUT_PAIRS; each drawn with those objects only). If it reads their shape there, a compositional
VQA error on shape comes from the Q-Former / LM path, not from the ViT.
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import replace

import torch
from tqdm.auto import tqdm
from transformers import InstructBlipVisionModel

from explore.models.build import build_model
from explore.models.loading import load_model
from explore.train.objects import ATTRIBUTES, object_targets, pixels
from explore.world import HELD_OUT_PAIRS
from explore.world.scene import Scene
from explore.world.splits import split_scene


@torch.no_grad()
def object_tokens(vision, processor, scenes, layers, batch_size=64):
    """(token under each object per layer (n_objects, C), labels per attribute) for ``scenes``."""
    grid = vision.config.image_size // vision.config.patch_size
    feats = {layer: [] for layer in layers}
    for start in tqdm(range(0, len(scenes), batch_size), desc="ViT tokens", leave=False):
        batch = scenes[start : start + batch_size]
        hidden = vision(pixel_values=pixels(batch, processor, vision.config.image_size),
                        output_hidden_states=True).hidden_states  # fmt: skip
        rows, tokens, _ = object_targets(batch, grid)
        for layer in layers:
            feats[layer].append(hidden[layer][rows, tokens])
    _, _, labels = object_targets(scenes, grid)
    return {k: torch.cat(v) for k, v in feats.items()}, labels


def held_out_scenes(n: int) -> list[Scene]:
    """The first ``n`` compositional-split scenes with only their held-out-pair objects (explore.world.HELD_OUT_PAIRS),
    those left without any dropped."""
    held = [split_scene("compositional", i) for i in range(n)]
    held = [replace(s, objects=tuple(o for o in s.objects if (o.colour, o.shape) in HELD_OUT_PAIRS)) for s in held]
    return [s for s in held if s.objects]


def probe(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int = 400, n: int | None = None) -> float:
    """Accuracy of a linear classifier on standardised features, fitted on the first ``n`` rows (default 80%)
    and scored on the rest."""
    n = int(0.8 * len(x)) if n is None else n
    mean, std = x[:n].mean(0), x[:n].std(0) + 1e-6
    x = (x - mean) / std
    torch.manual_seed(0)
    head = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.AdamW(head.parameters(), lr=0.05, weight_decay=1e-3)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(head(x[:n]), y[:n])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float((head(x[n:]).argmax(-1) == y[n:]).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="'embedded', a model folder or a hub id")
    parser.add_argument("--scenes", type=int, default=3000)
    parser.add_argument("--vision", default=None,
                        help="probe this vision-encoder folder (InstructBlipVisionModel, e.g. src/explore/embedded/"
                             "world-vit: the first embedded model's ViT) instead of --model's; --model's processor "
                             "prepares the images")  # fmt: skip
    parser.add_argument("--preset", default="shapes-small", help="preset of the randomly initialised control")
    parser.add_argument("--held-out", action="store_true",
                        help="fit on the train-split objects, score on held-out colour-shape objects of the "
                             "compositional split (as many scenes)")  # fmt: skip
    parser.add_argument("--layers", type=int, nargs="*", default=None,
                        help="probe only these layers (default: all; -1 is the last)")  # fmt: skip
    args = parser.parse_args()
    model, processor = load_model(args.model)
    trained = model.vision_model.eval()
    if args.vision is not None:
        trained = InstructBlipVisionModel.from_pretrained(args.vision, use_safetensors=True).eval()
    random = copy.deepcopy(trained)
    random.load_state_dict(build_model(args.preset, processor.tokenizer, seed=0).vision_model.state_dict())
    every = list(range(trained.config.num_hidden_layers + 1))
    layers = every if args.layers is None else sorted({every[layer] for layer in args.layers})
    scenes = [split_scene("train", i) for i in range(args.scenes)]
    fit = None
    if args.held_out:  # the fitted rows first, then only the held-out-pair objects of compositional scenes
        fit = sum(len(s.objects) for s in scenes)
        scenes = scenes + held_out_scenes(args.scenes)
    where = "fitted on train objects, scored on held-out colour-shape objects" if args.held_out else "80/20 split"
    print(f"{args.vision or args.model}: linear probes on the token under each object's centre ({args.scenes} "
          f"scenes; {where})")  # fmt: skip
    print(f"{'ViT':<8} {'layer':>5}  " + "  ".join(f"{k:>8}" for k in ATTRIBUTES))
    for name, vision in (("random", random), ("trained", trained)):
        feats, labels = object_tokens(vision, processor, scenes, layers)
        for layer in layers:
            accs = [probe(feats[layer], labels[k], len(values), n=fit) for k, values in ATTRIBUTES.items()]
            print(f"{name:<8} {layer:>5}  " + "  ".join(f"{a:>8.1%}" for a in accs))
    chance = {k: float(torch.bincount(v).max() / len(v)) for k, v in labels.items()}
    print("majority class: " + ", ".join(f"{k} {v:.1%}" for k, v in chance.items()))


if __name__ == "__main__":
    main()
