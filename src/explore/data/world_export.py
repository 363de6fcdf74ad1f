"""Write the shapes world to disk: PNG + JSONL, a VL-RewardBench parquet file, a contact sheet."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from rich.progress import track

from explore.data.example import Example
from explore.data.vlrewardbench import write_vlrewardbench_parquet
from explore.runs import write_text
from explore.world.render import DEFAULT_RESOLUTION, render
from explore.world.scene import Scene
from explore.world.splits import split_scene
from explore.world.examples import world_examples
from explore.world.text import caption

EXPORT_FORMATS: tuple[str, ...] = ("jsonl", "vlrewardbench")

# VL-RewardBench has no category column: its official cal.py derives the category from the id
# prefix (see explore.data.vlrewardbench.category_from_id). World ids therefore start with a prefix
# that the official rule maps to the pair's category, followed by "shapes-world" to show the source.
VLRB_ID_PREFIX: dict[str, str] = {
    "hallucination": "hallucination_shapes-world",
    "reasoning": "mathverse_shapes-world",
    "general": "wildvision_shapes-world",
}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in rows))  # atomic: whole or as before


def _example_row(example: Example, image: str) -> dict:
    row = {"id": example.id, "image": image, "prompt": example.prompt, "category": example.category}
    if example.task == "judge":
        row.update(responses=example.responses, preferred=example.preferred, kind=example.meta["kind"])
    else:
        row["answers"] = example.answers
    if "question" in example.meta:
        row["question"] = example.meta["question"]
    return row


def export_jsonl(out: Path, n: int, seed: int = 0, split: str = "test", resolution: int = DEFAULT_RESOLUTION,
                 progress: bool = False) -> dict:  # fmt: skip
    """Write ``n`` scenes of ``split`` as ``images/*.png`` plus ``scenes.jsonl``, ``vqa.jsonl``,
    ``captions.jsonl`` and ``judge.jsonl`` (one line per example, image paths relative to ``out``).

    Returns the number of lines written per file.
    """
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    scene_rows = []
    for i in track(range(n), description="rendering scenes", disable=not progress):
        scene = split_scene(split, i, seed)
        rel = f"images/{split}-{i:06d}.png"
        render(scene, resolution).save(out / rel)
        scene_rows.append({"id": f"{split}-{i:06d}", "image": rel, "scene": scene.to_dict(), "caption": caption(scene)})
    _write_jsonl(out / "scenes.jsonl", scene_rows)
    counts = {"scenes.jsonl": len(scene_rows)}
    tasks = (("vqa", "vqa.jsonl"), ("caption", "captions.jsonl"), ("judge", "judge.jsonl"))
    for task, name in track(tasks, description="writing questions, captions, judge pairs", disable=not progress):
        examples = world_examples(split, n, task, seed=seed, resolution=resolution)
        rows = [_example_row(ex, scene_rows[int(ex.id.rsplit("-", 1)[1])]["image"]) for ex in examples]
        _write_jsonl(out / name, rows)
        counts[name] = len(rows)
    return counts


def vlrewardbench_rows(n: int, seed: int = 0, split: str = "test", resolution: int = DEFAULT_RESOLUTION) -> list[dict]:
    """``n`` world judge pairs as rows of the current VL-RewardBench schema."""
    rows = []
    for ex in world_examples(split, n, "judge", seed=seed, resolution=resolution):
        kind = ex.meta["kind"]
        rejected = 1 - ex.preferred
        models = ["shapes-world/faithful", f"shapes-world/{kind}"]
        rows.append({
            "id": f"{VLRB_ID_PREFIX[ex.category]}-{ex.id}",
            "query": ex.prompt,
            "response": list(ex.responses),
            "image": ex.load_image(),
            # rank of each response, 0 = better: [0, 1] means the first answer is preferred
            "human_ranking": [0, 1] if ex.preferred == 0 else [1, 0],
            "models": models if ex.preferred == 0 else models[::-1],
            "judge": "shapes-world",
            "rationale": f"Answer {rejected + 1} is unfaithful to the image ({kind.replace('_', ' ')}).",
            "query_source": f"shapes-world/{kind}",
            "ground_truth": ex.responses[ex.preferred],
        })  # fmt: skip
    return rows


def export_vlrewardbench(out: Path, n: int, seed: int = 0, split: str = "test",
                         resolution: int = DEFAULT_RESOLUTION) -> Path:  # fmt: skip
    """Write ``n`` judge pairs as ``out/vl_rewardbench.parquet`` in VL-RewardBench's schema."""


    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "vl_rewardbench.parquet"
    write_vlrewardbench_parquet(vlrewardbench_rows(n, seed, split, resolution), path)
    return path


def contact_sheet(scenes: list[Scene], columns: int = 4, tile: int = 192, resolution: int = DEFAULT_RESOLUTION) -> Image.Image:
    """A grid of rendered scenes (upscaled to ``tile`` pixels, nearest neighbour) with captions."""
    font = ImageFont.load_default()
    text_height, gap = 84, 6
    cell_w, cell_h = tile + gap, tile + text_height
    rows = (len(scenes) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * cell_w + gap, rows * cell_h + gap), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, scene in enumerate(scenes):
        r, c = divmod(k, columns)
        x, y = gap + c * cell_w, gap + r * cell_h
        sheet.paste(render(scene, resolution).resize((tile, tile), Image.Resampling.NEAREST), (x, y))
        lines = textwrap.wrap(caption(scene), width=tile // 6)[:7]
        draw.multiline_text((x + 3, y + tile + 2), "\n".join(lines), fill=(0, 0, 0), font=font, spacing=1)
    return sheet
