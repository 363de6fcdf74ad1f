# session 39 (see flush-in-training.txt beside it): resume a scratch copy of a run (/tmp/fl/cfg.yaml) with train.flush_denormal
# forced to argv[1] (1 or 0) and report, from the training thread, whether denormals are flushed
import sys

import torch

import explore.diffusion.train as T
from explore.diffusion.config import load_diffusion_config

flush = sys.argv[1] == "1"
T.check_run = lambda *a, **k: None
calls = {"n": 0}
orig = T.diffusion_loss


def wrapped(*a, **k):
    calls["n"] += 1
    if calls["n"] % 25 == 1:
        x = torch.full((4,), 1e-39) * 1.0
        print("call", calls["n"], "flushed" if x[0].item() == 0 else "NOT flushed", flush=True)
    return orig(*a, **k)


T.diffusion_loss = wrapped
cfg = load_diffusion_config("/tmp/fl/cfg.yaml")
cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"flush_denormal": flush})})
T.train_diffusion(cfg, resume="latest", progress=True)
