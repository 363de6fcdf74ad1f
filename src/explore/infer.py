"""Ask a model about images: one image, a folder of images, or a JSONL file of requests.

Used by ``explore ask`` and ``explore caption``. Inputs become :class:`Example` values so they
go through the same safe image loader and collation as training and evaluation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from explore.data.example import Example
from explore.data.images import load_image
from explore.errors import ExploreError
from explore.models.generate import generate_answers

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CAPTION_PROMPT = "A short image description:"


def requests_from(source: Path, prompt: str | None) -> list[Example]:
    """Turn ``source`` into examples to answer.

    - an image file: one example with ``prompt``;
    - a folder: every image in it (sorted by name), each with ``prompt``;
    - a ``.jsonl`` file: one request per line, ``{"image": path, "prompt"|"question": text}`` (image
      paths relative to the file; a line without a prompt uses ``prompt``).

    Raises ExploreError for a missing path, an empty folder, a bad JSONL line (with its number) or
    a request without any prompt.
    """
    if not source.exists():
        raise ExploreError(f"{source}: no such file or folder; pass an image, a folder of images or a .jsonl file")
    if source.is_dir():
        images = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise ExploreError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        return [_request(str(p.name), p, prompt, source) for p in images]
    if source.suffix.lower() == ".jsonl":
        return list(_jsonl_requests(source, prompt))
    return [_request(source.name, source, prompt, source)]


def _request(request_id: str, image: Path, prompt: str | None, where: Path) -> Example:
    if not prompt:
        raise ExploreError(f"{where}: no question for {image}; give one on the command line or in the JSONL line")
    return Example(id=request_id, task="vqa", image=image, prompt=prompt, source=str(where))


def _jsonl_requests(path: Path, prompt: str | None) -> Iterator[Example]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ExploreError(f"{path}, line {number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or "image" not in row:
            raise ExploreError(f'{path}, line {number}: expected an object with an "image" key, got {line[:80]!r}')
        text = row.get("prompt", row.get("question")) or prompt
        image = Path(row["image"])
        image = image if image.is_absolute() else path.parent / image
        yield _request(str(row.get("id", number)), image, text, path)


def decode_images(examples: list[Example]) -> None:
    """Decode (and check) every example's image in place, keeping its path in ``meta["image"]``.

    Call it before loading a model: a bad image then stops the run with its file name before any
    work is spent.
    """
    for example in examples:
        if not isinstance(example.image, Image.Image):
            example.meta["image"] = str(example.image)
            example.image = load_image(example.image)


def answer_all(model, processor, examples: list[Example], *, batch_size: int = 16, max_new_tokens: int = 16,
               progress: bool = True) -> list[dict]:  # fmt: skip
    """Generate an answer for every example, in batches, with a progress bar.

    Returns one ``{"id", "image", "prompt", "answer"}`` per example.
    """
    decode_images(examples)
    paths = [example.meta["image"] for example in examples]
    results = []
    columns = (TextColumn("answering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress or len(examples) < 2) as bar:
        task = bar.add_task("answering", total=len(examples))
        for start in range(0, len(examples), batch_size):
            batch = examples[start : start + batch_size]
            answers = generate_answers(model, processor, batch, max_new_tokens=max_new_tokens)
            for example, path, answer in zip(batch, paths[start : start + batch_size], answers):
                results.append({"id": example.id, "image": path, "prompt": example.prompt, "answer": answer})
            bar.update(task, advance=len(batch))
    return results
