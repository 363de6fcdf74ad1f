"""The optimiser step shared by the pretrain, fine-tune and diffusion loops."""

import math

import pytest
import torch

from explore.errors import ExploreError
from explore.train.step import optimizer_step


def setup(lr: float = 0.1):
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return layer, optimizer, scheduler


def loss_of(layer, scale: float = 1.0):
    return (layer(torch.ones(2, 3)) * scale).pow(2).mean()


def test_one_step_clips_updates_schedules_and_zeroes_the_grads():
    layer, optimizer, scheduler = setup()
    reference, ref_optimizer, _ = setup()
    loss = loss_of(layer, scale=100.0)
    norm = optimizer_step(loss, optimizer, scheduler, list(layer.parameters()), max_norm=1.0, nonfinite_message="x")
    loss_of(reference, scale=100.0).backward()
    expected = torch.nn.utils.clip_grad_norm_(list(reference.parameters()), 1.0)
    ref_optimizer.step()
    assert norm == pytest.approx(float(expected)) and norm > 1.0  # the norm before clipping is returned
    assert all(torch.equal(a, b) for a, b in zip(layer.parameters(), reference.parameters()))
    assert all(p.grad is None for p in layer.parameters())
    assert scheduler.get_last_lr() == [0.05]


def test_a_non_finite_gradient_raises_the_callers_message_before_any_weight_changes():
    layer, optimizer, scheduler = setup()
    before = [p.detach().clone() for p in layer.parameters()]
    loss = loss_of(layer) * float("inf")
    with pytest.raises(ExploreError, match="^non-finite gradient norm at step 7; lower lr$"):
        optimizer_step(loss, optimizer, scheduler, list(layer.parameters()), max_norm=1.0,
                       nonfinite_message="non-finite gradient norm at step 7; lower lr")  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(layer.parameters(), before))
    assert scheduler.get_last_lr() == [0.1]


def test_without_clipping_no_norm_is_taken():
    layer, optimizer, scheduler = setup()
    norm = optimizer_step(loss_of(layer), optimizer, scheduler, list(layer.parameters()), max_norm=1.0,
                          nonfinite_message="x", clip=False)  # fmt: skip
    assert math.isnan(norm)


def test_averaging_gradients_needs_an_accelerator():
    layer, optimizer, scheduler = setup()
    with pytest.raises(ValueError, match="average_grads=True needs an accelerator"):
        optimizer_step(loss_of(layer), optimizer, scheduler, list(layer.parameters()), max_norm=1.0,
                       nonfinite_message="x", average_grads=True)  # fmt: skip
