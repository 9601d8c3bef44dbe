"""Face renderer: official ``OcclusionAwareSPADEGenerator`` with its ``DenseMotionNetwork`` and ``SPADEDecoder``.

The source image is encoded once into a 3-D feature volume (``encode_source``); every driving step only warps
that volume (``animate``). A batch-1 volume serves any number of driving keypoint sets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import (SPADE_SLOPE, DownBlock2d, DownBlock3d, ResBlock3d, SameBlock2d, SPADEResnetBlock, UpBlock3d,
                     make_coordinate_grid)

NUM_KP = 15
FEATURE_CHANNELS = 32  # reshape_channel: channels of the 3-D source volume
FEATURE_DEPTH = 16  # reshape_depth
COMPRESS = 4
KP_VARIANCE = 0.01
MASK_THRESHOLD = 1e-3


class HourglassEncoder(nn.Module):
    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        self.down_blocks = nn.ModuleList(
            DownBlock3d(in_features if i == 0 else min(max_features, block_expansion * 2 ** i),
                        min(max_features, block_expansion * 2 ** (i + 1)))
            for i in range(num_blocks))

    def forward(self, x: Tensor) -> list[Tensor]:
        outs = [x]
        for block in self.down_blocks:
            outs.append(block(outs[-1]))
        return outs


class HourglassDecoder(nn.Module):
    FOLDABLE_NORMS = (("conv", "norm"),)

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int):
        super().__init__()
        blocks = []
        for i in reversed(range(num_blocks)):
            fin = (1 if i == num_blocks - 1 else 2) * min(max_features, block_expansion * 2 ** (i + 1))
            blocks.append(UpBlock3d(fin, min(max_features, block_expansion * 2 ** i)))
        self.up_blocks = nn.ModuleList(blocks)
        self.out_filters = block_expansion + in_features
        self.conv = nn.Conv3d(self.out_filters, self.out_filters, 3, padding=1)
        self.norm = nn.BatchNorm3d(self.out_filters)

    def forward(self, skips: list[Tensor]) -> Tensor:
        out = skips[-1]
        for block, skip in zip(self.up_blocks, reversed(skips[:-1])):
            out = torch.cat([block(out), skip], dim=1)
        return F.relu(self.norm(self.conv(out)))


class Hourglass(nn.Module):
    """3-D U-Net; output channels = block_expansion + in_features."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int = 5, max_features: int = 1024):
        super().__init__()
        self.encoder = HourglassEncoder(block_expansion, in_features, num_blocks, max_features)
        self.decoder = HourglassDecoder(block_expansion, in_features, num_blocks, max_features)
        self.out_filters = self.decoder.out_filters

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encoder(x))


def keypoint_gaussians(offsets: Tensor) -> Tensor:
    """Unnormalised Gaussians ``exp(-0.5 |grid - kp|^2 / 0.01)`` from the (..., 3) offsets grid - kp."""
    return torch.exp(-0.5 * (offsets ** 2).sum(-1) / KP_VARIANCE)


class DenseMotionNetwork(nn.Module):
    """Keypoints + source volume -> soft assignment of every voxel to one of 16 motions (identity + 15 kp).

    ``forward`` returns ``mask`` (B, 16, D, H, W) softmax (before the official ``< 1e-3 -> 0`` zeroing, which
    only feeds the deformation), ``deformation`` (B, D, H, W, 3) ``grid_sample`` coordinates (x, y, z) and
    ``occlusion_map`` (B, 1, H, W).
    """

    FOLDABLE_NORMS = (("compress", "norm"),)

    def __init__(self, block_expansion: int = 32, num_blocks: int = 5, max_features: int = 1024):
        super().__init__()
        self.hourglass = Hourglass(block_expansion, (NUM_KP + 1) * (COMPRESS + 1), num_blocks, max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, NUM_KP + 1, 7, padding=3)
        self.compress = nn.Conv3d(FEATURE_CHANNELS, COMPRESS, 1)
        self.norm = nn.BatchNorm3d(COMPRESS)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters * FEATURE_DEPTH, 1, 7, padding=3)

    def forward(self, feature: Tensor, kp_driving: Tensor, kp_source: Tensor) -> dict[str, Tensor]:
        batch, num_kp = kp_driving.shape[:2]
        feature = F.relu(self.norm(self.compress(feature)))
        channels, d, h, w = feature.shape[1:]
        grid = make_coordinate_grid((d, h, w), dtype=feature.dtype, device=feature.device)

        # Motion k maps a driving-frame voxel to the source frame: grid - kp_driving_k + kp_source_k.
        driving_offsets = grid - kp_driving.reshape(batch, num_kp, 1, 1, 1, 3)
        source_offsets = grid - kp_source.reshape(-1, num_kp, 1, 1, 1, 3)
        motions = driving_offsets + kp_source.reshape(-1, num_kp, 1, 1, 1, 3)
        identity = grid.expand(batch, 1, d, h, w, 3)
        sparse_motion = torch.cat([identity, motions], dim=1)  # (B, K+1, D, H, W, 3)

        motion_count = num_kp + 1
        repeated = feature.unsqueeze(1).expand(batch, motion_count, channels, d, h, w)
        deformed = F.grid_sample(repeated.reshape(batch * motion_count, channels, d, h, w),
                                 sparse_motion.reshape(batch * motion_count, d, h, w, 3), align_corners=False)
        deformed = deformed.reshape(batch, motion_count, channels, d, h, w)

        heatmap = keypoint_gaussians(driving_offsets) - keypoint_gaussians(source_offsets)
        heatmap = torch.cat([heatmap.new_zeros(batch, 1, d, h, w), heatmap], dim=1)
        hourglass_input = torch.cat([heatmap.unsqueeze(2), deformed], dim=2)
        prediction = self.hourglass(hourglass_input.reshape(batch, -1, d, h, w))

        mask = F.softmax(self.mask(prediction), dim=1)
        kept = mask.masked_fill(mask < MASK_THRESHOLD, 0)  # official quirk: no renormalisation
        deformation = (sparse_motion * kept.unsqueeze(-1)).sum(dim=1)
        occlusion_map = torch.sigmoid(self.occlusion(prediction.reshape(batch, -1, h, w)))
        return {"mask": mask, "deformation": deformation, "occlusion_map": occlusion_map}


