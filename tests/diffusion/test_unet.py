"""The UNets: output shapes, both block types, save / load, the diffusers baseline."""

import pytest
import torch

from explore.diffusion.build import build_unet
from explore.diffusion.unet import EfficientUNet

SMALL = {"block_out_channels": (8, 16, 16), "attention_levels": (2,), "cross_attention_dim": 12, "attention_heads": 2,
             "norm_num_groups": 4}  # fmt: skip


def _inputs(batch=2, side=16):
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(batch, 3, side, side, generator=g)
    context = torch.randn(batch, 5, 12, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])[:batch]
    return sample, torch.tensor([3, 700])[:batch], context, mask


@pytest.mark.parametrize("conv_type", ["plain", "separable"])
@pytest.mark.parametrize("layers_per_block", [1, 2])
def test_output_has_the_input_shape(conv_type, layers_per_block):
    unet = EfficientUNet(sample_size=16, conv_type=conv_type, layers_per_block=layers_per_block, **SMALL)
    sample, t, context, mask = _inputs()
    assert unet(sample, t, context, mask).sample.shape == sample.shape
    assert unet(sample[:1], 5, context[:1], None).sample.shape == (1, 3, 16, 16)  # scalar timestep, no mask


def test_separable_blocks_have_fewer_parameters():
    plain = EfficientUNet(conv_type="plain", **SMALL)
    separable = EfficientUNet(conv_type="separable", **SMALL)
    assert sum(p.numel() for p in separable.parameters()) < sum(p.numel() for p in plain.parameters())


