"""Latent diffusion: the world's autoencoder trains and resumes exactly; a UNet on its latents trains,
saves and reloads through plain diffusers with the same images; bad settings are one-line errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny
from safetensors.torch import load_file

from explore.diffusion.autoencoder import (
    AutoencoderConfig,
    AutoencoderTrainSection,
    decode,
    encode,
    load_autoencoder,
    train_autoencoder,
)
from explore.diffusion.build import build_pipeline, warm_start
from explore.diffusion.config import DataSection
from explore.diffusion.pipeline import WorldDiffusionPipeline, load_pipeline, set_scheduler
from explore.diffusion.train import export_ema_pipeline, train_diffusion
from explore.errors import ConfigError, ExploreError


def _ae_config(out: Path, steps: int = 4) -> AutoencoderConfig:
    return AutoencoderConfig(
        model={"block_out_channels": [16, 16, 16], "latent_channels": 4, "norm_num_groups": 8},
        data=DataSection(resolution=32, max_objects=2),
        train=AutoencoderTrainSection(steps=steps, batch_size=4, warmup_steps=1),
        validation_scenes=4, validation_every=2, checkpoint_every=2, output_dir=str(out),
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_autoencoder(tmp_path_factory) -> Path:
    return train_autoencoder(_ae_config(tmp_path_factory.mktemp("ae") / "run"), progress=False)


def test_autoencoder_folder_is_plain_diffusers_with_its_scaling_factor(tiny_autoencoder):
    vae = AutoencoderKL.from_pretrained(tiny_autoencoder)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    latents = encode(vae, images)
    assert latents.shape == (2, 4, 8, 8)  # f = 4: two halvings
    log = [json.loads(line) for line in (tiny_autoencoder.parent / "train_log.jsonl").read_text().splitlines()]
    std = [r["validation"]["latent_std"] for r in log if "validation" in r][-1]
    assert vae.config.scaling_factor == pytest.approx(1 / std, rel=1e-4)
    assert decode(vae, latents).shape == (2, 3, 32, 32)


def test_autoencoder_resume_continues_exactly(tmp_path):
    straight = train_autoencoder(_ae_config(tmp_path / "a"), progress=False)
    _assert_resume_gives(straight, _ae_config(tmp_path / "b"))


def _assert_resume_gives(straight: Path, stopped: AutoencoderConfig) -> None:
    """``stopped`` killed after its first checkpoint and resumed ends with ``straight``'s weights, bit for bit."""
    with pytest.raises(KeyboardInterrupt):
        _interrupt_after_checkpoint(stopped)
    resumed = train_autoencoder(stopped, resume="latest", progress=False)
    a = load_file(straight / "diffusion_pytorch_model.safetensors")
    b = load_file(resumed / "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_decoder_fine_tuning_keeps_the_encoder_and_scaling_factor(tiny_autoencoder, tmp_path):
    """train.trainable: decoder (model.init_from): the latents a UNet was trained on stay exactly the same; only
    the decoder changes. Another architecture or no init_from is a one-line error."""
    base = _ae_config(tmp_path / "ft")
    config = base.model_copy(update={
        "model": base.model.model_copy(update={"init_from": str(tiny_autoencoder)}),
        "train": base.train.model_copy(update={"trainable": "decoder", "lr": 1e-2})})  # fmt: skip
    tuned = train_autoencoder(config, progress=False)
    before, after = AutoencoderKL.from_pretrained(tiny_autoencoder), AutoencoderKL.from_pretrained(tuned)
    assert after.config.scaling_factor == before.config.scaling_factor
    old, new = before.state_dict(), after.state_dict()
    frozen = [k for k in old if k.startswith(("encoder.", "quant_conv."))]
    assert frozen and all(torch.equal(old[k], new[k]) for k in frozen)
    assert any(not torch.equal(old[k], new[k]) for k in old if k.startswith("decoder."))
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(encode(before, images), encode(after, images))
    other = config.model_copy(update={"model": config.model.model_copy(update={"block_out_channels": [16, 32, 32]})})
    with pytest.raises(ExploreError, match="another architecture than the config's model section"):
        train_autoencoder(other.model_copy(update={"output_dir": str(tmp_path / "other")}), progress=False)
    with pytest.raises(ValueError, match="set model.init_from"):
        AutoencoderConfig(train={"steps": 2, "trainable": "decoder"})


def _interrupt_after_checkpoint(config: AutoencoderConfig) -> None:
    """Run ``config`` and stop it (KeyboardInterrupt) right after its first checkpoint is saved."""
    import explore.diffusion.autoencoder as module

    original = module.save_checkpoint

    def save_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        raise KeyboardInterrupt

    module.save_checkpoint = save_then_stop
    try:
        train_autoencoder(config, progress=False)
    finally:
        module.save_checkpoint = original


def _latent_config(tiny_config, autoencoder: Path, out: Path):
    model = tiny_config.model.model_copy(update={"autoencoder": str(autoencoder)})
    loss = tiny_config.loss.model_copy(update={"perceptual_weight": 0.0})
    return tiny_config.model_copy(update={"model": model, "loss": loss, "output_dir": str(out)})


@pytest.fixture(scope="module")
def latent_pipeline(tiny_autoencoder, tmp_path_factory) -> Path:
    """A tiny latent pipeline trained on ``tiny_autoencoder``'s latents."""
    from explore.diffusion.config import load_diffusion_config

    tiny = load_diffusion_config(Path(__file__).resolve().parents[2] / "configs" / "diffusion" / "tiny.yaml")
    out = tmp_path_factory.mktemp("latent") / "run"
    return train_diffusion(_latent_config(tiny, tiny_autoencoder, out), progress=False)


def test_latent_pipeline_trains_and_reloads_through_plain_diffusers(latent_pipeline):
    final = latent_pipeline
    index = json.loads((final / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    ours = load_pipeline(final)
    assert ours.latent and ours.unet.config.in_channels == 4 and ours.unet.config.sample_size == 8
    assert ours.scheduler.config.clip_sample is False  # latents are not bounded to [-1, 1]
    plain = WorldDiffusionPipeline.from_pretrained(final)  # diffusers' own loading, none of explore's checks
    for pipe in (ours, plain):
        set_scheduler(pipe, "ddim")
        pipe.set_progress_bar_config(disable=True)

    def run(pipe):
        return pipe(["a red circle"], num_inference_steps=3, guidance_scale=2.0, output_type="np",
                    generator=torch.Generator().manual_seed(0)).images  # fmt: skip

    for pipe in (ours, plain):
        pipe.scheduler.set_timesteps(20)  # not the last training step, where alpha_bar ~ 0 (see LATENT_SAMPLER_SETTINGS)
        assert pipe.scheduler.timesteps[0] == 950 and pipe.scheduler.config.clip_sample is False
    images = run(ours)
    assert images.shape == (1, 32, 32, 3)  # decoded to the training resolution
    assert ours.image_size == plain.image_size == 32 and ours.unet.config.sample_size == 8  # what eval renders at
    assert np.array_equal(images, run(plain))


def test_a_velocity_latent_pipeline_samples_from_the_last_step_the_same_through_plain_diffusers(
    tiny_config, tiny_autoencoder, tmp_path
):
    config = _latent_config(tiny_config, tiny_autoencoder, tmp_path / "run")
    noise = config.noise.model_copy(update={"prediction_type": "v_prediction"})
    final = train_diffusion(config.model_copy(update={"noise": noise}), progress=False)
    ours, plain = load_pipeline(final), WorldDiffusionPipeline.from_pretrained(final)
    results = []
    for pipe in (ours, plain):
        set_scheduler(pipe, "dpm")
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler.set_timesteps(4)
        assert pipe.scheduler.config.prediction_type == "v_prediction" and pipe.scheduler.timesteps[0] == 999
        results.append(pipe(["a red circle"], num_inference_steps=4, guidance_scale=2.0, output_type="np",
                            generator=torch.Generator().manual_seed(0)).images)  # fmt: skip
    assert np.isfinite(results[0]).all() and results[0].std() > 0
    assert np.array_equal(*results)


def test_pixel_pipeline_has_no_autoencoder(tiny_config):
    pipe = build_pipeline(tiny_config)
    assert not pipe.latent and pipe.vae is None and pipe.unet.config.in_channels == 3


def test_missing_autoencoder_folder_is_one_line(tiny_config, tmp_path):
    config = _latent_config(tiny_config, tmp_path / "nope", tmp_path / "run")
    with pytest.raises(ExploreError, match="not an AutoencoderKL folder.*explore diffusion autoencoder"):
        build_pipeline(config)
    with pytest.raises(ExploreError, match="not an AutoencoderKL folder"):
        load_autoencoder(tmp_path)


def test_perceptual_loss_with_an_autoencoder_is_refused(tiny_config, tiny_autoencoder):
    data = tiny_config.model_dump()
    data["model"]["autoencoder"] = str(tiny_autoencoder)
    data["loss"]["perceptual_weight"] = 0.1
    with pytest.raises(ValueError, match="perceptual_weight must be 0 with model.autoencoder"):
        type(tiny_config).model_validate(data)


def test_unknown_autoencoder_config_key_is_refused(tmp_path):
    from explore.diffusion.autoencoder import load_autoencoder_config

    path = tmp_path / "ae.yaml"
    path.write_text("train: {steps: 2}\nmodel: {latent_chanels: 4}\n")
    with pytest.raises(ConfigError, match="latent_chanels"):
        load_autoencoder_config(path)


def test_world_geneval_renders_and_detects_at_the_decoded_size(tiny_autoencoder, tmp_path):
    """The real renders beside a latent model's images are drawn at 64 px (the decoded size), not at the UNet's
    16 x 16 latent side, where the detector cannot tell the shapes (every real-render score would fall)."""
    from explore.diffusion.config import load_diffusion_config
    from explore.eval.geneval import evaluate_geneval, geneval_examples

    config = load_diffusion_config(Path(__file__).resolve().parents[2] / "configs" / "diffusion" / "tiny-grounded.yaml")
    model = config.model.model_copy(update={"autoencoder": str(tiny_autoencoder), "pixel_unshuffle": 1})
    torch.manual_seed(0)
    pipe = set_scheduler(build_pipeline(config.model_copy(update={"model": model})), "ddim")
    assert pipe.unet.config.sample_size == 16 and pipe.image_size == 64
    summary = evaluate_geneval(pipe, geneval_examples(1, seed=3), tmp_path, layout="auto", seed=3, steps=2,
                               progress=False)  # fmt: skip
    assert summary["seen"]["real"]["overall"] == 1.0


@pytest.mark.parametrize("network", ["world-vit", "vlm"])
def test_autoencoder_perceptual_term_enters_the_loss(tmp_path, network):
    plain = train_autoencoder(_ae_config(tmp_path / "plain", steps=2), progress=False)
    config = _ae_config(tmp_path / "perceptual", steps=2)
    train = config.train.model_copy(update={"perceptual_weight": 1.0, "perceptual_network": network})
    perceptual = train_autoencoder(config.model_copy(update={"train": train}), progress=False)
    logs = [[json.loads(line) for line in (folder.parent / "train_log.jsonl").read_text().splitlines()]
            for folder in (plain, perceptual)]  # fmt: skip
    first = [next(r for r in log if r.get("step") == 1 and "loss" in r) for log in logs]
    assert first[0]["l1"] == first[1]["l1"]  # same start, same batch
    assert first[1]["loss"] > first[0]["loss"]  # plus the perceptual distance
    a = load_file(plain / "diffusion_pytorch_model.safetensors")
    b = load_file(perceptual / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_latent_cache_holds_the_encoded_images_once_per_autoencoder(tiny_autoencoder, tmp_path, capsys):
    from explore.diffusion.cache import training_data
    from explore.diffusion.latents import latent_data

    data = DataSection(resolution=32, max_objects=2, cache_dir=str(tmp_path / "cache"), cache_size=20)
    vae = load_autoencoder(str(tiny_autoencoder))
    batch = latent_data(data, vae, progress=True)
    assert capsys.readouterr().out.count("20/20 images encoded") == 1
    latents, prompts, layouts = batch(15, 8)  # wraps around the 20 pairs
    images, prompts_again, layouts_again = training_data(data, progress=False)(15, 8)
    assert prompts == prompts_again and torch.equal(layouts, layouts_again)
    with torch.no_grad():
        assert torch.allclose(latents, encode(vae, images), atol=1e-5)
    folders = sorted(p.name for p in (tmp_path / "cache").glob("latents-*"))
    assert len(folders) == 1
    again = latent_data(data, vae, progress=True)  # built: read, not encoded again
    assert "images encoded" not in capsys.readouterr().out and torch.equal(again(15, 8)[0], latents)
    on_the_fly = latent_data(data.model_copy(update={"cache_dir": None}), vae, progress=False)  # no wrap: 2..9
    assert torch.allclose(on_the_fly(2, 8)[0], batch(2, 8)[0], atol=1e-5)


def test_init_from_warm_starts_from_a_pipeline_and_checks_it(tiny_config, tiny_autoencoder, tmp_path):
    """model.init_from copies a trained pipeline's UNet and text encoder (how a run continues from a shipped
    model without its checkpoints); another architecture or another autoencoder is one clear error."""
    first = train_diffusion(_latent_config(tiny_config, tiny_autoencoder, tmp_path / "first"), progress=False)
    config = _latent_config(tiny_config, tiny_autoencoder, tmp_path / "second")
    warm = config.model_copy(update={"model": config.model.model_copy(update={"init_from": str(first)})})
    pipe = build_pipeline(warm)
    assert not torch.equal(pipe.unet.conv_in.weight, load_pipeline(first).unet.conv_in.weight)  # fresh init
    warm_start(pipe, str(first))
    trained = load_pipeline(first)
    for name in ("unet", "text_encoder"):
        a, b = getattr(pipe, name).state_dict(), getattr(trained, name).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    train_diffusion(warm, progress=False)  # runs from there (a resumed run would take its checkpoint's weights)
    wide = warm.model_copy(update={"model": warm.model.model_copy(update={"block_out_channels": [32, 32]})})
    with pytest.raises(ExploreError, match="init_from .*unet tensor .* is shape .*architecture it was trained with"):
        warm_start(build_pipeline(wide), str(first))
    other_ae = train_autoencoder(_ae_config(tmp_path / "ae2", steps=2), progress=False)
    with pytest.raises(ExploreError, match="another autoencoder"):
        warm_start(build_pipeline(_latent_config(tiny_config, other_ae, tmp_path / "x")), str(first))
    with pytest.raises(ExploreError, match="init_from .*no such pipeline folder"):
        warm_start(pipe, str(tmp_path / "nope"))


def _tiny_ae_config(teacher: Path, out: Path, steps: int = 4) -> AutoencoderConfig:
    return AutoencoderConfig(
        model={"kind": "tiny", "teacher": str(teacher), "block_out_channels": [8, 8, 8]},
        data=DataSection(resolution=32, max_objects=2),
        train=AutoencoderTrainSection(steps=steps, batch_size=4, warmup_steps=1, lr=1e-2),
        validation_scenes=4, validation_every=2, checkpoint_every=2, output_dir=str(out),
    )  # fmt: skip


def test_tiny_autoencoder_learns_the_teachers_latent_space(tiny_autoencoder, tmp_path):
    """model.kind: tiny trains a plain diffusers AutoencoderTiny on the teacher's latents, with the teacher's
    scaling_factor and latent shape; the teacher is untouched; a killed run resumes exactly."""
    teacher_weights = load_file(tiny_autoencoder / "diffusion_pytorch_model.safetensors")
    student = train_autoencoder(_tiny_ae_config(tiny_autoencoder, tmp_path / "a"), progress=False)
    tiny, teacher = AutoencoderTiny.from_pretrained(student), AutoencoderKL.from_pretrained(tiny_autoencoder)
    assert tiny.config.scaling_factor == teacher.config.scaling_factor
    # diffusers would warn on load about the block_out_channels it records itself; the key comes back on load
    assert "block_out_channels" not in json.loads((student / "config.json").read_text())
    assert list(tiny.config.block_out_channels) == [8, 8, 8]
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert tiny.encode(images).latents.shape == teacher.encode(images).latent_dist.mode().shape == (2, 4, 8, 8)
        assert tiny.decode(teacher.encode(images).latent_dist.mode()).sample.shape == (2, 3, 32, 32)
    after = load_file(tiny_autoencoder / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(teacher_weights[k], after[k]) for k in teacher_weights)
    log = [json.loads(line) for line in (student.parent / "train_log.jsonl").read_text().splitlines()]
    validation = [r["validation"] for r in log if "validation" in r]
    assert validation and {"exact", "object", "latent_mse"} <= set(validation[-1])
    _assert_resume_gives(student, _tiny_ae_config(tiny_autoencoder, tmp_path / "b"))


def test_tiny_autoencoder_config_errors_are_one_line(tiny_autoencoder, tmp_path):
    with pytest.raises(ValueError, match="one width"):
        AutoencoderConfig(model={"kind": "tiny", "block_out_channels": [16, 32, 32]}, train={"steps": 2})
    with pytest.raises(ValueError, match="set model.init_from"):
        AutoencoderConfig(model={"kind": "tiny"}, train={"steps": 2, "trainable": "decoder"})
    with pytest.raises(ValueError, match="kind"):
        AutoencoderConfig(model={"kind": "vq"}, train={"steps": 2})
    two_levels = _tiny_ae_config(tiny_autoencoder, tmp_path / "x")
    two_levels = two_levels.model_copy(update={"model": two_levels.model.model_copy(
        update={"block_out_channels": [8, 8], "encoder_blocks": [1, 1], "decoder_blocks": [1, 1]})})  # fmt: skip
    with pytest.raises(ExploreError, match="2 levels, the teacher .* 3"):
        train_autoencoder(two_levels, progress=False)


def test_a_tiny_autoencoder_replaces_the_pipelines_and_loads_through_plain_diffusers(
    latent_pipeline, tiny_autoencoder, tmp_path
):
    """explore diffusion export --vae: the folder names AutoencoderTiny, plain from_pretrained and explore give the
    same images, which differ from the KL decoder's only by the decoder; another latent space is one line."""
    student = train_autoencoder(_tiny_ae_config(tiny_autoencoder, tmp_path / "tiny"), progress=False)
    folder = export_ema_pipeline(latent_pipeline, tmp_path / "with-tiny", vae=student)
    assert json.loads((folder / "model_index.json").read_text())["vae"] == ["diffusers", "AutoencoderTiny"]
    assert "block_out_channels" not in json.loads((folder / "vae" / "config.json").read_text())
    ours, plain = load_pipeline(folder), WorldDiffusionPipeline.from_pretrained(folder)
    kl = load_pipeline(latent_pipeline)
    assert isinstance(plain.vae, AutoencoderTiny) and ours.image_size == kl.image_size == 32

    def run(pipe, output_type="np"):
        pipe.set_progress_bar_config(disable=True)
        return pipe(["a red circle"], num_inference_steps=3, output_type=output_type,
                    generator=torch.Generator().manual_seed(0)).images  # fmt: skip

    images = run(ours)
    assert np.array_equal(images, run(plain)) and not np.array_equal(images, run(kl))
    # the same latents: decoding kl's with the tiny decoder gives these images
    latents = []
    kl.vae.decode = lambda z, decode=kl.vae.decode: latents.append(z) or decode(z)
    run(kl)
    with torch.no_grad():
        expected = (ours.vae.decode(latents[0]).sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(images, expected, atol=1e-6)
    other = AutoencoderTiny(encoder_block_out_channels=(8, 8, 8), decoder_block_out_channels=(8, 8, 8),
                            num_encoder_blocks=(1, 1, 1), num_decoder_blocks=(1, 1, 1), scaling_factor=0.5)  # fmt: skip
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ExploreError, match="another latent space .*scaling_factor"):
        export_ema_pipeline(latent_pipeline, tmp_path / "x", vae=tmp_path / "other")
    with pytest.raises(ExploreError, match="not an AutoencoderKL or AutoencoderTiny folder"):
        export_ema_pipeline(latent_pipeline, tmp_path / "x", vae=tmp_path)
    assert not (tmp_path / "x").exists()


def test_export_vae_errors_exit_non_zero(latent_pipeline, tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    import sys

    from typer.testing import CliRunner

    from explore.cli import app, main

    monkeypatch.setattr(sys, "argv", ["explore", "diffusion", "export", str(tiny_pipeline_dir), "--out",
                                      str(tmp_path / "x"), "--vae", str(latent_pipeline / "vae")])  # fmt: skip
    with pytest.raises(SystemExit) as exit:
        main()
    assert exit.value.code == 2 and "denoises pixels" in capsys.readouterr().err
    result = CliRunner().invoke(app, ["diffusion", "export", str(latent_pipeline), "--out", str(tmp_path / "y"),
                                      "--vae", str(latent_pipeline / "vae")])  # fmt: skip
    assert result.exit_code == 0 and "autoencoder" in result.output, result.output
