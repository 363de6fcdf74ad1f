"""v-prediction (noise.prediction_type: v_prediction): the loss regresses onto diffusers' velocity with min-SNR's
weight on the clean image; latent samplers of a velocity model start at the last training step; a velocity folder
samples the same through plain diffusers; an unknown prediction type is a config error."""

from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler

from explore.diffusion.build import build_pipeline
from explore.diffusion.config import load_diffusion_config
from explore.diffusion.data import layout_maps, training_batch
from explore.diffusion.loss import diffusion_loss
from explore.diffusion.pipeline import make_scheduler
from explore.diffusion.text_encoder import tokenize_prompts
from explore.diffusion.unet import predict_noise
from explore.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "diffusion"


def _velocity(config):
    noise = config.noise.model_copy(update={"prediction_type": "v_prediction"})
    return config.model_copy(update={"noise": noise})


@pytest.fixture
def velocity_pipe(tmp_path):
    config = load_diffusion_config(CONFIGS / "tiny-grounded.yaml")
    config = _velocity(config.model_copy(update={"output_dir": str(tmp_path / "run")}))
    torch.manual_seed(0)
    pipe = build_pipeline(config)
    images, prompts, scenes = training_batch(0, 4, world_seed=0, max_objects=2, resolution=64, relation_prompts=0.0)
    ids, mask = tokenize_prompts(pipe.tokenizer, prompts, 48)
    with torch.no_grad():
        context = pipe.text_encoder(ids, mask)
    return pipe, images, context, mask, layout_maps(scenes, config.model.layout_given_channel)


def test_the_loss_regresses_onto_the_velocity_with_min_snr_weight_on_the_clean_image(velocity_pipe):
    pipe, images, context, mask, layouts = velocity_pipe
    scheduler = pipe.scheduler
    assert scheduler.config.prediction_type == "v_prediction"
    parts = diffusion_loss(pipe.unet, context, mask, images, scheduler, torch.Generator().manual_seed(3),
                           layout=layouts, min_snr_gamma=5.0)  # fmt: skip
    generator = torch.Generator().manual_seed(3)  # the same draws, by hand
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (4,), generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    noisy = scheduler.add_noise(images, noise, timesteps)
    with torch.no_grad():
        predicted = predict_noise(pipe.unet, noisy, timesteps, context, mask, layouts)
    a = scheduler.alphas_cumprod[timesteps][:, None, None, None]
    snr = (a / (1 - a)).flatten()
    # the clean image the prediction implies, and min(SNR, gamma) on its error: Min-SNR's weight, whatever is predicted
    clean = a.sqrt() * noisy - (1 - a).sqrt() * predicted
    expected = (snr.clamp(max=5.0) * (clean - images).pow(2).mean(dim=(1, 2, 3))).mean()
    assert parts.mse == pytest.approx(expected.item(), rel=1e-4)
    velocity = a.sqrt() * noise - (1 - a).sqrt() * images
    plain = diffusion_loss(
        pipe.unet, context, mask, images, scheduler, torch.Generator().manual_seed(3), layout=layouts
    )
    assert plain.mse == pytest.approx((predicted - velocity).pow(2).mean().item(), rel=1e-5)
    assert plain.mse != pytest.approx((predicted - noise).pow(2).mean().item(), rel=1e-2)  # not the noise


def test_a_prediction_of_the_exact_velocity_has_no_loss(monkeypatch):
    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction", clip_sample=False)
    images = torch.randn(3, 4, 8, 8)

    class Oracle(torch.nn.Module):  # knows the clean images, so it can say the velocity of any noisy sample
        def forward(self, sample, timestep, context, mask=None):
            a = scheduler.alphas_cumprod[timestep][:, None, None, None]
            noise = (sample - a.sqrt() * images) / (1 - a).sqrt()
            return a.sqrt() * noise - (1 - a).sqrt() * images

    import explore.diffusion.loss as loss_module

    monkeypatch.setattr(
        loss_module, "predict_noise", lambda unet, sample, t, context, mask, layout: unet(sample, t, context, mask)
    )
    parts = diffusion_loss(Oracle(), None, None, images, scheduler, torch.Generator().manual_seed(0), min_snr_gamma=5.0)
    assert parts.mse < 1e-8


def test_latent_samplers_of_a_velocity_model_start_at_the_last_training_step():
    velocity = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction").config
    epsilon = DDPMScheduler(beta_schedule="squaredcos_cap_v2").config
    for name in ("ddim", "dpm", "unipc"):
        sampler = make_scheduler(name, velocity, latent=True)
        sampler.set_timesteps(4)
        assert sampler.config.prediction_type == "v_prediction"
        assert sampler.timesteps.tolist() == [999, 749, 499, 249], name  # trailing
        leading = make_scheduler(name, epsilon, latent=True)
        leading.set_timesteps(4)
        assert leading.timesteps.tolist() == [750, 500, 250, 0] if name == "ddim" else [800, 600, 400, 200], name
        told = make_scheduler(name, velocity, latent=True, timestep_spacing="leading")  # overrides still win
        assert told.config.timestep_spacing == "leading"


def test_an_unknown_prediction_type_is_a_config_error(tmp_path):
    text = (CONFIGS / "tiny.yaml").read_text() + "noise:\n  prediction_type: sample\n"
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(
        ConfigError, match="invalid value for 'noise.prediction_type': Input should be 'epsilon' or 'v_prediction'"
    ):
        load_diffusion_config(path)
