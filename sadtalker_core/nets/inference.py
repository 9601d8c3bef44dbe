"""Load-time transforms that make a loaded network cheaper to run without changing what it computes.

``optimize_for_inference(net)`` is the last step after loading weights: the result is for inference only and
its ``state_dict()`` is no longer the official tree (load checkpoints before, never after).

* Batch norms that directly follow a convolution are folded into it (eval statistics). Blocks declare such
  pairs as ``FOLDABLE_NORMS = (("conv", "norm"), ...)`` next to the forward that relies on the adjacency.
* Spectral-normalised convolutions become plain convolutions holding ``weight_orig / sigma``, so the weight is
  no longer divided on every call.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .blocks import SpectralNormConv2d


def optimize_for_inference(net: nn.Module) -> nn.Module:
    """Folds batch norms and spectral norms of ``net`` (in place, switched to eval mode); returns ``net``."""
    net.eval()
    with torch.no_grad():
        for module in list(net.modules()):
            for conv_name, norm_name in getattr(module, "FOLDABLE_NORMS", ()):
                conv, norm = getattr(module, conv_name), getattr(module, norm_name)
                if isinstance(norm, nn.modules.batchnorm._BatchNorm):
                    setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                    setattr(module, norm_name, nn.Identity())
            for name, child in list(module.named_children()):
                if isinstance(child, SpectralNormConv2d):
                    setattr(module, name, _plain_conv(child))
    return net.requires_grad_(False)


def _plain_conv(layer: SpectralNormConv2d) -> nn.Conv2d:
    weight = layer.normalized_weight()
    out_channels, in_channels, kh, kw = weight.shape
    conv = nn.Conv2d(in_channels, out_channels, (kh, kw), padding=layer.padding, bias=layer.bias is not None,
                     device=weight.device, dtype=weight.dtype)
    conv.weight.copy_(weight)
    if layer.bias is not None:
        conv.bias.copy_(layer.bias)
    return conv
