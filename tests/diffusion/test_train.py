"""Training: the loss falls with and without the perceptual term; checkpoints resume exactly."""

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from explore.diffusion.autoencoder import load_autoencoder_config
from explore.diffusion.build import build_pipeline
from explore.diffusion.config import load_diffusion_config
from explore.diffusion.data import relation_prompt, training_batch
from explore.diffusion.loss import diffusion_loss
from explore.diffusion.text_encoder import tokenize_prompts
from explore.diffusion.train import train_diffusion
from explore.errors import ConfigError, ExploreError

ROOT = Path(__file__).resolve().parents[2]


def test_committed_configs_validate():
    paths = sorted((ROOT / "configs/diffusion").glob("*.yaml"))
    assert len(paths) > 10
    for path in paths:
        loader = load_autoencoder_config if path.name.startswith("autoencoder") else load_diffusion_config
        loader(path)


def _loss(pipe, images, ids, mask, seed, features, weight):
    context = pipe.text_encoder(ids, mask)
    return diffusion_loss(pipe.unet, context, mask, images, pipe.scheduler, torch.Generator().manual_seed(seed),
                          min_snr_gamma=5.0, perceptual_weight=weight, features=features)  # fmt: skip


def test_prompts_padded_to_max_length_encode_the_same(tiny_config):
    """train.compile pads every batch to text.max_length (one static shape): the ids and mask extend the
    longest-padded ones with padding, and the text encoder's output on the real tokens is the same."""
    pipe = build_pipeline(tiny_config)
    prompts = ["a red circle", "a large blue square at the top left above a small green star"]
    ids, mask = tokenize_prompts(pipe.tokenizer, prompts, 48)
    padded_ids, padded_mask = tokenize_prompts(pipe.tokenizer, prompts, 48, pad_to_max=True)
    length = ids.shape[1]
    assert length < 48 and padded_ids.shape == padded_mask.shape == (2, 48)
    assert torch.equal(padded_ids[:, :length], ids) and torch.equal(padded_mask[:, :length], mask)
    assert not padded_mask[:, length:].any()
    with torch.no_grad():
        short, long = pipe.text_encoder(ids, mask), pipe.text_encoder(padded_ids, padded_mask)
    real = mask.bool()
    assert torch.allclose(short[real], long[:, :length][real], atol=1e-5)


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_a_few_steps_lower_the_loss(tiny_config, tiny_features, weight):
    """Same batch, same timesteps and noise each step: the objective is fixed, so it must fall."""
    pipe = build_pipeline(tiny_config)
    images, prompts, _ = training_batch(0, 8, world_seed=0, max_objects=2, resolution=32, relation_prompts=0.25)
    ids, mask = tokenize_prompts(pipe.tokenizer, prompts, 48)
    params = list(pipe.unet.parameters()) + list(pipe.text_encoder.parameters())
    optimizer = torch.optim.Adam(params, lr=3e-3)
    before = _loss(pipe, images, ids, mask, 0, tiny_features, weight)
    assert (before.perceptual > 0) == (weight > 0)
    for _ in range(8):
        parts = _loss(pipe, images, ids, mask, 0, tiny_features, weight)
        parts.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    after = _loss(pipe, images, ids, mask, 0, tiny_features, weight)
    assert after.loss.item() < 0.9 * before.loss.item()
    assert not any(p.grad is not None for p in tiny_features.parameters())  # the VLM stays frozen


def test_perceptual_weight_needs_features(tiny_config):
    pipe = build_pipeline(tiny_config)
    images, prompts, _ = training_batch(0, 2, world_seed=0, max_objects=2, resolution=32, relation_prompts=0.0)
    ids, mask = tokenize_prompts(pipe.tokenizer, prompts, 48)
    with pytest.raises(ValueError, match="features"):
        _loss(pipe, images, ids, mask, 0, None, 0.1)


def test_training_batches_are_reproducible_and_prompts_describe_the_scene():
    a = training_batch(5, 6, world_seed=0, max_objects=4, resolution=32, relation_prompts=0.5)
    b = training_batch(5, 6, world_seed=0, max_objects=4, resolution=32, relation_prompts=0.5)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert a[0].shape == (6, 3, 32, 32) and a[0].min() >= -1 and a[0].max() <= 1
    for prompt, scene in zip(a[1], a[2]):
        assert all(o.colour in prompt and o.shape in prompt for o in scene.objects)
        assert prompt == relation_prompt(scene) or all(o.position in prompt for o in scene.objects)


def test_resume_continues_exactly(tiny_config, tmp_path):
    """4 steps straight == 2 steps, then --resume latest for the other 2 (weights, EMA, optimizer, RNG)."""
    config = tiny_config.model_copy(
        update={"keep_checkpoints": 2, "loss": tiny_config.loss.model_copy(update={"perceptual_weight": 0.0})}
    )
    straight = train_diffusion(config, progress=False)
    run = tmp_path / "run"
    resumed_dir = tmp_path / "resumed"
    shutil.copytree(run, resumed_dir)
    shutil.rmtree(resumed_dir / "checkpoints" / "step-0000004")
    shutil.rmtree(resumed_dir / "pipeline")
    resumed = train_diffusion(
        config.model_copy(update={"output_dir": str(resumed_dir)}), resume="latest", progress=False
    )
    for part in ("unet", "text_encoder"):
        a = load_file(straight / part / "diffusion_pytorch_model.safetensors")
        b = load_file(resumed / part / "diffusion_pytorch_model.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step-0000003.png", "step-0000004.png"]


