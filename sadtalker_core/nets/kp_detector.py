"""Canonical 3-D keypoint detector (official ``KPDetector``, facevid2vid config of SadTalker)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import DownBlock2d, UpBlock3d, make_coordinate_grid

NUM_KP = 15
TEMPERATURE = 0.1
BLUR_SIGMA = 1.5  # (1 / scale_factor - 1) / 2 for scale_factor 0.25
SUBSAMPLE = 4


class AntiAliasDownsample(nn.Module):
    """Gaussian blur (13x13, zero padding 6) then every 4th pixel: the official AntiAliasInterpolation2d.

    The kernel is the checkpoint's ``down.weight`` buffer. Running the depthwise conv with stride 4 gives the
    same pixels as blurring at full resolution and slicing ``[::4, ::4]``, at 1/16 of the cost.
    """

    def __init__(self, channels: int = 3):
        super().__init__()
        size = 2 * round(4 * BLUR_SIGMA) + 1
        self.register_buffer("weight", gaussian_kernel(size, BLUR_SIGMA).expand(channels, 1, size, size).clone())

    def forward(self, x: Tensor) -> Tensor:
        pad = self.weight.shape[-1] // 2
        return F.conv2d(F.pad(x, (pad, pad, pad, pad)), self.weight, stride=SUBSAMPLE, groups=x.shape[1])


def gaussian_kernel(size: int, sigma: float) -> Tensor:
    """Normalised 2-D Gaussian (size x size); the default for ``down.weight`` until a checkpoint is loaded."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-offsets ** 2 / (2 * sigma ** 2))
    kernel = g[:, None] * g[None, :]
    return (kernel / kernel.sum()).float()


class KPHourglass(nn.Module):
    """2-D encoder (S/4 -> S/128), 1x1 lift to a (1024, 16) volume, 3-D decoder back to (32, 16, S/4, S/4)."""

    def __init__(self, block_expansion: int = 32, in_features: int = 3, max_features: int = 1024,
                 reshape_features: int = 16384, reshape_depth: int = 16, num_blocks: int = 5):
        super().__init__()
        self.down_blocks = nn.Sequential()
        for i in range(num_blocks):
            fin = in_features if i == 0 else min(max_features, block_expansion * 2 ** i)
            self.down_blocks.add_module(f"down{i}", DownBlock2d(fin, min(max_features, block_expansion * 2 ** (i + 1))))
        self.conv = nn.Conv2d(min(max_features, block_expansion * 2 ** num_blocks), reshape_features, 1)
        self.up_blocks = nn.Sequential()
        for i in range(num_blocks):
            fin = max_features if i == 0 else min(max_features, block_expansion * 2 ** (num_blocks - i))
            fout = min(max_features, block_expansion * 2 ** (num_blocks - i - 1))
            self.up_blocks.add_module(f"up{i}", UpBlock3d(fin, fout))
        self.reshape_depth = reshape_depth

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(self.down_blocks(x))
        b, c, h, w = out.shape
        return self.up_blocks(out.reshape(b, c // self.reshape_depth, self.reshape_depth, h, w))


class KPDetector(nn.Module):
    """``(B, 3, S, S)`` RGB in [0, 1] -> canonical keypoints ``(B, 15, 3)`` (x, y, z in about [-1, 1])."""

    def __init__(self):
        super().__init__()
        self.predictor = KPHourglass()
        self.kp = nn.Conv3d(32, NUM_KP, 3, padding=1)
        self.down = AntiAliasDownsample(3)

    def forward(self, image: Tensor) -> Tensor:
        logits = self.kp(self.predictor(self.down(image)))
        b, k = logits.shape[:2]
        heatmap = F.softmax(logits.reshape(b, k, -1) / TEMPERATURE, dim=2)
        grid = make_coordinate_grid(logits.shape[2:], dtype=heatmap.dtype, device=heatmap.device)
        # Expectation of the grid under each heat map. A reduction, not a matmul: a GEMM's long sequential
        # accumulation over the 65536 voxels drifts by ~1e-4 from the official sum.
        return (heatmap.unsqueeze(-1) * grid.reshape(1, 1, -1, 3)).sum(dim=2)
