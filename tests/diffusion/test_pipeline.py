"""The pipeline: several diffusers schedulers, deterministic per seed, reloads through its own class."""

import json

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline

from explore.diffusion.pipeline import (
    WorldDiffusionPipeline,
    image_grid,
    load_pipeline,
    packaged_folder,
    set_scheduler,  # fmt: skip
)
from explore.errors import ExploreError

PROMPT = "a red circle above a blue square"


def _run(pipe, seed, steps=3, guidance=3.0):
    return pipe(PROMPT, num_inference_steps=steps, guidance_scale=guidance, num_images_per_prompt=2,
                generator=torch.Generator().manual_seed(seed), output_type="np").images  # fmt: skip


@pytest.mark.parametrize("scheduler", ["ddpm", "ddim", "dpm"])
def test_each_scheduler_is_deterministic_per_seed(tiny_pipeline_dir, scheduler):
    pipe = set_scheduler(load_pipeline(tiny_pipeline_dir), scheduler)
    assert type(pipe.scheduler).__name__ == {"ddpm": "DDPMScheduler", "ddim": "DDIMScheduler",
                                             "dpm": "DPMSolverMultistepScheduler"}[scheduler]  # fmt: skip
    first, again, other = _run(pipe, 1), _run(pipe, 1), _run(pipe, 2)
    assert first.shape == (2, 32, 32, 3) and first.min() >= 0 and first.max() <= 1
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_schedulers_differ_and_guidance_matters(tiny_pipeline_dir):
    pipe = load_pipeline(tiny_pipeline_dir)
    ddim = _run(set_scheduler(pipe, "ddim"), 1)
    dpm = _run(set_scheduler(pipe, "dpm"), 1)
    assert not np.array_equal(ddim, dpm)
    assert not np.array_equal(dpm, _run(pipe, 1, guidance=1.0))


def test_reload_through_its_own_class(tiny_pipeline_dir, tmp_path):
    pipe = load_pipeline(tiny_pipeline_dir)
    pipe.save_pretrained(tmp_path / "again", safe_serialization=True)
    reloaded = WorldDiffusionPipeline.from_pretrained(tmp_path / "again")
    reloaded.set_progress_bar_config(disable=True)
    assert type(reloaded.unet).__name__ == "EfficientUNet"
    assert np.array_equal(_run(pipe, 3), _run(reloaded, 3))


@pytest.mark.parametrize("which", ["saved", "shipped"])
def test_plain_diffusion_pipeline_loads_the_folder(tiny_pipeline_dir, tmp_path, which):
    """``DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)``, diffusers' way to load a pipeline class
    it does not ship, gives explore's class and the same images; without ``trust_remote_code`` diffusers refuses
    the folder's code rather than loading something else."""
    folder = packaged_folder()
    if which == "saved":
        folder = tmp_path / "again"
        load_pipeline(tiny_pipeline_dir).save_pretrained(folder, safe_serialization=True)
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_world", "WorldDiffusionPipeline"]
    assert "import WorldDiffusionPipeline" in (folder / "pipeline_world.py").read_text()
    plain = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert type(plain) is WorldDiffusionPipeline
    plain.set_progress_bar_config(disable=True)
    ours = load_pipeline(folder)
    assert np.array_equal(_run(ours, 3, steps=2), _run(plain, 3, steps=2))
    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(folder)


CALL_STATE = ("max_length", "stride", "truncation_strategy", "padding_strategy", "is_local", "local_files_only")


@pytest.mark.parametrize("which", ["saved", "shipped"])
def test_a_saved_tokenizer_keeps_no_call_or_load_state(tiny_pipeline_dir, tmp_path, which):
    """The last call's truncation / padding and how the files were found are not written with the pipeline
    (``local_files_only: true`` used to be), and what it draws does not change for it."""
    folder = packaged_folder()
    if which == "saved":
        pipe = load_pipeline(tiny_pipeline_dir)
        _run(pipe, 3)  # a call leaves its truncation in the backend
        before = _run(pipe, 3)
        pipe.save_pretrained(tmp_path / "again", safe_serialization=True)
        folder = tmp_path / "again"
        assert np.array_equal(before, _run(load_pipeline(folder), 3))
    config = json.loads((folder / "tokenizer" / "tokenizer_config.json").read_text())
    backend = json.loads((folder / "tokenizer" / "tokenizer.json").read_text())
    assert not [key for key in CALL_STATE if key in config], config
    assert backend["truncation"] is None and backend["padding"] is None


def test_bad_inputs_are_refused(tiny_pipeline_dir, tmp_path):
    pipe = load_pipeline(tiny_pipeline_dir)
    with pytest.raises(ValueError, match="guidance_scale"):
        pipe(PROMPT, guidance_scale=0.5)
    with pytest.raises(ExploreError, match="unknown scheduler"):
        set_scheduler(pipe, "euler-magic")
    with pytest.raises(ExploreError, match="model_index.json"):
        load_pipeline(tmp_path)


def test_image_grid_lays_images_out():
    """Row by row, each image enlarged by nearest neighbour (its pixels copied, not blended), white gaps between."""
    from PIL import Image

    red, green, blue = (Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 255, 0), (0, 0, 255)))
    red.putpixel((0, 0), (0, 0, 0))
    grid = image_grid([red, green, blue], columns=2, scale=2, pad=1)
    assert grid.size == (2 * 17 + 1, 2 * 17 + 1)
    tile = 17  # 8 px x 2 + a 1 px gap
    assert grid.getpixel((1, 1)) == grid.getpixel((2, 2)) == (0, 0, 0)  # red's corner pixel, 2x2 and unblended
    assert grid.getpixel((3, 3)) == (255, 0, 0)
    assert grid.getpixel((1 + tile, 1)) == (0, 255, 0) and grid.getpixel((1, 1 + tile)) == (0, 0, 255)
    assert grid.getpixel((1 + tile, 1 + tile)) == (255, 255, 255)  # the empty slot of the last row
    assert grid.getpixel((0, 5)) == grid.getpixel((tile, 5)) == grid.getpixel((2 * tile, 5)) == (255, 255, 255)


@pytest.mark.parametrize("scheduler", ["dpm", "unipc"])
def test_fresh_and_reloaded_pipelines_sample_alike(tiny_config, tmp_path, scheduler):
    """diffusers' from_config swaps training-default values for the sampler's defaults on a fresh config
    but not on a reloaded one; make_scheduler passes every value, so both sample the same images."""
    from explore.diffusion.build import build_pipeline

    torch.manual_seed(0)
    fresh = build_pipeline(tiny_config)
    fresh.save_pretrained(tmp_path / "p", safe_serialization=True)
    reloaded = load_pipeline(tmp_path / "p")
    for pipe in (fresh, reloaded):
        set_scheduler(pipe, scheduler)
    assert np.array_equal(_run(fresh, 4), _run(reloaded, 4))


def test_t5_text_encoder_option(tiny_config, tmp_path):
    """The embedded VLM's T5 encoder as a frozen text encoder: built, run, saved and reloaded."""
    from explore.diffusion.build import build_pipeline

    config = tiny_config.model_copy(update={"text": tiny_config.text.model_copy(update={"encoder": "t5"})})
    pipe = build_pipeline(config)
    assert type(pipe.text_encoder).__name__ == "T5TextEncoder"
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.hidden_size
    pipe.save_pretrained(tmp_path / "t5", safe_serialization=True)
    reloaded = load_pipeline(tmp_path / "t5")
    assert np.array_equal(_run(pipe, 5, steps=2), _run(reloaded, 5, steps=2))
