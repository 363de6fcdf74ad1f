"""Where the package's shipped models live (``explore/embedded/<name>``: the VLM, the diffusion
pipeline, the diffusion model's perceptual ViT)."""

from importlib import resources
from pathlib import Path


def packaged(name: str) -> Path:
    """The folder of shipped model ``name`` (it may not exist until it has been trained)."""
    return Path(str(resources.files("explore").joinpath("embedded", name)))
