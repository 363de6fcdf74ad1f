"""One example type for every data source (shapes world, VL-RewardBench, VQAv2, COCO captions).

Collation to model inputs is the model layer's job; an :class:`Example` only carries the raw
image, the text and the references.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from PIL import Image

from explore.data.images import load_image

Task = Literal["vqa", "caption", "judge"]


@dataclass
class Example:
    """A single multimodal example.

    Attributes:
        id: unique id within its source (for VL-RewardBench, the id prefix gives the category).
        task: "vqa" (question → short answer), "caption" (instruction → description) or
            "judge" (query + two responses → which one is better).
        image: a decoded RGB ``PIL.Image``, or a path to an image file loaded lazily by
            :meth:`load_image` (through :func:`explore.data.images.load_image`).
        prompt: the question, the captioning instruction or the judge query.
        answers: reference answers (VQA: all human answers; caption: all reference captions).
        responses: judge only, the two candidate responses in their stored order.
        preferred: judge only, index (0 or 1) of the better response.
        category: VQA question type or judge category (general / hallucination / reasoning).
        source: where the example came from, e.g. "shapes-world", "vl-rewardbench", "vqav2".
        meta: anything else the source carries (kept for reports, never needed by models).
    """

    id: str
    task: Task
    image: Image.Image | str | Path | None
    prompt: str
    answers: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    preferred: int | None = None
    category: str | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def load_image(self) -> Image.Image:
        """Return the example's image as RGB, decoding it safely if it is a path or bytes."""
        if self.image is None:
            raise ValueError(f"example {self.id!r} has no image")
        if isinstance(self.image, Image.Image):
            return self.image if self.image.mode == "RGB" else load_image(self.image)
        return load_image(self.image)
