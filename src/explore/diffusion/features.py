"""Frozen image features from a small ViT trained on the shapes world, for the perceptual loss and
the Fréchet distance; no downloaded network (VGG, AlexNet, Inception) is needed.

Two sources: ``world-vit`` (the default perceptual network) is a vision encoder pinned in the
package (``embedded/world-vit``: the first embedded VLM's ViT, trained by
``configs/pretrain/shapes-small-v1.yaml``), so the diffusion model's training does not change when
the embedded VLM does; ``vlm`` is the current embedded VLM's own vision encoder (also what the
world-t2i evaluation's Fréchet distance reads). Measured: the current VLM's objects-pretrained ViT
made a worse perceptual network (noisier backgrounds; README, Generate).

Images come in as floats in [-1, 1] (the diffusion range), any side; they are resized to the
encoder's input side, mapped to [0, 1] and normalised with the VLM processor's mean and std.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from explore.errors import ConfigError
from explore.packaged import packaged

WORLD_VIT = "world-vit"

# The embedded processor's normalisation (CLIP's mean / std, processor_config.json).
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)


class VisionFeatures(nn.Module):
    """Wrap an InstructBLIP vision model (frozen): per-layer token features and a pooled vector.

    ``num_features`` (the hidden size) is what torchmetrics' FID reads from a custom extractor.
    """

    def __init__(self, vision_model: nn.Module, image_size: int, layers: tuple[int, ...] = (1, 2, 3)):
        super().__init__()
        depth = vision_model.config.num_hidden_layers
        bad = [layer for layer in layers if not 1 <= layer <= depth]
        if bad:
            raise ValueError(f"feature layers {bad} out of range 1..{depth}")
        self.vision_model = vision_model.eval().requires_grad_(False)
        self.image_size, self.layers = image_size, tuple(layers)
        self.num_features = int(vision_model.config.hidden_size)
        self.register_buffer("mean", torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGE_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_vlm(cls, vlm=None, layers: tuple[int, ...] = (1, 2, 3)) -> VisionFeatures:
        """Features of ``vlm``'s vision encoder (default: the embedded model)."""
        if vlm is None:
            from explore.models.loading import load_model

            vlm, _ = load_model("embedded")
        return cls(vlm.vision_model, int(vlm.config.vision_config.image_size), layers)

    @classmethod
    def from_world_vit(cls, layers: tuple[int, ...] = (1, 2, 3), folder: str | Path | None = None) -> VisionFeatures:
        """Features of the pinned world ViT (default: the package's ``embedded/world-vit``)."""
        from transformers import InstructBlipVisionModel

        folder = Path(folder) if folder is not None else world_vit_folder()
        if not (folder / "model.safetensors").is_file():
            raise ConfigError(f"the perceptual network folder {folder} has no model.safetensors; reinstall "
                              "explore-vlm, or set loss.perceptual_network: vlm")  # fmt: skip
        model = InstructBlipVisionModel.from_pretrained(folder, use_safetensors=True)
        return cls(model, int(model.config.image_size), layers)

    def train(self, mode: bool = True) -> VisionFeatures:  # the encoder stays in eval mode
        super().train(mode)
        self.vision_model.eval()
        return self

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            images = F.interpolate(
                images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return ((images + 1) / 2 - self.mean) / self.std

    def hidden_states(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Token features (B, N, C) of each chosen layer, for ``images`` (B, 3, H, W) in [-1, 1]."""
        out = self.vision_model(pixel_values=self._prepare(images), output_hidden_states=True)
        return [out.hidden_states[layer] for layer in self.layers]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, C): the mean of the last chosen layer's tokens.

        Accepts uint8 images in [0, 255] too (torchmetrics passes those when ``normalize=False``).
        """
        if images.dtype == torch.uint8:
            images = images.float() / 127.5 - 1
        return self.hidden_states(images)[-1].mean(dim=1)

    def perceptual_distance(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """LPIPS-style distance per image (B,): tokens unit-normalised per layer, squared differences
        summed over channels, averaged over tokens and layers. Gradients flow into ``predicted``."""
        with torch.no_grad():
            target_features = self.hidden_states(target)
        distance = predicted.new_zeros(predicted.shape[0])
        for pred, true in zip(self.hidden_states(predicted), target_features):
            pred, true = F.normalize(pred, dim=-1), F.normalize(true, dim=-1)
            distance = distance + (pred - true).pow(2).sum(-1).mean(-1)
        return distance / len(self.layers)


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
        import importlib.util
        import os

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


def world_vit_folder() -> Path:
    """The package's pinned perceptual ViT (``explore/embedded/world-vit``)."""
    return packaged(WORLD_VIT)
