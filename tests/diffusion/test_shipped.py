"""The shipped text-to-image model (src/explore/embedded/diffusion-small): grounded latent diffusion that draws
what it is asked (the exact checks of world-geneval), small, and the same through plain diffusers."""

from pathlib import Path

import numpy as np
import pytest
import torch

from explore.diffusion.pipeline import WorldDiffusionPipeline, load_pipeline, packaged_folder, set_scheduler
from explore.eval.geneval import check_prompt
from explore.world.detect import check_scene, detect
from explore.world.layout import parse_prompt, prompt_layout
from explore.world.scene import HELD_OUT_PAIRS

GUIDANCE = 3.0  # explore generate's default for a grounded pipeline (measured best, README)
IMAGES = 4


@pytest.fixture(scope="module")
def shipped():
    return set_scheduler(load_pipeline(), "ddim")


def _draw(pipe, prompt: str, seed: int = 0):
    return pipe(prompt, num_inference_steps=20, guidance_scale=GUIDANCE, num_images_per_prompt=IMAGES,
                generator=torch.Generator().manual_seed(seed), layout="auto", layout_seed=seed).images  # fmt: skip


def test_shipped_model_is_grounded_latent_and_small(shipped):
    assert shipped.grounded and shipped.latent and shipped.image_size == 64
    weights = sum(f.stat().st_size for f in Path(packaged_folder()).rglob("*.safetensors"))
    assert weights <= 20 * 2**20, weights
    assert type(WorldDiffusionPipeline.from_pretrained(packaged_folder()).scheduler) is type(shipped.scheduler)


@pytest.mark.parametrize(
    ("prompt", "category"),
    [
        ("a red circle above a blue square", "position"),
        ("a green triangle left of a yellow circle", "position"),
        ("two orange circles", "counting"),
        ("four pink circles", "counting"),  # with layout_text="prompt" 0 of 4 (the text out of distribution)
        ("a cross and a circle", "two_object"),  # with layout_text="prompt" 1 of 4
        ("a purple diamond and a cyan circle", "color_attr"),
        ("a blue diamond", "colors"),
    ],
)
def test_shipped_model_draws_what_is_asked(shipped, prompt, category):
    """A regression guard with shapes it draws well (small stars and squares are its weak point, the autoencoder's
    ceiling: README); its rates per category are world-geneval's, not this test's."""
    parsed = parse_prompt(prompt)
    assert not {(g.colour, g.shape) for g in parsed.groups} & HELD_OUT_PAIRS  # the training distribution
    passed = [check_prompt(detect(image), parsed, category) for image in _draw(shipped, prompt)]
    assert sum(passed) >= 3, passed


def test_shipped_model_draws_a_full_scene(shipped):
    prompt = "a large orange triangle at the top left and a small blue circle at the center and a large red square at the bottom right"
    scene = prompt_layout(prompt, 0)
    found = [check_scene(detect(image), scene)["object"] for image in _draw(shipped, prompt)]
    assert np.mean(found) >= 0.75, found


def test_plain_diffusers_draws_the_same_images(shipped):
    """What lmms-eval-style users do: from_pretrained with the folder's own scheduler and the call's defaults."""
    plain = WorldDiffusionPipeline.from_pretrained(packaged_folder())
    plain.set_progress_bar_config(disable=True)
    prompt = "a red circle above a blue square"
    theirs = plain(prompt, num_inference_steps=20, guidance_scale=GUIDANCE, output_type="np",
                   generator=torch.Generator().manual_seed(1)).images  # fmt: skip
    ours = shipped(prompt, num_inference_steps=20, guidance_scale=GUIDANCE, output_type="np",
                   generator=torch.Generator().manual_seed(1)).images  # fmt: skip
    assert np.array_equal(ours, theirs)


def test_the_recipe_continues_from_the_shipped_model(shipped):
    """configs/diffusion/latent.yaml builds the shipped architecture, and a run warm-starts from the shipped folder
    with its own autoencoder (model.autoencoder / model.init_from: embedded), as latent-continue.yaml describes."""
    from explore.diffusion.build import build_pipeline, warm_start
    from explore.diffusion.config import load_diffusion_config

    config = load_diffusion_config(Path(__file__).resolve().parents[2] / "configs" / "diffusion" / "latent.yaml")
    model = config.model.model_copy(update={"autoencoder": "embedded", "init_from": "embedded"})
    pipe = build_pipeline(config.model_copy(update={"model": model}))
    warm_start(pipe, "embedded")
    for name in ("unet", "text_encoder", "vae"):
        ours, theirs = getattr(pipe, name).state_dict(), getattr(shipped, name).state_dict()
        assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours), name
