# session 38 probe (python docs/diffusion/probes-session38/arch_probe.py, from the repository root): training step (fwd+bwd + no-grad fwd, batch 32) and sampling (fwd, batch 16) cost per architecture
import time

import torch

from explore.diffusion.build import build_pipeline
from explore.diffusion.config import load_diffusion_config
from explore.diffusion.unet import layout_channels, predict_noise

torch.set_num_threads(1)
torch.set_flush_denormal(True)
torch.manual_seed(0)
base = load_diffusion_config("configs/diffusion/budget-efficient-mg-spade-lr2-b32-5160-shipped-vae.yaml")
ctrl = load_diffusion_config("configs/diffusion/budget-baseline-mg-lr2-b32-3280-shipped-vae.yaml")
variants = {"diffusers": (ctrl, {})}
for name, over in [
    ("eff", {}),
    ("p0-32", {"block_out_channels": [32, 128, 192], "conv_type": ["plain", "separable", "separable"]}),
    ("p0-48", {"block_out_channels": [48, 128, 192], "conv_type": ["plain", "separable", "separable"]}),
    ("p01-32-96", {"block_out_channels": [32, 96, 192], "conv_type": ["plain", "plain", "separable"]}),
    ("eff-plain", {"conv_type": "plain"}),
]:
    variants[name] = (base, over)
unets = {}
for name, (cfg, over) in variants.items():
    c = cfg.model_copy(update={"model": cfg.model.model_copy(update=over)})
    unets[name] = build_pipeline(c).unet


def step(unet, b, train):
    c = layout_channels(unet)
    x = torch.randn(b, 4, 16, 16)
    t = torch.randint(0, 1000, (b,))
    ctx = torch.randn(b, 48, 128)
    mask = torch.ones(b, 48, dtype=torch.long)
    lay = torch.rand(b, c, 3, 3)
    if train:
        y = predict_noise(unet, x, t, ctx, mask, lay)
        with torch.no_grad():
            predict_noise(unet, x, t, ctx, mask, lay)
        y.square().mean().backward()
    else:
        with torch.no_grad():
            predict_noise(unet, x, t, ctx, mask, lay)


res = {n: [[], []] for n in unets}
for rep in range(4):
    for n, u in unets.items():
        for j, (b, train) in enumerate(((32, True), (16, False))):
            step(u, b, train)
            t0 = time.perf_counter()
            for _ in range(3):
                step(u, b, train)
            res[n][j].append((time.perf_counter() - t0) / 3)
for n, u in unets.items():
    tr, inf = min(res[n][0]), min(res[n][1])
    p = sum(x.numel() for x in u.parameters())
    print(f"{n}: {p / 1e6:.2f} M, train step b32 {tr:.3f} s, sample fwd b16 {inf:.4f} s", flush=True)
