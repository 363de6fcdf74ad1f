"""The shipped text-to-image model (src/explore/embedded/diffusion-small) draws the colour it is asked for."""

import pytest
import torch

from explore.diffusion.pipeline import load_pipeline
from explore.world.detect import detect


@pytest.fixture(scope="module")
def shipped():
    return load_pipeline()


@pytest.mark.parametrize("colour", ["red", "blue", "green", "yellow"])
def test_shipped_model_draws_the_asked_colour(shipped, colour):
    images = shipped(f"a large {colour} circle", num_inference_steps=20, num_images_per_prompt=2,
                     generator=torch.Generator().manual_seed(0)).images  # fmt: skip
    found = [[d.colour for d in detect(image)] for image in images]
    assert all(colours and set(colours) == {colour} for colours in found), found
