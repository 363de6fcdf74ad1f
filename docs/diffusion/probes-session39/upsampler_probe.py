# session 39 probe (python docs/diffusion/probes-session39/upsampler_probe.py, from the repository root): training
# step (fwd+bwd + no-grad fwd, batch 32, eager, flushed) and compiled channels-last sampling forward (batch 16) per
# architecture, with the 16 x 16 upsampler's convolution plain (the finer level's type) or separable.
import time

import torch

from explore.diffusion.build import build_pipeline
from explore.diffusion.config import load_diffusion_config
from explore.diffusion.unet import conv3x3, layout_channels, predict_noise

torch.set_num_threads(1)
torch.set_flush_denormal(True)
torch.manual_seed(0)
base = load_diffusion_config("configs/diffusion/budget-efficient-p0-32-lr2-b32-5610-shipped-vae.yaml")
ctrl = load_diffusion_config("configs/diffusion/budget-baseline-mg-lr2-b32-3280-shipped-vae.yaml")
variants = {
    "diffusers": (ctrl, {}, False),
    "p0-32": (base, {}, False),
    "p0-32u": (base, {}, True),
    "p0-40u": (base, {"block_out_channels": [40, 128, 192], "norm_num_groups": 8}, True),
    "p0-48u": (base, {"block_out_channels": [48, 128, 192]}, True),
}


def build(cfg, over, separable_up):
    c = cfg.model_copy(update={"model": cfg.model.model_copy(update=over)})
    unet = build_pipeline(c).unet
    if separable_up:  # upsamplers run coarse to fine: index 1 writes 16 x 16 from level 1's channels
        width = unet.config.block_out_channels[1]
        unet.upsamplers[1] = conv3x3(width, width, "separable")
    return unet


def inputs(unet, b):
    return (
        torch.randn(b, 4, 16, 16),
        torch.randint(0, 1000, (b,)),
        torch.randn(b, 48, 128),
        torch.ones(b, 48, dtype=torch.long),
        torch.rand(b, layout_channels(unet), 3, 3),
    )


train_t = {n: [] for n in variants}
eager = {n: build(*v) for n, v in variants.items()}
for rep in range(3):
    for n, u in eager.items():
        args = inputs(u, 32)
        for i in range(3):
            t0 = time.perf_counter()
            y = predict_noise(u, *args)
            with torch.no_grad():
                predict_noise(u, *args)
            y.square().mean().backward()
            if i:
                train_t[n].append(time.perf_counter() - t0)
sample_t = {n: [] for n in variants}
compiled = {}
for n, u in eager.items():
    u = u.eval().to(memory_format=torch.channels_last)
    u.compile(dynamic=False)
    compiled[n] = u
with torch.no_grad():
    for n, u in compiled.items():
        x, t, ctx, mask, lay = inputs(u, 16)
        x, t = x.to(memory_format=torch.channels_last), torch.full((16,), 500)
        for _ in range(3):
            predict_noise(u, x, t, ctx, mask, lay)
    for rep in range(5):
        for n, u in compiled.items():
            x, t, ctx, mask, lay = inputs(u, 16)
            x, t = x.to(memory_format=torch.channels_last), torch.full((16,), 500)
            t0 = time.perf_counter()
            for _ in range(5):
                predict_noise(u, x, t, ctx, mask, lay)
            sample_t[n].append((time.perf_counter() - t0) / 5)
d_train, d_sample = min(train_t["diffusers"]), min(sample_t["diffusers"])
for n, u in eager.items():
    p = sum(x.numel() for x in u.parameters())
    print(
        f"{n}: {p / 1e6:.2f} M, train step b32 {min(train_t[n]):.3f} s ({d_train / min(train_t[n]):.2f}x), "
        f"sample fwd b16 compiled CL {min(sample_t[n]) * 1000:.1f} ms ({d_sample / min(sample_t[n]):.2f}x)",
        flush=True,
    )
