"""Perceptual distances for the diffusion loss.

:class:`~explore.models.features.VisionFeatures` (frozen features of a world-trained ViT, the default
``world-vit`` network, and ``vlm``) lives in :mod:`explore.models.features`, because the world-t2i
evaluation's Fréchet distance reads it too and evaluation never imports the diffusion package; it is
re-exported here. :class:`LpipsDistance` is the option for users with torchvision and LPIPS's trunk weights.
"""

from __future__ import annotations

import importlib.util
import os

import torch
import torch.nn.functional as F
from torch import nn

from explore.errors import ConfigError
from explore.models.features import WORLD_VIT, VisionFeatures, world_vit_folder

__all__ = ["WORLD_VIT", "LpipsDistance", "VisionFeatures", "perceptual_features", "world_vit_folder"]


# torchvision's file names for the LPIPS trunks (what torch.hub caches after one online download).
LPIPS_TRUNKS = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


class LpipsDistance(nn.Module):
    """LPIPS (Zhang et al. 2018) as the perceptual distance, through torchmetrics' implementation.

    An option beside :class:`VisionFeatures` for users who have torchvision and the trunk weights:
    torchmetrics ships LPIPS's linear heads, but the AlexNet / VGG / SqueezeNet trunk comes from
    torchvision (downloaded once into ``torch.hub.get_dir()/checkpoints``). Images stay in [-1, 1],
    LPIPS's own input range; sides under 64 px are upsampled, because AlexNet's stride-4 stem leaves
    almost no spatial map of a 32 px image.
    """

    min_side = 64

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in LPIPS_TRUNKS:
            raise ValueError(f"unknown LPIPS network {net!r}; expected one of: {', '.join(LPIPS_TRUNKS)}")
        self.lpips = self._load(net).eval().requires_grad_(False)

    @staticmethod
    def _load(net: str) -> nn.Module:
        if importlib.util.find_spec("torchvision") is None:
            raise ConfigError(
                f"perceptual_network 'lpips-{net}' needs torchvision (LPIPS's {net} trunk comes from it): "
                "install a torchvision that matches your torch, or use perceptual_network: world-vit"
            )
        weights = os.path.join(torch.hub.get_dir(), "checkpoints", LPIPS_TRUNKS[net])
        if os.environ.get("HF_HUB_OFFLINE") == "1" and not os.path.exists(weights):
            raise ConfigError(
                f"perceptual_network 'lpips-{net}': the trunk weights {weights} are missing and HF_HUB_OFFLINE=1; "
                "download them once online (or copy the file there), or use perceptual_network: world-vit"
            )
        # torchmetrics' LPIPS imports torchvision (optional, checked above): imported only when asked for
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        try:
            return LearnedPerceptualImagePatchSimilarity(net_type=net).net
        except OSError as error:  # urllib's URLError is an OSError: no network and no cached trunk
            raise ConfigError(
                f"perceptual_network 'lpips-{net}': could not get the trunk weights {weights} ({error}); "
                "download them once online, or use perceptual_network: world-vit"
            ) from error

    def train(self, mode: bool = True) -> LpipsDistance:  # the network stays in eval mode
        super().train(mode)
        self.lpips.eval()
        return self

    def perceptual_distance(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """LPIPS per image (B,) between images in [-1, 1]; gradients flow into ``predicted``."""
        if predicted.shape[-1] < self.min_side:
            size = (self.min_side, self.min_side)
            predicted = F.interpolate(predicted, size=size, mode="bilinear", align_corners=False)
            target = F.interpolate(target, size=size, mode="bilinear", align_corners=False)
        return self.lpips(predicted, target.detach()).flatten()


def perceptual_features(loss) -> VisionFeatures | LpipsDistance | None:
    """The frozen network of the perceptual term (None when its weight is 0): ``loss`` has ``perceptual_weight``,
    ``perceptual_network`` and ``perceptual_layers`` (the UNet's loss section, the autoencoder's train section)."""
    if loss.perceptual_weight == 0:
        return None
    if loss.perceptual_network == "world-vit":
        return VisionFeatures.from_world_vit(layers=tuple(loss.perceptual_layers))
    if loss.perceptual_network == "vlm":
        return VisionFeatures.from_vlm(layers=tuple(loss.perceptual_layers))
    return LpipsDistance(loss.perceptual_network.removeprefix("lpips-"))