@pytest.mark.parametrize("conv_type", ["plain", "separable"])
def test_save_and_load_give_the_same_model(tmp_path, conv_type):
    torch.manual_seed(0)
    unet = EfficientUNet(sample_size=16, conv_type=conv_type, **SMALL).eval()
    unet.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = EfficientUNet.from_pretrained(tmp_path).eval()
    assert loaded.config.conv_type == conv_type
    for (name, a), (_, b) in zip(unet.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    sample, t, context, mask = _inputs()
    assert torch.equal(unet(sample, t, context, mask).sample, loaded(sample, t, context, mask).sample)


def test_conv_type_per_level_builds_each_level_with_its_type(tmp_path):
    torch.manual_seed(0)
    unet = EfficientUNet(sample_size=16, conv_type=("plain", "separable", "separable"), **SMALL).eval()
    # level 0 (16 x 16): full 3x3 convolutions, in its residual blocks and in the upsampler writing 16 x 16
    assert isinstance(unet.down_res[0].conv1, torch.nn.Conv2d) and unet.down_res[0].conv1.kernel_size == (3, 3)
    assert isinstance(unet.up_res[-1].conv2, torch.nn.Conv2d)
    assert isinstance(unet.upsamplers[1], torch.nn.Conv2d)  # 8 x 8 -> 16 x 16
    # the deeper levels, the downsampler leaving 16 x 16 excepted: depthwise + pointwise
    assert isinstance(unet.down_res[1].conv1, torch.nn.Sequential)
    assert isinstance(unet.mid_res1.conv2, torch.nn.Sequential)
    assert isinstance(unet.downsamplers[0], torch.nn.Conv2d) and isinstance(unet.downsamplers[1], torch.nn.Sequential)
    assert isinstance(unet.upsamplers[0], torch.nn.Sequential)  # 4 x 4 -> 8 x 8
    sample, t, context, mask = _inputs()
    assert unet(sample, t, context, mask).sample.shape == sample.shape
    unet.save_pretrained(tmp_path)
    loaded = EfficientUNet.from_pretrained(tmp_path).eval()
    assert list(loaded.config.conv_type) == ["plain", "separable", "separable"]
    assert torch.equal(unet(sample, t, context, mask).sample, loaded(sample, t, context, mask).sample)
    sizes = {kinds: sum(p.numel() for p in EfficientUNet(conv_type=kinds, **SMALL).parameters())
             for kinds in ("separable", ("plain", "separable", "separable"), "plain")}  # fmt: skip
    assert sizes["separable"] < sizes[("plain", "separable", "separable")] < sizes["plain"]


def test_upsample_conv_type_and_time_embedding_dim(tmp_path):
    torch.manual_seed(0)
    kinds = ("plain", "separable", "separable")
    unet = EfficientUNet(sample_size=16, conv_type=kinds, upsample_conv_type="separable", time_embedding_dim=40,
                         **SMALL).eval()  # fmt: skip
    # both upsamplers separable, the 8 x 8 -> 16 x 16 one included; the residual blocks keep their level's type
    assert all(isinstance(up, torch.nn.Sequential) for up in unet.upsamplers[:2])
    assert isinstance(unet.up_res[-1].conv2, torch.nn.Conv2d) and isinstance(unet.downsamplers[0], torch.nn.Conv2d)
    assert unet.time_mlp[-1].out_features == 40 and unet.down_res[0].time.in_features == 40
    assert unet.text_pool.out_features == 40
    sample, t, context, mask = _inputs()
    unet.save_pretrained(tmp_path)
    loaded = EfficientUNet.from_pretrained(tmp_path).eval()
    assert (loaded.config.upsample_conv_type, loaded.config.time_embedding_dim) == ("separable", 40)
    assert torch.equal(unet(sample, t, context, mask).sample, loaded(sample, t, context, mask).sample)
    # the defaults build what they built before: the finer level's type, 4 x the first width
    default = EfficientUNet(sample_size=16, conv_type=kinds, **SMALL)
    assert isinstance(default.upsamplers[1], torch.nn.Conv2d) and default.time_mlp[-1].out_features == 4 * 8


def test_upsample_channels_finer_writes_the_finer_width(tmp_path):
    torch.manual_seed(0)
    kinds = ("plain", "separable", "separable")
    unet = EfficientUNet(sample_size=16, conv_type=kinds, upsample_channels="finer", **SMALL).eval()
    # SMALL's widths (8, 16, 16): 4 -> 8 writes 16 (level 1's), 8 -> 16 writes 8 with a full 3x3 (level 0's type)
    assert unet.upsamplers[1].in_channels == 16 and unet.upsamplers[1].out_channels == 8
    assert unet.upsamplers[0][1].out_channels == 16
    first_fine = unet.up_res[-(SMALL.get("layers_per_block", 1) + 1)]  # the first up block at 16 x 16: 8 + 8 in
    assert first_fine.norm1.num_channels == 16
    sample, t, context, mask = _inputs()
    assert unet(sample, t, context, mask).sample.shape == sample.shape
    unet.save_pretrained(tmp_path)
    loaded = EfficientUNet.from_pretrained(tmp_path).eval()
    assert loaded.config.upsample_channels == "finer"
    assert torch.equal(unet(sample, t, context, mask).sample, loaded(sample, t, context, mask).sample)
    same = EfficientUNet(sample_size=16, conv_type=kinds, **SMALL)
    assert sum(p.numel() for p in unet.parameters()) < sum(p.numel() for p in same.parameters())


def test_text_changes_the_output():
    torch.manual_seed(0)
    unet = EfficientUNet(sample_size=16, **SMALL).eval()
    sample, t, context, mask = _inputs()
    assert not torch.allclose(unet(sample, t, context, mask).sample, unet(sample, t, context + 1, mask).sample)


def test_bad_config_values_are_refused():
    with pytest.raises(ValueError, match="conv_type"):
        EfficientUNet(conv_type="winograd", **SMALL)
    with pytest.raises(ValueError, match="conv_type lists 2 types for 3 levels"):
        EfficientUNet(conv_type=("plain", "separable"), **SMALL)
    with pytest.raises(ValueError, match="unknown conv_type 'dilated'"):
        EfficientUNet(conv_type=("plain", "dilated", "separable"), **SMALL)
    with pytest.raises(ValueError, match="unknown conv_type 'dilated'"):
        EfficientUNet(upsample_conv_type="dilated", **SMALL)
    with pytest.raises(ValueError, match="unknown upsample_channels 'coarser'"):
        EfficientUNet(upsample_channels="coarser", **SMALL)
    with pytest.raises(ValueError, match="time_embedding_dim must be >= 1"):
        EfficientUNet(time_embedding_dim=0, **SMALL)
    with pytest.raises(ValueError, match="attention_levels"):
        EfficientUNet(**{**SMALL, "attention_levels": (5,)})
    with pytest.raises(ValueError, match="divisible"):
        EfficientUNet(sample_size=16, **SMALL)(torch.zeros(1, 3, 18, 18), 1, torch.zeros(1, 2, 12))


def test_diffusers_baseline_takes_the_same_inputs(tiny_config):
    config = tiny_config.model_copy(update={"model": tiny_config.model.model_copy(update={"kind": "diffusers"})})
    unet = build_unet(config, cross_attention_dim=12)
    assert type(unet).__name__ == "UNet2DConditionModel"
    sample, t, context, mask = _inputs(side=32)
    out = unet(sample, t, encoder_hidden_states=context, encoder_attention_mask=mask).sample
    assert out.shape == sample.shape
