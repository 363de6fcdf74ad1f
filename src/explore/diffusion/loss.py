"""The training loss: noise- or velocity-prediction MSE (optionally min-SNR weighted) plus a perceptual term.

For ``x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps`` (``a_t`` = alphas_cumprod) the UNet predicts ``eps``, or with the
scheduler's ``prediction_type`` "v_prediction" the velocity ``v = sqrt(a_t) eps - sqrt(1 - a_t) x_0`` (diffusers'
``get_velocity``), which at the noisiest steps is ~ ``-x_0``: a clean-image estimate few-step samplers can use,
where ``x_0`` from ``eps`` divides its error by ``sqrt(a_t)`` ~ 0.

- MSE per image, weighted by ``min(SNR_t, gamma) / SNR_t`` (``/ (SNR_t + 1)`` for velocity: the same weight on
  the clean image's error) when ``min_snr_gamma`` > 0 (Hang et al. 2023, "Min-SNR", via diffusers'
  ``compute_snr``, as diffusers' training scripts weight it): high-SNR (little noise) steps stop dominating.
- Model guidance (``guidance`` w > 0; Tang et al. 2025, "Diffusion Models without Classifier-free Guidance",
  arXiv 2502.12154): conditioned rows regress onto ``eps + w * sg(eps_hat(c) - eps_hat(empty))`` instead of
  ``eps`` (the same with ``v``, which is affine in ``eps`` at a given ``x_t``). At the fixed point
  ``eps_hat(c) = eps_u + (eps_c - eps_u) / (1 - w)``: the model itself predicts what classifier-free guidance at
  scale ``1 / (1 - w)`` would, so it samples with one UNet pass per step instead of two. diffusers has no such
  loss (its training scripts only drop the prompt), hence written here.
- Perceptual: the predicted clean image ``x0 = (x_t - sqrt(1 - a_t) eps_hat) / sqrt(a_t)`` (from velocity
  ``sqrt(a_t) x_t - sqrt(1 - a_t) v_hat``) against the real one, on frozen VLM vision features
  (:class:`~explore.diffusion.features.VisionFeatures`), weighted per image by ``a_t``: at high noise ``x0`` is a
  blurry mean and its features say little.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers.training_utils import compute_snr

from explore.diffusion.unet import predict_noise


@dataclass
class LossParts:
    """The total loss to back-propagate and its parts (detached floats, for logs)."""

    loss: torch.Tensor
    mse: float
    perceptual: float


def diffusion_loss(
    unet,
    context: torch.Tensor,
    mask: torch.Tensor,
    images: torch.Tensor,
    noise_scheduler,
    generator: torch.Generator,
    *,
    min_snr_gamma: float = 0.0,
    perceptual_weight: float = 0.0,
    features=None,
    layout: torch.Tensor | None = None,
    guidance: float = 0.0,
    unconditional: tuple[torch.Tensor, torch.Tensor] | None = None,
    conditioned: torch.Tensor | None = None,
) -> LossParts:
    """Loss for clean ``images`` (B, 3, H, W) in [-1, 1] and text ``context`` (B, L, D) / ``mask`` (B, L).

    ``layout``: per-cell layout maps (B, C, G, G) for a grounded UNet (rows of zeros = dropped).
    Timesteps and noise are drawn from ``generator``. ``guidance`` > 0 (model guidance, above) needs the
    empty prompt's ``unconditional`` (context, mask), each (B, L', ...) and ``conditioned`` (B,) bool: the rows
    that kept their prompt (dropped rows keep the plain target: they train the unconditional model).

    Raises:
        ValueError: ``perceptual_weight`` > 0 without ``features``, or ``guidance`` > 0 without
            ``unconditional`` and ``conditioned``.
    """
    if perceptual_weight > 0 and features is None:
        raise ValueError("perceptual_weight > 0 needs the vision features (VisionFeatures)")
    if guidance > 0 and (unconditional is None or conditioned is None):
        raise ValueError("guidance > 0 needs the unconditional context and the conditioned rows")
    b = images.shape[0]
    device = images.device
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (b,), generator=generator).to(device)
    noise = torch.randn(images.shape, generator=generator).to(device, images.dtype)
    noisy = noise_scheduler.add_noise(images, noise, timesteps)
    predicted = predict_noise(unet, noisy, timesteps, context, mask, layout)
    velocity = noise_scheduler.config.prediction_type == "v_prediction"
    target = (noise_scheduler.get_velocity(images, noise, timesteps) if velocity else noise).float()
    if guidance > 0:
        with torch.no_grad():  # the unconditional model: the empty prompt and no layout map, as the sampler's CFG
            empty = torch.zeros_like(layout) if layout is not None else None
            uncond = predict_noise(unet, noisy, timesteps, *unconditional, empty).float()
        weight = guidance * conditioned.to(device, torch.float32)[:, None, None, None]
        target = target + weight * (predicted.detach().float() - uncond)
    mse = (predicted.float() - target).pow(2).mean(dim=(1, 2, 3))  # (B,)
    if min_snr_gamma > 0:
        snr = compute_snr(noise_scheduler, timesteps)
        mse = mse * torch.clamp(snr, max=min_snr_gamma) / (snr + 1 if velocity else snr)
    loss = mse.mean()
    perceptual = torch.zeros((), device=device)
    if perceptual_weight > 0:
        alpha = noise_scheduler.alphas_cumprod.to(device)[timesteps].float()[:, None, None, None]  # (B, 1, 1, 1)
        if velocity:
            clean = (alpha.sqrt() * noisy - (1 - alpha).sqrt() * predicted).clamp(-1, 1)
        else:
            clean = ((noisy - (1 - alpha).sqrt() * predicted) / alpha.sqrt()).clamp(-1, 1)
        distance = features.perceptual_distance(clean.float(), images.float())  # (B,)
        perceptual = (alpha.flatten() * distance).mean()
        loss = loss + perceptual_weight * perceptual
    return LossParts(loss=loss, mse=float(mse.detach().mean()), perceptual=float(perceptual.detach()))
