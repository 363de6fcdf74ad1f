"""COCO-style caption files → ``task="caption"`` :class:`Example` values, one per image.

Input: a captions JSON ``{"images": [{"id", "file_name"}, ...], "annotations": [{"image_id",
"caption", "id"}, ...]}`` (e.g. ``captions_val2014.json``) and the folder with the images.
Images stay paths, decoded lazily by ``Example.load_image``; only their existence is checked.
"""

from __future__ import annotations

from pathlib import Path

from typing_extensions import TypedDict  # pydantic validates typing_extensions' TypedDict on Python < 3.12

from explore.data._validate import check_limit, parse_file, read_json, record
from explore.data.example import Example
from explore.errors import ExploreError, ImageError, SchemaError

# One of InstructBLIP's captioning instruction templates (arXiv 2305.06500, appendix).
DEFAULT_CAPTION_PROMPT = "A short image description:"


@record
class CocoImage(TypedDict):
    """An entry of ``images``."""

    id: int
    file_name: str  # relative to the image folder


@record
class CocoCaption(TypedDict):
    """An entry of ``annotations``: one reference caption."""

    image_id: int
    caption: str
    id: int


@record
class CocoCaptionsFile(TypedDict):
    """A COCO captions JSON (other keys, e.g. ``info`` and ``licenses``, are ignored)."""

    images: list[CocoImage]
    annotations: list[CocoCaption]


def load_coco_captions(
    captions_file: str | Path,
    image_dir: str | Path,
    *,
    prompt: str = DEFAULT_CAPTION_PROMPT,
    limit: int | None = None,
) -> list[Example]:
    """Load COCO-style captions: one Example per image with all its reference captions.

    Args:
        captions_file: the captions JSON.
        image_dir: folder that ``file_name`` is relative to.
        prompt: the captioning instruction put in ``Example.prompt``.
        limit: keep only the first ``limit`` images, in the order of ``images`` (None: all).

    Returns:
        Examples with id = str(image id), image = path, answers = the captions (file order),
        meta = file_name and caption_ids.

    Raises:
        SchemaError: bad structure (names the entry and the missing keys), duplicate image ids,
            a caption for an unknown image, an image without captions.
        ImageError: an image file that is missing (named). ExploreError: a missing JSON file
            or image folder.
    """
    check_limit(limit)
    if not isinstance(prompt, str) or not prompt.strip():
        raise ExploreError(f"prompt must be a non-empty string, got {prompt!r}")
    where_file = f"COCO captions file {captions_file}"
    data = parse_file(CocoCaptionsFile, read_json(captions_file, "COCO captions file"), where_file)
    image_dir = Path(image_dir)
    if not image_dir.is_dir():
        raise ExploreError(f"COCO image folder {image_dir}: not found; pass the folder with the images")

    file_names: dict[int, str] = {}
    for index, image in enumerate(data["images"]):
        if image["id"] in file_names:
            raise SchemaError(f"{where_file}, images[{index}]: image id {image['id']} appears twice in 'images'")
        file_names[image["id"]] = image["file_name"]

    captions: dict[int, list[str]] = {image_id: [] for image_id in file_names}
    caption_ids: dict[int, list[int]] = {image_id: [] for image_id in file_names}
    for index, annotation in enumerate(data["annotations"]):
        image_id = annotation["image_id"]
        if image_id not in captions:
            raise SchemaError(
                f"{where_file}, annotations[{index}]: caption {annotation['id']} refers to image_id "
                f"{image_id}, which is not in 'images'; the file is inconsistent"
            )
        captions[image_id].append(annotation["caption"].strip())
        caption_ids[image_id].append(annotation["id"])

    selected = list(file_names.items())
    if limit is not None:
        selected = selected[:limit]
    examples = []
    for image_id, file_name in selected:
        if not captions[image_id]:
            raise SchemaError(
                f"{where_file}: image id {image_id} ({file_name}) has no captions; remove it from "
                "'images' or add its captions"
            )
        path = image_dir / file_name
        if not path.is_file():
            raise ImageError(f"image {path} (image id {image_id}) not found; check image_dir")
        examples.append(
            Example(
                id=str(image_id),
                task="caption",
                image=path,
                prompt=prompt,
                answers=captions[image_id],
                source="coco-captions",
                meta={"file_name": file_name, "caption_ids": caption_ids[image_id]},
            )
        )
    return examples
