"""Model guidance (loss.model_guidance): conditioned rows learn eps + w * sg(own - unconditional); dropped rows the
plain target; the gradient does not flow through the target; a run with it trains, ramps and resumes."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from explore.diffusion.build import build_pipeline
from explore.diffusion.config import load_diffusion_config
from explore.diffusion.data import layout_maps, training_batch
from explore.diffusion.loss import diffusion_loss
from explore.diffusion.text_encoder import tokenize_prompts
from explore.diffusion.train import model_guidance, train_diffusion
from explore.diffusion.unet import predict_noise
from explore.errors import ConfigError, ExploreError

TINY_GROUNDED = Path(__file__).resolve().parents[2] / "configs" / "diffusion" / "tiny-grounded.yaml"
PROMPT = "a red circle above a blue square"


@pytest.fixture
def grounded(tmp_path):
    config = load_diffusion_config(TINY_GROUNDED)
    config = config.model_copy(update={"output_dir": str(tmp_path / "run"),
                                       "data": config.data.model_copy(update={"cache_dir": None})})  # fmt: skip
    torch.manual_seed(0)
    pipe = build_pipeline(config)
    images, prompts, scenes = training_batch(0, 4, world_seed=0, max_objects=2, resolution=64, relation_prompts=0.0)
    layouts = layout_maps(scenes, config.model.layout_given_channel)
    return config, pipe, images, prompts, layouts


def _inputs(pipe, prompts):
    ids, mask = tokenize_prompts(pipe.tokenizer, prompts, 48)
    empty_ids, empty_mask = tokenize_prompts(pipe.tokenizer, [""], 48)
    with torch.no_grad():
        empty = pipe.text_encoder(empty_ids, empty_mask)
    unconditional = (empty.expand(len(prompts), -1, -1), empty_mask.expand(len(prompts), -1))
    return pipe.text_encoder(ids, mask).detach(), mask, unconditional


def test_conditioned_rows_learn_the_guided_target_and_dropped_rows_the_plain_one(grounded):
    _, pipe, images, prompts, layouts = grounded
    context, mask, unconditional = _inputs(pipe, prompts)
    w, conditioned = 0.6, torch.tensor([True, False, True, True])
    parts = diffusion_loss(pipe.unet, context, mask, images, pipe.scheduler, torch.Generator().manual_seed(3),
                           layout=layouts, guidance=w, unconditional=unconditional,
                           conditioned=conditioned)  # fmt: skip
    # the same draws, by hand: timesteps then noise from the generator, as the loss takes them
    generator = torch.Generator().manual_seed(3)
    timesteps = torch.randint(0, pipe.scheduler.config.num_train_timesteps, (4,), generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    noisy = pipe.scheduler.add_noise(images, noise, timesteps)
    with torch.no_grad():
        own = predict_noise(pipe.unet, noisy, timesteps, context, mask, layouts)
        uncond = predict_noise(pipe.unet, noisy, timesteps, *unconditional, torch.zeros_like(layouts))
    target = noise + w * conditioned.float()[:, None, None, None] * (own - uncond)
    assert parts.mse == pytest.approx((own - target).pow(2).mean().item(), rel=1e-5)
    plain = diffusion_loss(pipe.unet, context, mask, images, pipe.scheduler, torch.Generator().manual_seed(3),
                           layout=layouts)  # fmt: skip
    assert plain.mse == pytest.approx((own - noise).pow(2).mean().item(), rel=1e-5)
    assert abs(parts.mse - plain.mse) > 1e-4  # the guided target differs
    none = diffusion_loss(pipe.unet, context, mask, images, pipe.scheduler, torch.Generator().manual_seed(3),
                          layout=layouts, guidance=w, unconditional=unconditional,
                          conditioned=torch.zeros(4, dtype=torch.bool))  # fmt: skip
    assert none.mse == pytest.approx(plain.mse, rel=1e-6)  # all rows dropped: the plain target


def test_the_gradient_does_not_flow_through_the_target(grounded):
    """d loss / d prediction = 2 (prediction - target) / n, not (1 - w) times it: the target is detached."""
    _, pipe, images, prompts, layouts = grounded
    context, mask, unconditional = _inputs(pipe, prompts)
    w = 0.6
    weight = pipe.unet.conv_out.weight
    grads = []
    for guidance in (w, 0.0):
        pipe.unet.zero_grad()
        generator = torch.Generator().manual_seed(3)
        kwargs = {"guidance": guidance, "unconditional": unconditional, "conditioned": torch.ones(4, dtype=torch.bool)}
        parts = diffusion_loss(pipe.unet, context, mask, images, pipe.scheduler, generator, layout=layouts,
                               **(kwargs if guidance else {}))  # fmt: skip
        parts.loss.backward()
        grads.append(weight.grad.clone())
    # with a detached target the guided gradient is not the plain one scaled by (1 - w)
    assert not torch.allclose(grads[0], (1 - w) * grads[1], atol=1e-6)
    assert grads[0].abs().sum() > 0


def test_guidance_without_its_inputs_is_refused(grounded):
    _, pipe, images, prompts, layouts = grounded
    context, mask, _ = _inputs(pipe, prompts)
    with pytest.raises(ValueError, match="unconditional"):
        diffusion_loss(pipe.unet, context, mask, images, pipe.scheduler, torch.Generator(), layout=layouts,
                       guidance=0.5)  # fmt: skip


def test_the_weight_ramps_up_over_the_warmup():
    assert [model_guidance(0.6, 4, s) for s in (0, 2, 4, 9)] == [0.0, 0.3, 0.6, 0.6]
    assert model_guidance(0.6, 0, 0) == 0.6


def test_a_guided_run_trains_and_resumes_exactly(grounded, tmp_path):
    config, *_ = grounded
    config = config.model_copy(update={
        "loss": config.loss.model_copy(update={"model_guidance": 0.5, "model_guidance_warmup": 2}),
        "train": config.train.model_copy(update={"steps": 4}), "keep_checkpoints": 2, "checkpoint_every": 2,
        "validation": config.validation.model_copy(update={"guidance": 1.0, "every": 4}),
    })  # fmt: skip
    straight = train_diffusion(config, progress=False)
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(tmp_path / "run", resumed_dir)
    shutil.rmtree(resumed_dir / "checkpoints" / "step-0000004")
    shutil.rmtree(resumed_dir / "pipeline")
    resumed = train_diffusion(config.model_copy(update={"output_dir": str(resumed_dir)}), resume="latest",
                              progress=False)  # fmt: skip
    a = load_file(straight / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the guidance is part of the run record: resuming with another weight is refused
    other = config.model_copy(update={"output_dir": str(resumed_dir),
                                      "loss": config.loss.model_copy(update={"model_guidance": 0.3})})  # fmt: skip
    with pytest.raises(ExploreError, match="config"):
        train_diffusion(other, resume="latest", progress=False)


def test_model_guidance_of_one_or_more_is_a_config_error(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(TINY_GROUNDED.read_text().replace("perceptual_weight: 0.0", "perceptual_weight: 0.0\n"
                                                      "  model_guidance: 1.0"))  # fmt: skip
    with pytest.raises(ConfigError, match="model_guidance"):
        load_diffusion_config(path)


def test_a_guided_folder_samples_without_cfg_by_default_through_plain_diffusers(grounded):
    """model_index.json records guidance 1; plain DiffusionPipeline and explore generate sample at it by default."""
    from diffusers import DiffusionPipeline
    from typer.testing import CliRunner

    from explore.cli import app

    config, *_ = grounded
    config = config.model_copy(update={
        "loss": config.loss.model_copy(update={"model_guidance": 0.5}),
        "validation": config.validation.model_copy(update={"guidance": 1.0}),
    })  # fmt: skip
    folder = train_diffusion(config, progress=False)
    assert json.loads((folder / "model_index.json").read_text())["guidance_scale"] == 1.0
    plain = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert plain.default_guidance("auto") == 1.0

    def draw(**kw):
        return plain(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np",
                     **kw).images  # fmt: skip

    assert np.array_equal(draw(), draw(guidance_scale=1.0))
    assert not np.array_equal(draw(), draw(guidance_scale=3.0))
    result = CliRunner().invoke(app, ["generate", PROMPT, "-n", "1", "--steps", "2", "--checkpoint", str(folder),
                                      "--out", str(folder.parent / "g.png")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "guidance 1.0" in result.output and "warning" not in result.output
    result = CliRunner().invoke(app, ["generate", PROMPT, "-n", "1", "--steps", "2", "--checkpoint", str(folder),
                                      "--guidance", "3", "--out", str(folder.parent / "g3.png")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "trained with model guidance" in result.output and "guidance 3.0" in result.output
    # a folder trained with classifier-free guidance keeps the path's default
    untrained = build_pipeline(load_diffusion_config(TINY_GROUNDED))
    assert untrained.config.guidance_scale is None and untrained.default_guidance("auto") == 3.0


def test_the_web_app_samples_at_the_trained_guidance_unless_told():
    from explore.serve.generate import resolve_settings

    assert resolve_settings(True, "default", "default", None, 1.0)["guidance"] == 1.0
    assert resolve_settings(True, "default", "default", 2.0, 1.0)["guidance"] == 2.0
    assert resolve_settings(True, "default", "default", None)["guidance"] == 3.0  # a CFG-trained folder
