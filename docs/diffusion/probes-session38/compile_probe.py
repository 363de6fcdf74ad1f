# session 38 probe (python docs/diffusion/probes-session38/compile_probe.py, from the repository root): compiled, channels-last sampling forward at batch 16 (the compare benchmark's fastest format), per architecture
import time

import torch

from explore.diffusion.build import build_pipeline
from explore.diffusion.config import load_diffusion_config
from explore.diffusion.unet import layout_channels, predict_noise

torch.set_num_threads(1)
torch.manual_seed(0)
base = load_diffusion_config("configs/diffusion/budget-efficient-mg-spade-lr2-b32-5160-shipped-vae.yaml")
ctrl = load_diffusion_config("configs/diffusion/budget-baseline-mg-lr2-b32-3280-shipped-vae.yaml")
variants = {
    "diffusers": (ctrl, {}),
    "eff": (base, {}),
    "p0-32": (base, {"block_out_channels": [32, 128, 192], "conv_type": ["plain", "separable", "separable"]}),
    "p0-48": (base, {"block_out_channels": [48, 128, 192], "conv_type": ["plain", "separable", "separable"]}),
    "p01-32-96": (base, {"block_out_channels": [32, 96, 192], "conv_type": ["plain", "plain", "separable"]}),
}
fns = {}
for name, (cfg, over) in variants.items():
    c = cfg.model_copy(update={"model": cfg.model.model_copy(update=over)})
    u = build_pipeline(c).unet.eval().to(memory_format=torch.channels_last)
    u.compile(dynamic=False)
    fns[name] = (u, u)
b = 16
x = torch.randn(b, 4, 16, 16).to(memory_format=torch.channels_last)
t = torch.full((b,), 500)
ctx = torch.randn(b, 48, 128)
mask = torch.ones(b, 48, dtype=torch.long)
res = {n: [] for n in fns}
with torch.no_grad():
    for n, (u, cu) in fns.items():
        lay = torch.rand(b, layout_channels(u), 3, 3)
        for _ in range(3):
            predict_noise(cu, x, t, ctx, mask, lay)
    for rep in range(5):
        for n, (u, cu) in fns.items():
            lay = torch.rand(b, layout_channels(u), 3, 3)
            t0 = time.perf_counter()
            for _ in range(5):
                predict_noise(cu, x, t, ctx, mask, lay)
            res[n].append((time.perf_counter() - t0) / 5)
d = min(res["diffusers"])
for n, times in res.items():
    print(f"{n}: {min(times) * 1000:.1f} ms / fwd b16 compiled channels-last, diffusers / it {d / min(times):.2f}x")
