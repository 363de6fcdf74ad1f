# session 41 probe (OMP_NUM_THREADS=1 python docs/diffusion/probes-session41/between_probe.py, from the repository root):
# between p0-48r (192 channels at 4 x 4: the top rows, ~2x per call) and p0-48-128-128r (128: 2.6-2.9x per call, the top
# rows lost) — widths at 4 x 4 and 8 x 8 that might keep the capacity and some of the speed. Training step (batch 32,
# eager, flushed) and compiled channels-last sampling forward (batch 16) against diffusers' UNet, untrained weights,
# timed by session 40's capacity_probe.py loop; ratios, not seconds.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "probes-session40"))  # its timing loop
from capacity_probe import build, ctrl, time_variants

from explore.diffusion.config import load_diffusion_config

base = load_diffusion_config("configs/diffusion/budget-efficient-p0-48r-lr2-b32-5340-shipped-vae.yaml")
time_variants(
    {
        "diffusers": build(ctrl),
        "p0-48r": build(base),
        "p0-48-128-128r": build(base, block_out_channels=[48, 128, 128]),
        "p0-48-128-160r": build(base, block_out_channels=[48, 128, 160]),
        "p0-48-96-192r": build(base, block_out_channels=[48, 96, 192]),
        "p0-48-96-160r": build(base, block_out_channels=[48, 96, 160]),
    }
)