class SPADEDecoder(nn.Module):
    """Occluded 256-channel feature (S/4) -> RGB (S) through 6 + 2 SPADE residual blocks."""

    def __init__(self, in_channels: int = 256, out_channels: int = 64):
        super().__init__()
        self.fc = nn.Conv2d(in_channels, 2 * in_channels, 3, padding=1)
        for i in range(6):
            self.add_module(f"G_middle_{i}", SPADEResnetBlock(2 * in_channels, 2 * in_channels, in_channels))
        self.up_0 = SPADEResnetBlock(2 * in_channels, in_channels, in_channels)
        self.up_1 = SPADEResnetBlock(in_channels, out_channels, in_channels)
        self.conv_img = nn.Conv2d(out_channels, 3, 3, padding=1)

    def forward(self, feature: Tensor) -> Tensor:
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = self.up_0(F.interpolate(x, scale_factor=2.0, mode="nearest"), feature)
        x = self.up_1(F.interpolate(x, scale_factor=2.0, mode="nearest"), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, SPADE_SLOPE)))


class SPADEGenerator(nn.Module):
    """Official OcclusionAwareSPADEGenerator (facerender config: 15 kp, 32x16 volume, 6 3-D res blocks)."""

    def __init__(self, block_expansion: int = 64, max_features: int = 512):
        super().__init__()
        # Registration order = official state_dict() order (dense motion first).
        self.dense_motion_network = DenseMotionNetwork()
        self.first = SameBlock2d(3, block_expansion, 3, 1)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(min(max_features, block_expansion * 2 ** i), min(max_features, block_expansion * 2 ** (i + 1)))
            for i in range(2))
        self.second = nn.Conv2d(block_expansion * 4, max_features, 1)
        self.resblocks_3d = nn.Sequential()
        for i in range(6):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(FEATURE_CHANNELS))
        self.third = SameBlock2d(max_features, block_expansion * 4, 3, 1, lrelu=True)
        self.fourth = nn.Conv2d(block_expansion * 4, block_expansion * 4, 1)
        self.decoder = SPADEDecoder()

    def encode_source(self, source: Tensor) -> Tensor:
        """``(B, 3, S, S)`` -> source feature volume ``(B, 32, 16, S/4, S/4)`` (channel c*16 + d -> (c, d))."""
        out = self.first(source)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        b, c, h, w = out.shape
        return self.resblocks_3d(out.reshape(b, FEATURE_CHANNELS, c // FEATURE_CHANNELS, h, w))

    def animate(self, feature_3d: Tensor, kp_source: Tensor, kp_driving: Tensor) -> dict[str, Tensor]:
        """Render ``(B, 3, S, S)`` frames for keypoints ``(B, 15, 3)``; batch-1 inputs broadcast to B.

        Returns ``prediction``, ``occlusion_map`` (B, 1, S/4, S/4), ``mask`` (B, 16, 16, S/4, S/4) and
        ``deformation`` (B, 16, S/4, S/4, 3).
        """
        batch = max(feature_3d.shape[0], kp_source.shape[0], kp_driving.shape[0])
        kp_source = kp_source.expand(batch, -1, -1)
        kp_driving = kp_driving.expand(batch, -1, -1)
        motion = self.dense_motion_network(feature_3d, kp_driving, kp_source)
        warped = F.grid_sample(feature_3d.expand(batch, *feature_3d.shape[1:]), motion["deformation"],
                               align_corners=False)
        b, c, d, h, w = warped.shape
        out = self.fourth(self.third(warped.reshape(b, c * d, h, w)))
        prediction = self.decoder(out * motion["occlusion_map"])
        return {"prediction": prediction, **motion}

    def forward(self, source: Tensor, kp_source: Tensor, kp_driving: Tensor) -> dict[str, Tensor]:
        return self.animate(self.encode_source(source), kp_source, kp_driving)
