"""Frozen image features from an InstructBLIP vision encoder trained on the shapes world: the diffusion
model's perceptual loss and the world-t2i evaluation's Fréchet distance both read them, so they live
below both (evaluation never imports the diffusion package); no downloaded network (VGG, AlexNet,
Inception) is needed.

Two sources: ``world-vit`` (the diffusion model's default perceptual network) is a vision encoder pinned
in the package (``embedded/world-vit``: the first embedded VLM's ViT, trained by
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
from transformers import InstructBlipVisionModel

from explore.errors import ConfigError
from explore.models.loading import load_model
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
            vlm, _ = load_model("embedded")
        return cls(vlm.vision_model, int(vlm.config.vision_config.image_size), layers)

    @classmethod
    def from_world_vit(cls, layers: tuple[int, ...] = (1, 2, 3), folder: str | Path | None = None) -> VisionFeatures:
        """Features of the pinned world ViT (default: the package's ``embedded/world-vit``)."""
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


def world_vit_folder() -> Path:
    """The package's pinned perceptual ViT (``explore/embedded/world-vit``)."""
    return packaged(WORLD_VIT)
