"""Average the weights of fine-tunes of one model into one model folder (a uniform "model soup", Wortsman et al. 2022).

Every folder must be a fine-tune of the same model (same tensors, same shapes): the float tensors are averaged in
float64 and written in the first folder's dtypes; every other file (config, processor, tokenizers) is copied from the
first folder. The result loads like any InstructBLIP folder. Used in session 24 to ask whether averaging the
language-model-only judge recipes (shapes-judge-25, -27, -28, -29, all from shapes-judge-21) beats the shipped one.

    python benchmarks/weight_average.py --out runs/soup/s-lm4 runs/shapes-judge-{25,27,28,29}/model

peft and transformers have no helper for this (peft's ``add_weighted_adapter`` merges LoRA adapters, not full models),
so it is these few lines over safetensors.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"


def average(folders: list[Path], out: Path) -> None:
    """Write the uniform average of ``folders``' weights, with the first folder's other files, to ``out``."""
    tensors = [load_file(folder / WEIGHTS) for folder in folders]
    first = tensors[0]
    for folder, other in zip(folders[1:], tensors[1:], strict=True):
        if other.keys() != first.keys() or any(other[k].shape != first[k].shape for k in first):
            raise SystemExit(f"{folder} is not a fine-tune of {folders[0]}: its tensors differ in names or shapes")
    averaged = {}
    for name, tensor in first.items():
        if tensor.is_floating_point():
            averaged[name] = (sum(t[name].double() for t in tensors) / len(tensors)).to(tensor.dtype).contiguous()
        else:
            averaged[name] = tensor
    shutil.copytree(folders[0], out, dirs_exist_ok=True)
    save_file(averaged, out / WEIGHTS, metadata={"format": "pt"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="model folders with model.safetensors")
    parser.add_argument("--out", type=Path, required=True, help="the averaged model folder to write")
    args = parser.parse_args()
    missing = [str(f) for f in args.folders if not (f / WEIGHTS).is_file()]
    if missing:
        raise SystemExit(f"no {WEIGHTS} in {', '.join(missing)}: pass model folders saved by explore pretrain")
    if len(args.folders) < 2:
        raise SystemExit("pass two or more model folders to average")
    average(args.folders, args.out)
    print(f"averaged {len(args.folders)} models into {args.out}")


if __name__ == "__main__":
    main()
