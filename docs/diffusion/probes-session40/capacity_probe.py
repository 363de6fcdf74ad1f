# session 40 probe (OMP_NUM_THREADS=1 python docs/diffusion/probes-session40/capacity_probe.py, from the repository root):
# where p0-32r (budget-efficient-p0-32r-lr2-b32-6410-shipped-vae.yaml) can buy capacity for the held-out top rows.
# Training step (batch 32, eager, flushed) and compiled channels-last sampling forward (batch 16) against diffusers' UNet,
# untrained weights; ratios, not seconds (this machine's speed drifts over hours).
import time

import torch

from explore.diffusion.build import build_pipeline
from explore.diffusion.config import load_diffusion_config
from explore.diffusion.unet import layout_channels, predict_noise

torch.set_num_threads(1)
torch.set_flush_denormal(True)
torch.manual_seed(0)
base = load_diffusion_config("configs/diffusion/budget-efficient-p0-32r-lr2-b32-6410-shipped-vae.yaml")
ctrl = load_diffusion_config("configs/diffusion/budget-baseline-mg-lr2-b32-3280-shipped-vae.yaml")


def build(cfg, **model):
    cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update=model)})
    return build_pipeline(cfg).unet


def inputs(unet, b):
    return (
        torch.randn(b, 4, 16, 16),
        torch.randint(0, 1000, (b,)),
        torch.randn(b, 48, 128),
        torch.ones(b, 48, dtype=torch.long),
        torch.rand(b, layout_channels(unet), 3, 3),
    )


def time_variants(variants: dict) -> None:
    """Print each UNet's training step and compiled sampling call against the first (diffusers')."""
    train_t = {n: [] for n in variants}
    for rep in range(3):
        for n, u in variants.items():
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
    for n, u in variants.items():
        u = u.eval().to(memory_format=torch.channels_last)
        u.compile(dynamic=False)
        compiled[n] = u
    with torch.no_grad():
        for n, u in compiled.items():
            x, t, ctx, mask, lay = inputs(u, 16)
            for _ in range(3):
                predict_noise(u, x.to(memory_format=torch.channels_last), torch.full((16,), 500), ctx, mask, lay)
        for rep in range(5):
            for n, u in compiled.items():
                x, t, ctx, mask, lay = inputs(u, 16)
                x, t = x.to(memory_format=torch.channels_last), torch.full((16,), 500)
                t0 = time.perf_counter()
                for _ in range(5):
                    predict_noise(u, x, t, ctx, mask, lay)
                sample_t[n].append((time.perf_counter() - t0) / 5)
    d_train, d_sample = min(train_t["diffusers"]), min(sample_t["diffusers"])
    for n, u in variants.items():
        p = sum(x.numel() for x in u.parameters())
        print(
            f"{n}: {p / 1e6:.2f} M, train step b32 {min(train_t[n]):.3f} s ({d_train / min(train_t[n]):.2f}x), "
            f"sample fwd b16 compiled CL {min(sample_t[n]) * 1000:.1f} ms ({d_sample / min(sample_t[n]):.2f}x)",
            flush=True,
        )


if __name__ == "__main__":
    time_variants(
        {
            "diffusers": build(ctrl),
            "p0-32r": build(base),
            "p0-48r": build(base, block_out_channels=[48, 128, 192]),
            "p0-32r-160": build(base, block_out_channels=[32, 160, 192]),
            "p0-32r-256": build(base, block_out_channels=[32, 128, 256]),
        }
    )