def test_a_fresh_start_over_an_earlier_run_is_refused_and_touches_nothing(tiny_config, tmp_path):
    config = tiny_config.model_copy(update={"loss": tiny_config.loss.model_copy(update={"perceptual_weight": 0.0})})
    folder = train_diffusion(config, progress=False)
    before = {p: p.read_bytes() for p in sorted(Path(config.output_dir).rglob("*")) if p.is_file()}
    with pytest.raises(ExploreError, match="holds checkpoints of an earlier run .*--resume latest.*new folder"):
        train_diffusion(config, progress=False)
    assert {p: p.read_bytes() for p in sorted(Path(config.output_dir).rglob("*")) if p.is_file()} == before
    assert train_diffusion(config, resume="latest", progress=False) == folder  # continuing it is still fine


def test_resume_with_another_config_is_refused(tiny_config):
    config = tiny_config.model_copy(update={"loss": tiny_config.loss.model_copy(update={"perceptual_weight": 0.0})})
    train_diffusion(config, progress=False)
    changed = config.model_copy(update={"train": config.train.model_copy(update={"lr": 1.0e-4})})
    with pytest.raises(ExploreError, match="train.lr"):
        train_diffusion(changed, resume="latest", progress=False)


def test_unknown_config_key_lists_the_allowed_ones(tmp_path):
    from explore.diffusion.config import load_diffusion_config

    path = tmp_path / "bad.yaml"
    path.write_text("train: {steps: 2, warmup_steps: 0}\nloss: {perceptual_wieght: 0.1}\n")
    with pytest.raises(ConfigError, match="perceptual_wieght.*perceptual_weight"):
        load_diffusion_config(path)


@pytest.mark.parametrize(("model", "message"), [
    ("{conv_type: [plain, separable]}", "model.conv_type lists 2 types for 3 levels"),
    ("{kind: diffusers, conv_type: [plain, separable, separable]}", "model.conv_type per level needs model.kind: efficient"),
    ("{kind: diffusers, upsample_conv_type: separable}", "model.upsample_conv_type needs model.kind: efficient"),
    ("{kind: diffusers, time_embedding_dim: 256}", "model.time_embedding_dim needs model.kind: efficient"),
    ("{upsample_conv_type: dilated}", "upsample_conv_type"),
    ("{kind: diffusers, upsample_channels: finer}", "model.upsample_channels needs model.kind: efficient"),
    ("{upsample_channels: coarser}", "upsample_channels"),
    ("{time_embedding_dim: 0}", "time_embedding_dim"),
])  # fmt: skip
def test_conv_type_per_level_must_fit_the_levels(tmp_path, model, message):
    from explore.diffusion.config import load_diffusion_config

    path = tmp_path / "bad.yaml"
    path.write_text(f"model: {model}\ntrain: {{steps: 2, warmup_steps: 0}}\n")
    with pytest.raises(ConfigError, match=message):
        load_diffusion_config(path)
    path.write_text("model: {conv_type: [plain, separable, separable]}\ntrain: {steps: 2, warmup_steps: 0}\n")
    assert load_diffusion_config(path).model.conv_type == ["plain", "separable", "separable"]


