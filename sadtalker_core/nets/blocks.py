"""Building blocks shared by the face-render networks (KPDetector, generator, HEEstimator).

Attribute names are the official state-dict path components. Batch norms are plain ``nn.BatchNorm2d/3d``
(eps 1e-5): in eval mode the official SynchronizedBatchNorm is exactly that, with the same keys.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INSTANCE_NORM_EPS = 1e-5
SPADE_SLOPE = 0.2
SPADE_HIDDEN = 128


def make_coordinate_grid(spatial_size: tuple[int, int, int], dtype: torch.dtype = torch.float32,
                         device: torch.device | str | None = None) -> Tensor:
    """(D, H, W, 3) grid whose last axis is (x, y, z), each running from -1 to 1 inclusive.

    The endpoints sit on voxel centres (corner-aligned) although every ``grid_sample`` that consumes the grid
    uses ``align_corners=False``: the trained weights expect that slight zoom, so it is kept.
    """
    def axis(n: int) -> Tensor:
        # Same float32 operation order as the official grid: 2 * (i / (n - 1)) - 1.
        return 2 * (torch.arange(n, dtype=torch.float32, device=device) / (n - 1)) - 1

    d, h, w = spatial_size
    x, y, z = axis(w).view(1, 1, w), axis(h).view(1, h, 1), axis(d).view(d, 1, 1)
    return torch.stack(torch.broadcast_tensors(x, y, z), dim=-1).to(dtype)


class SameBlock2d(nn.Module):
    """conv -> BN -> ReLU (LeakyReLU 0.01 with ``lrelu``), resolution kept."""

    FOLDABLE_NORMS = (("conv", "norm"),)

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 3, padding: int = 1,
                 lrelu: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, kernel_size, padding=padding)
        self.norm = nn.BatchNorm2d(out_features)
        self.lrelu = lrelu

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(self.conv(x))
        return F.leaky_relu(x, 0.01) if self.lrelu else F.relu(x)


class DownBlock2d(nn.Module):
    """conv 3x3 -> BN -> ReLU -> 2x2 average pooling."""

    FOLDABLE_NORMS = (("conv", "norm"),)

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv2d(in_features, out_features, 3, padding=1)
        self.norm = nn.BatchNorm2d(out_features)

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(F.relu(self.norm(self.conv(x))), 2)


class DownBlock3d(nn.Module):
    """conv 3x3x3 -> BN -> ReLU -> (1, 2, 2) average pooling (depth kept)."""

    FOLDABLE_NORMS = (("conv", "norm"),)

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, 3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.norm(self.conv(x)))
        b, c, d, h, w = x.shape
        # (1, 2, 2) pooling as 2-D pooling of the depth-folded volume: same sums, and unlike avg_pool3d it
        # also runs in bfloat16 on CPU.
        return F.avg_pool2d(x.reshape(b, c * d, h, w), 2).reshape(b, c, d, h // 2, w // 2)


class UpBlock3d(nn.Module):
    """nearest (1, 2, 2) upsampling -> conv 3x3x3 -> BN -> ReLU."""

    FOLDABLE_NORMS = (("conv", "norm"),)

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.conv = nn.Conv3d(in_features, out_features, 3, padding=1)
        self.norm = nn.BatchNorm3d(out_features)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")
        return F.relu(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv2(relu(BN(conv1(relu(BN(x))))))."""

    FOLDABLE_NORMS = (("conv1", "norm2"),)  # norm1 acts on the block input, not on a conv output

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv3d(features, features, 3, padding=1)
        self.conv2 = nn.Conv3d(features, features, 3, padding=1)
        self.norm1 = nn.BatchNorm3d(features)
        self.norm2 = nn.BatchNorm3d(features)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        out = self.conv2(F.relu(self.norm2(out)))
        return out + x


class ResBottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 bottleneck; a strided block projects its shortcut with ``skip``/``norm4``."""

    def __init__(self, features: int, stride: int):
        super().__init__()
        inner = features // 4
        self.conv1 = nn.Conv2d(features, inner, 1)
        self.conv2 = nn.Conv2d(inner, inner, 3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(inner, features, 1)
        self.norm1 = nn.BatchNorm2d(inner)
        self.norm2 = nn.BatchNorm2d(inner)
        self.norm3 = nn.BatchNorm2d(features)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(features, features, 1, stride=stride)
            self.norm4 = nn.BatchNorm2d(features)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        shortcut = self.norm4(self.skip(x)) if self.stride != 1 else x
        return F.relu(out + shortcut)


class SpectralNormConv2d(nn.Module):
    """Conv2d stored the way ``torch.nn.utils.spectral_norm`` stores it (``weight_orig``, ``weight_u``,
    ``weight_v``), evaluated as torch's eval path does: ``W = weight_orig / (u . (weight_orig_2d @ v))``.

    The stored u, v are used as they are; no power iteration ever runs (it would change a trained net).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        self.padding = padding
        # Registration order bias, weight_orig, weight_u, weight_v = the official state_dict() order.
        self.register_parameter("bias", nn.Parameter(torch.empty(out_channels)) if bias else None)
        self.weight_orig = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.register_buffer("weight_u", torch.empty(out_channels))
        self.register_buffer("weight_v", torch.empty(in_channels * kernel_size * kernel_size))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Conv2d's default initialisation, with u, v set near the leading singular vectors so that a fresh
        (unloaded) layer is already normalised; loading a checkpoint overwrites all of it."""
        nn.init.kaiming_uniform_(self.weight_orig, a=math.sqrt(5))
        fan_in = self.weight_orig[0].numel()
        if self.bias is not None:
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        matrix = self.weight_orig.reshape(self.weight_orig.shape[0], -1)
        v = F.normalize(torch.randn(matrix.shape[1]), dim=0)
        for _ in range(3):
            u = F.normalize(matrix @ v, dim=0)
            v = F.normalize(matrix.t() @ u, dim=0)
        self.weight_u.copy_(u)
        self.weight_v.copy_(v)

    def normalized_weight(self) -> Tensor:
        """The effective convolution weight."""
        w = self.weight_orig
        sigma = torch.dot(self.weight_u, torch.mv(w.reshape(w.shape[0], -1), self.weight_v))
        return w / sigma

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, padding=self.padding)


class SPADE(nn.Module):
    """Spatially-adaptive denormalisation: ``IN(x) * (1 + gamma(seg)) + beta(seg)``."""

    def __init__(self, norm_nc: int, label_nc: int = 256):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, SPADE_HIDDEN, 3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(SPADE_HIDDEN, norm_nc, 3, padding=1)
        self.mlp_beta = nn.Conv2d(SPADE_HIDDEN, norm_nc, 3, padding=1)

    def forward(self, x: Tensor, segmap: Tensor) -> Tensor:
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        return self.modulate(instance_norm(x), self.mlp_shared(segmap))

    def modulate(self, normalized: Tensor, hidden: Tensor) -> Tensor:
        """Apply gamma/beta computed from the shared hidden activation (one conv for both heads)."""
        weight = torch.cat([self.mlp_gamma.weight, self.mlp_beta.weight])
        bias = torch.cat([self.mlp_gamma.bias, self.mlp_beta.bias])
        gamma, beta = F.conv2d(hidden, weight, bias, padding=1).chunk(2, dim=1)
        return normalized * (1 + gamma) + beta


def _phase_classes(scale: int) -> list[tuple[slice, int, Tensor]]:
    """The output phases of a nearest x``scale`` upsampling along one axis grouped by the low-resolution
    pixels their 3 taps read: (phases, start, (3, 2) map from the 3 taps to 2 low-resolution taps at offsets
    start - 1 and start). Phase 0 reads back to offset -1, the last phase forward to +1, inner phases only
    offset 0 (as the second of the two taps)."""
    first = (slice(0, 1), 0, torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))
    inner = (slice(1, scale - 1), 0, torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]]))
    last = (slice(scale - 1, scale), 1, torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    return [first, inner, last] if scale > 2 else [first, last]


def conv3x3_of_upsampled(x: Tensor, weight: Tensor, bias: Tensor | None, scale: int) -> Tensor:
    """``conv2d(interpolate(x, scale_factor=scale, mode="nearest"), weight, bias, padding=1)`` for a 3x3
    ``weight``, computed at the low resolution.

    Each output phase of the upsampled grid reads at most 2x2 distinct input pixels, so its 3x3 kernel
    collapses to a 2x2 kernel of summed taps. One 2x2 convolution with a kernel per phase class (4 at x2, 9 at
    x4) replaces the full-resolution one: 16 instead of 36 (x2) or 36 instead of 144 (x4) multiply-adds per
    input pixel and weight. Equal up to the float rounding of the summed taps.
    """
    b, _, h, w = x.shape
    out_channels = weight.shape[0]
    classes = [(rows, cols, top, left, torch.einsum("oidc,dr,cs->oirs", weight, row_taps.to(weight),
                                                    col_taps.to(weight)))
               for rows, top, row_taps in _phase_classes(scale) for cols, left, col_taps in _phase_classes(scale)]
    # Output (i, j) of the 2x2 convolution over the zero-padded input reads input rows i-1..i, columns j-1..j.
    phases = F.conv2d(F.pad(x, (1, 1, 1, 1)), torch.cat([kernel for *_, kernel in classes]),
                      None if bias is None else bias.repeat(len(classes)))
    phases = phases.reshape(b, len(classes), out_channels, h + 1, w + 1)
    out = phases.new_empty(b, out_channels, h, scale, w, scale)
    for k, (rows, cols, top, left, _) in enumerate(classes):
        out[:, :, :, rows, :, cols] = phases[:, k, :, top:top + h, left:left + w, None, None].transpose(3, 4)
    return out.reshape(b, out_channels, h * scale, w * scale)


def instance_norm(x: Tensor) -> Tensor:
    """Parameter-free InstanceNorm2d (per-sample statistics, biased variance, eps 1e-5)."""
    return F.instance_norm(x, eps=INSTANCE_NORM_EPS)


class SPADEResnetBlock(nn.Module):
    """Residual block with SPADE norms and spectral-normalised convs (official norm_G 'spadespectralinstance').

    The block's two or three SPADEs read the same resized segmentation map and ``norm_0``/``norm_s`` the same
    normalised input, so their shared MLP convs run as one convolution and the input is normalised once.
    """

    def __init__(self, fin: int, fout: int, label_nc: int = 256):
        super().__init__()
        fmiddle = min(fin, fout)
        self.learned_shortcut = fin != fout
        self.conv_0 = SpectralNormConv2d(fin, fmiddle, 3, padding=1)
        self.conv_1 = SpectralNormConv2d(fmiddle, fout, 3, padding=1)
        if self.learned_shortcut:
            self.conv_s = SpectralNormConv2d(fin, fout, 1, bias=False)
        self.norm_0 = SPADE(fin, label_nc)
        self.norm_1 = SPADE(fmiddle, label_nc)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc)

    def _spades(self) -> list[SPADE]:
        return [self.norm_0, self.norm_1, self.norm_s] if self.learned_shortcut else [self.norm_0, self.norm_1]

    def forward(self, x: Tensor, seg: Tensor) -> Tensor:
        spades = self._spades()
        weight = torch.cat([s.mlp_shared[0].weight for s in spades])
        bias = torch.cat([s.mlp_shared[0].bias for s in spades])
        scale = x.shape[2] // seg.shape[2]
        if seg.shape[2:] == x.shape[2:]:
            hidden = F.conv2d(seg, weight, bias, padding=1)
        elif x.shape[2:] == (seg.shape[2] * scale, seg.shape[3] * scale):
            hidden = conv3x3_of_upsampled(seg, weight, bias, scale)
        else:
            hidden = F.conv2d(F.interpolate(seg, size=x.shape[2:], mode="nearest"), weight, bias, padding=1)
        hidden = F.relu(hidden).chunk(len(spades), dim=1)

        normalized = instance_norm(x)
        shortcut = self.conv_s(self.norm_s.modulate(normalized, hidden[2])) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0.modulate(normalized, hidden[0]), SPADE_SLOPE))
        dx = self.conv_1(F.leaky_relu(self.norm_1.modulate(instance_norm(dx), hidden[1]), SPADE_SLOPE))
        return shortcut + dx
