"""Exact-arithmetic speed-ups of the renderer: the low-resolution SPADE MLP convolution and the load-time
folding of batch norms and spectral norms (``optimize_for_inference``). Golden parity of the optimized
networks runs in ``test_parity_modules.py``."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from sadtalker_core.nets.blocks import SPADEResnetBlock, SpectralNormConv2d, conv3x3_of_upsampled
from sadtalker_core.nets.generator import SPADEGenerator
from sadtalker_core.nets.inference import optimize_for_inference


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("with_bias", [True, False])
def test_conv_of_upsampled_equals_upsample_then_conv(scale, with_bias):
    gen = torch.Generator().manual_seed(scale)
    x = torch.randn(2, 5, 6, 7, generator=gen)
    weight = torch.randn(4, 5, 3, 3, generator=gen)
    bias = torch.randn(4, generator=gen) if with_bias else None
    expected = F.conv2d(F.interpolate(x, scale_factor=scale, mode="nearest"), weight, bias, padding=1)
    got = conv3x3_of_upsampled(x, weight, bias, scale)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_resnet_block_on_upsampled_input_matches_full_resolution_segmap():
    torch.manual_seed(0)
    block = SPADEResnetBlock(8, 4, label_nc=6).eval()
    x, seg = torch.randn(1, 8, 16, 16), torch.randn(1, 6, 4, 4)
    with torch.no_grad():
        low = block(x, seg)
        full = block(x, F.interpolate(seg, size=(16, 16), mode="nearest"))
    torch.testing.assert_close(low, full, atol=1e-5, rtol=1e-5)


def _randomize_norms(net: torch.nn.Module, gen: torch.Generator) -> None:
    """Non-trivial eval statistics, so that folding them is actually exercised."""
    for m in net.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(1 + 0.2 * torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))


def test_optimized_generator_matches_and_drops_folded_layers():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = SPADEGenerator().eval()
    with torch.no_grad():
        _randomize_norms(net, gen)
    fast = optimize_for_inference(copy.deepcopy(net))
    assert not any(isinstance(m, SpectralNormConv2d) for m in fast.modules())
    norms = [n for n, m in fast.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms and all(n.endswith(".norm1") and n.startswith("resblocks_3d.") for n in norms)  # pre-activation
    assert not fast.training and not any(p.requires_grad for p in fast.parameters())

    size = 128  # smallest size the 5-level hourglass accepts
    source = torch.rand(1, 3, size, size, generator=gen)
    kp_source = torch.rand(1, 15, 3, generator=gen) * 2 - 1
    kp_driving = kp_source + 0.05 * torch.randn(2, 15, 3, generator=gen)
    with torch.inference_mode():
        expected, got = net(source, kp_source, kp_driving), fast(source, kp_source, kp_driving)
    for name in ("prediction", "occlusion_map", "mask"):
        torch.testing.assert_close(got[name], expected[name], atol=5e-5, rtol=0)
