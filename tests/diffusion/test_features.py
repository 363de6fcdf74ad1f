"""The perceptual network: the pinned world ViT ships with the package and does not follow the VLM."""

import pytest
import torch
from safetensors.torch import load_file

from explore.diffusion.config import LossSection
from explore.diffusion.features import VisionFeatures, world_vit_folder
from explore.errors import ConfigError
from explore.models.loading import load_model


def test_world_vit_is_pinned_small_safetensors_and_the_default():
    folder = world_vit_folder()
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["config.json", "model.safetensors"]  # no pickle
    assert (folder / "model.safetensors").stat().st_size < 5_000_000
    assert LossSection().perceptual_network == "world-vit"


def test_world_vit_features_and_independence_from_the_embedded_vlm():
    features = VisionFeatures.from_world_vit()
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        pooled = features(images)
        distance = features.perceptual_distance(images, images.flip(0))
    assert pooled.shape == (3, features.num_features) and torch.isfinite(pooled).all()
    assert distance.shape == (3,) and distance[1] == 0 and distance[0] > 0  # the middle image is its own flip
    assert all(not p.requires_grad for p in features.parameters())
    vlm, _ = load_model("embedded")
    pinned = load_file(world_vit_folder() / "model.safetensors")
    current = vlm.vision_model.state_dict()
    assert pinned.keys() == current.keys()
    assert any(not torch.equal(pinned[k], current[k]) for k in pinned)  # the VLM moved on; the recipe did not


def test_missing_world_vit_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="no model.safetensors.*perceptual_network: vlm"):
        VisionFeatures.from_world_vit(folder=tmp_path)
