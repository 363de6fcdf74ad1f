# session 39: OMP_NUM_THREADS=1 python docs/diffusion/probes-session39/profile_sampling_call.py runs/diffusion/budget-efficient-p0-32-lr2-b32-5610-tiny-vae
# (an exported pipeline folder): per-op self CPU time of ten eager sampling calls at batch 16, by input shape
import sys

import torch

from explore.diffusion.unet import EfficientUNet

torch.set_num_threads(1)
torch.set_flush_denormal(True)
u = EfficientUNet.from_pretrained(sys.argv[1] + "/unet").eval()
c = u.config
print(c.layout_channels, c.block_out_channels, c.cross_attention_dim)
b = 16
x = torch.randn(b, c.in_channels, 16, 16)
ctx = torch.randn(b, 48, c.cross_attention_dim)
m = torch.ones(b, 48)
lay = torch.randn(b, c.layout_channels, 3, 3)
with torch.no_grad():
    for _ in range(3):
        u(x, 500, ctx, m, layout=lay)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as p:
        for _ in range(10):
            u(x, 500, ctx, m, layout=lay)
ev = sorted(p.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
tot = sum(e.self_cpu_time_total for e in ev)
for e in ev[:28]:
    print(
        f"{e.self_cpu_time_total / 1e3 / 10:7.2f} ms/call {100 * e.self_cpu_time_total / tot:5.1f}% {e.key[:22]:22s} n={e.count // 10} {str(e.input_shapes)[:80]}"
    )
print("total ms/call", tot / 1e4)
