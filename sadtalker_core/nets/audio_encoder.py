"""Wav2Lip-style audio encoder shared (as two independent weight copies) by ExpNet and PoseVAE.

Input: per-video-frame mel windows (N, 1, 80, 16) (H = mel bands, W = 16 mel steps); output (N, 512, 1, 1).
"""

from __future__ import annotations

import torch
from torch import nn

#: (in, out, kernel, stride, padding, residual) of the 13 blocks, in checkpoint order.
_BLOCKS = (
    (1, 32, 3, 1, 1, False),
    (32, 32, 3, 1, 1, True),
    (32, 32, 3, 1, 1, True),
    (32, 64, 3, (3, 1), 1, False),
    (64, 64, 3, 1, 1, True),
    (64, 64, 3, 1, 1, True),
    (64, 128, 3, 3, 1, False),
    (128, 128, 3, 1, 1, True),
    (128, 128, 3, 1, 1, True),
    (128, 256, 3, (3, 2), 1, False),
    (256, 256, 3, 1, 1, True),
    (256, 512, 3, 1, 0, False),
    (512, 512, 1, 1, 0, False),
)


class ConvBNReLU(nn.Module):
    """Conv2d -> BatchNorm2d [-> + input] -> ReLU.

    The residual is added to the normalised output *before* the ReLU (the official order), not after it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride, padding: int,
                 residual: bool = False):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding),
            nn.BatchNorm2d(out_channels),
        )
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return torch.relu(out)


class AudioEncoder(nn.Sequential):
    """13 conv blocks: (N, 1, 80, 16) mel windows -> (N, 512, 1, 1) embeddings.

    A ``Sequential`` so the checkpoint keys are ``{i}.conv_block.{0,1}.*`` as in the official files.
    """

    def __init__(self):
        super().__init__(*(ConvBNReLU(*spec) for spec in _BLOCKS))