class _StandInLpips(torch.nn.Module):
    """Shaped like torchmetrics' LPIPS network (two images in [-1, 1] → (B, 1, 1, 1)); records input sides."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.sides = []

    def forward(self, a, b):
        self.sides.append(a.shape[-1])
        return (self.conv(a) - self.conv(b)).pow(2).mean(dim=(1, 2, 3), keepdim=True)


def test_lpips_option_trains_through_the_same_loss(tiny_config, monkeypatch):
    from explore.diffusion.features import LpipsDistance

    monkeypatch.setattr(LpipsDistance, "_load", staticmethod(lambda net: _StandInLpips()))
    loss = tiny_config.loss.model_copy(update={"perceptual_network": "lpips-alex", "perceptual_weight": 0.5})
    from explore.diffusion.features import perceptual_features

    features = perceptual_features(loss)
    assert isinstance(features, LpipsDistance)
    pipe = build_pipeline(tiny_config)
    images, prompts, _ = training_batch(0, 8, world_seed=0, max_objects=2, resolution=32, relation_prompts=0.25)
    ids, mask = tokenize_prompts(pipe.tokenizer, prompts, 48)
    optimizer = torch.optim.Adam(list(pipe.unet.parameters()) + list(pipe.text_encoder.parameters()), lr=3e-3)
    before = _loss(pipe, images, ids, mask, 0, features, 0.5)
    assert before.perceptual > 0 and features.lpips.sides[-1] == 64  # 32 px upsampled for the trunk
    for _ in range(8):
        _loss(pipe, images, ids, mask, 0, features, 0.5).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert _loss(pipe, images, ids, mask, 0, features, 0.5).loss.item() < 0.9 * before.loss.item()
    assert all(p.grad is None for p in features.parameters())  # LPIPS stays frozen


def test_lpips_without_torchvision_or_weights_fails_before_any_work(tiny_config, tmp_path, monkeypatch):
    import importlib.util

    config = tiny_config.model_copy(update={"loss": tiny_config.loss.model_copy(
        update={"perceptual_network": "lpips-alex", "perceptual_weight": 0.1})})  # fmt: skip
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchvision"
                        else real_find_spec(name, *a))  # fmt: skip
    with pytest.raises(ConfigError, match="needs torchvision.*perceptual_network: world-vit"):
        train_diffusion(config, progress=False)
    # torchvision present but the trunk is not cached, offline: the file and the fix are named
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "torchvision"
                        else real_find_spec(name, *a))  # fmt: skip
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(ConfigError, match="alexnet-owt-7be5be79.pth are missing"):
        train_diffusion(config, progress=False)
    assert not (tmp_path / "run").exists()  # nothing written


def test_mixed_precision_runs_under_autocast_and_saves_fp32(tmp_path):
    """`train.mixed_precision: bf16` (meant for GPU) goes through accelerate's autocast on CPU too: the
    same seeded run ends with different but finite weights, saved in fp32. Each run is its own process
    (`explore diffusion train`): accelerate fixes the precision once per process."""
    import subprocess
    import sys

    import yaml

    tiny = Path(__file__).resolve().parents[2] / "configs" / "diffusion" / "tiny.yaml"
    runs = {}
    for precision in ("no", "bf16"):
        raw = yaml.safe_load(tiny.read_text())
        raw["train"]["mixed_precision"] = precision
        raw["output_dir"] = str(tmp_path / precision)
        path = tmp_path / f"{precision}.yaml"
        path.write_text(yaml.safe_dump(raw))
        done = subprocess.run([sys.executable, "-m", "explore.cli", "diffusion", "train", "--config", str(path)],
                              check=False, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        runs[precision] = load_file(tmp_path / precision / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors")
    full, mixed = runs["no"], runs["bf16"]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in mixed.values())
    assert any(not torch.equal(full[k], mixed[k]) for k in full)  # bf16 arithmetic changed the run
    assert max((full[k] - mixed[k]).abs().max().item() for k in full) < 0.1  # ... but only by rounding


def _flushes_denormals() -> bool:
    """Whether the CPU now flushes denormal floats: a denormal times one comes out zero."""
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


@pytest.mark.parametrize("flush", [False, True])
def test_flush_denormal_flushes_while_training_and_not_after(tiny_config, tmp_path, monkeypatch, flush):
    """train.flush_denormal: every training step runs with denormals flushed to zero, and the process is back to
    torch's default (not flushed) afterwards; off (the default), nothing is flushed."""
    import explore.diffusion.train as train_module

    inside, real_loss = [], train_module.diffusion_loss

    def loss(*args, **kwargs):
        inside.append(_flushes_denormals())
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train_module, "diffusion_loss", loss)
    config = tiny_config.model_copy(update={"output_dir": str(tmp_path / f"flush-{flush}"),
                                            "train": tiny_config.train.model_copy(update={"steps": 2,
                                                                                          "flush_denormal": flush})})  # fmt: skip
    assert not _flushes_denormals()
    train_diffusion(config, progress=False)
    assert inside and set(inside) == {flush}  # every micro-batch of both steps
    assert not _flushes_denormals()


@pytest.mark.slow  # about a minute of compilation (54 s alone, 4.5 min beside other work): run with -m slow
def test_compiled_training_trains_the_same_model(tiny_config, tmp_path):
    """train.compile: the UNet and the learned text encoder run through torch.compile (in place, so the UNet keeps
    its class and its layout input); the weights after 3 steps match eager training's to float tolerance, and the
    saved pipeline is a plain one."""
    from torch._dynamo.utils import counters

    from explore.diffusion.pipeline import WorldDiffusionPipeline

    config = tiny_config.model_copy(update={"loss": tiny_config.loss.model_copy(update={"perceptual_weight": 0.0}),
                                            "train": tiny_config.train.model_copy(update={"steps": 3})})  # fmt: skip
    eager = train_diffusion(config, progress=False)
    compiled_config = config.model_copy(update={"output_dir": str(tmp_path / "compiled"),
                                                "train": config.train.model_copy(update={"compile": True})})  # fmt: skip
    counters.clear()
    compiled = train_diffusion(compiled_config, progress=False)
    assert counters["stats"]["unique_graphs"] > 0  # it did run through torch.compile
    for part in ("unet", "text_encoder"):
        a = load_file(eager / part / "diffusion_pytorch_model.safetensors")
        b = load_file(compiled / part / "diffusion_pytorch_model.safetensors")
        assert a.keys() == b.keys(), part
        assert all(torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4) for k in a), part
    loaded = WorldDiffusionPipeline.from_pretrained(compiled, use_safetensors=True)
    assert type(loaded.unet) is type(build_pipeline(config).unet)
