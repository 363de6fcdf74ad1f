"""Linear probes of a VLM's vision tokens: does the ViT encode each object's shape, colour and position?

For every object of N shapes-world scenes, the probe reads the ViT token of the patch under the
object's centre (from the chosen layers) and fits a linear classifier (multinomial logistic
regression, AdamW, full batch) for the object's shape (6 classes), colour (8) and grid position (9),
on 80% of the objects; it reports accuracy on the other 20%. The same probe on a randomly
initialised ViT of the same config is the control: what the patch pixels and the position table
alone give a linear read-out.

If the trained ViT's tokens give shape and position linearly, the VQA errors on those questions come
from the Q-Former / LM path; if not, from the vision encoder.

    python benchmarks/vision_probe.py --model embedded --scenes 3000
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from explore.models.build import build_model
from explore.models.loading import load_model
from explore.world import COLOURS, SHAPES, render
from explore.world.scene import CELL_NAMES
from explore.world.splits import split_scene

POSITIONS = [name for row in CELL_NAMES for name in row]


@torch.no_grad()
def object_tokens(vision, processor, scenes, layers, batch_size=64):
    """(features per layer (n_objects, C), labels dict) for every object of ``scenes``."""
    side = vision.config.image_size // vision.config.patch_size
    feats = {layer: [] for layer in layers}
    labels = {"shape": [], "colour": [], "position": []}
    for start in tqdm(range(0, len(scenes), batch_size), desc="ViT tokens", leave=False):
        batch = scenes[start : start + batch_size]
        pixels = processor.image_processor([render(s) for s in batch], return_tensors="pt")["pixel_values"]
        hidden = vision(pixel_values=pixels, output_hidden_states=True).hidden_states
        for i, scene in enumerate(batch):
            for obj in scene.objects:
                patch = 1 + min(int(obj.y * side), side - 1) * side + min(int(obj.x * side), side - 1)  # +1: [CLS]
                for layer in layers:
                    feats[layer].append(hidden[layer][i, patch])
                labels["shape"].append(SHAPES.index(obj.shape))
                labels["colour"].append(list(COLOURS).index(obj.colour))
                labels["position"].append(POSITIONS.index(obj.position))
    return {k: torch.stack(v) for k, v in feats.items()}, {k: torch.tensor(v) for k, v in labels.items()}


def probe(x: torch.Tensor, y: torch.Tensor, classes: int, steps: int = 400) -> float:
    """Held-out accuracy of a linear classifier on standardised features (80 / 20 split)."""
    n = int(0.8 * len(x))
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


def supervised_vit(preset: str, processor, steps: int, batch_size: int = 32, lr: float = 1e-3):
    """A fresh ViT of ``preset`` trained for ``steps`` with linear heads on the object tokens directly
    (shape + colour + position cross-entropy): how fast this architecture can learn each attribute
    when the signal does not have to pass through the Q-Former and the LM. Returns (vit, heads)."""
    torch.manual_seed(0)
    vit = build_model(preset, processor.tokenizer, seed=0).vision_model.train()
    width = vit.config.hidden_size
    heads = torch.nn.ModuleDict({"shape": torch.nn.Linear(width, len(SHAPES)),
                                 "colour": torch.nn.Linear(width, len(COLOURS)),
                                 "position": torch.nn.Linear(width, len(POSITIONS))})  # fmt: skip
    optimizer = torch.optim.AdamW([*vit.parameters(), *heads.parameters()], lr=lr)
    side = vit.config.image_size // vit.config.patch_size
    for step in tqdm(range(steps), desc="supervised ViT", leave=False):
        scenes = [split_scene("train", 10_000 + step * batch_size + i) for i in range(batch_size)]
        pixels = processor.image_processor([render(s) for s in scenes], return_tensors="pt")["pixel_values"]
        tokens = vit(pixel_values=pixels).last_hidden_state
        rows, patches, labels = [], [], {k: [] for k in heads}
        for i, scene in enumerate(scenes):
            for obj in scene.objects:
                rows.append(i)
                patches.append(1 + min(int(obj.y * side), side - 1) * side + min(int(obj.x * side), side - 1))
                labels["shape"].append(SHAPES.index(obj.shape))
                labels["colour"].append(list(COLOURS).index(obj.colour))
                labels["position"].append(POSITIONS.index(obj.position))
        chosen = tokens[rows, patches]
        loss = sum(F.cross_entropy(heads[k](chosen), torch.tensor(v)) for k, v in labels.items())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return vit.eval(), heads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--scenes", type=int, default=3000)
    parser.add_argument("--preset", default="shapes-small", help="preset of the randomly initialised control")
    parser.add_argument(
        "--supervised-steps",
        type=int,
        default=0,
        help="also train a fresh ViT this many steps on the object labels directly and probe it",
    )
    args = parser.parse_args()
    model, processor = load_model(args.model)
    trained = model.vision_model.eval()
    random = copy.deepcopy(trained)
    random.load_state_dict(build_model(args.preset, processor.tokenizer, seed=0).vision_model.state_dict())
    layers = list(range(trained.config.num_hidden_layers + 1))
    scenes = [split_scene("train", i) for i in range(args.scenes)]
    classes = {"shape": len(SHAPES), "colour": len(COLOURS), "position": len(POSITIONS)}
    print(f"{args.model}: linear probes on the token under each object's centre ({args.scenes} scenes)")
    print(f"{'ViT':<8} {'layer':>5}  " + "  ".join(f"{k:>8}" for k in classes))
    for name, vision in (("random", random), ("trained", trained)):
        feats, labels = object_tokens(vision, processor, scenes, layers)
        for layer in layers:
            accs = [probe(feats[layer], labels[k], c) for k, c in classes.items()]
            print(f"{name:<8} {layer:>5}  " + "  ".join(f"{a:>8.1%}" for a in accs))
    if args.supervised_steps:
        vit, heads = supervised_vit(args.preset, processor, args.supervised_steps)
        val = [split_scene("val", i) for i in range(300)]
        feats, labels = object_tokens(vit, processor, val, [vit.config.num_hidden_layers])
        with torch.no_grad():
            tokens = feats[vit.config.num_hidden_layers]
            accs = [float((heads[k](tokens).argmax(-1) == labels[k]).float().mean()) for k in classes]
        name = f"supervised, {args.supervised_steps} steps (its own heads, 300 val scenes)"
        print(f"{name}: " + "  ".join(f"{k} {a:.1%}" for k, a in zip(classes, accs)))
    chance = {k: float(torch.bincount(v).max() / len(v)) for k, v in labels.items()}
    print("majority class: " + ", ".join(f"{k} {v:.1%}" for k, v in chance.items()))


if __name__ == "__main__":
    main()
