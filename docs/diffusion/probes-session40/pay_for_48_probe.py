# session 40 probe (OMP_NUM_THREADS=1 python docs/diffusion/probes-session40/pay_for_48_probe.py, from the repository root):
# where p0-48r (budget-efficient-p0-48r-lr2-b32-5340-shipped-vae.yaml) could pay for its 48 channels at 16 x 16.
# Training step (batch 32, eager, flushed) and compiled channels-last sampling forward (batch 16) against diffusers' UNet,
# untrained weights, timed as capacity_probe.py times them; ratios, not seconds (this machine's speed drifts over hours).
from capacity_probe import build, ctrl, time_variants

from explore.diffusion.config import load_diffusion_config

base = load_diffusion_config("configs/diffusion/budget-efficient-p0-48r-lr2-b32-5340-shipped-vae.yaml")
time_variants(
    {
        "diffusers": build(ctrl),
        "p0-32r": build(base, block_out_channels=[32, 128, 192]),
        "p0-48r": build(base),
        "p0-48r-t128": build(base, time_embedding_dim=128),
        "p0-48-96-192r": build(base, block_out_channels=[48, 96, 192]),
        "p0-48-128-128r": build(base, block_out_channels=[48, 128, 128]),
    }
)
