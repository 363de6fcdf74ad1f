"""One optimiser step, shared by the three training loops (pretrain, fine-tune, diffusion).

The loops stay explicit (batch, forward, loss check, logging, checkpoints); this helper is only the part
they all repeat after the loss: backward, clip, check the gradient norm, step, schedule, zero the grads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from accelerate import Accelerator
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from explore.errors import ExploreError


def optimizer_step(
    loss: torch.Tensor,
    optimizer: Optimizer,
    scheduler: LRScheduler,
    params: Sequence[torch.nn.Parameter],
    *,
    max_norm: float,
    nonfinite_message: str,
    accelerator: Accelerator | None = None,
    average_grads: bool = False,
    clip: bool = True,
) -> float:
    """Backward ``loss``, clip ``params``' gradients to ``max_norm``, step ``optimizer`` and ``scheduler``.

    ``accelerator``: backward and clip through it (mixed precision, DDP, gradient accumulation); plain
    ``loss.backward()`` and ``torch.nn.utils.clip_grad_norm_`` without it. ``average_grads``: average
    ``params``' gradients over processes by hand first (for parameters that ran outside the DDP wrapper).
    ``clip``: False while gradients are still being accumulated (no norm to take yet; the accelerator's
    optimizer skips its step then). Returns the gradient norm before clipping (NaN when not clipped).
    Raises ExploreError(``nonfinite_message``) when that norm is not finite, before any weight changes.
    """
    if average_grads and accelerator is None:
        raise ValueError("average_grads=True needs an accelerator to reduce the gradients over")
    if accelerator is not None:
        accelerator.backward(loss)
    else:
        loss.backward()
    if average_grads:
        for p in params:
            if p.grad is not None:
                p.grad = accelerator.reduce(p.grad, reduction="mean")
    grad_norm = float("nan")
    if clip:
        clip_grad_norm = accelerator.clip_grad_norm_ if accelerator is not None else torch.nn.utils.clip_grad_norm_
        grad_norm = float(clip_grad_norm(params, max_norm))
        if not math.isfinite(grad_norm):
            raise ExploreError(nonfinite_message)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm
