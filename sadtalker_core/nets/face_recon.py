"""3DMM coefficient regressor: ResNet-50 + seven 1x1 heads (official ``ReconNetWrapper('resnet50')``).

The backbone is the torchvision ResNet-50 v1.5 layout (stride on the 3x3 conv of each bottleneck), written
here so the package does not depend on torchvision; key names match ``backbone.*`` of the official files.
"""

from __future__ import annotations

import torch
from torch import nn

#: Output widths of the heads, concatenated in this order: identity, expression, texture, angles,
#: lighting (gamma), translation x/y, translation z -> 257 coefficients.
HEAD_SIZES = (80, 64, 80, 3, 27, 2, 1)
RECON_OUTPUT_SIZE = sum(HEAD_SIZES)

_LAYERS = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride)
_EXPANSION = 4


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (strided) -> 1x1 expand, each with BN; identity or projected shortcut; ReLU."""

    def __init__(self, in_channels: int, width: int, stride: int = 1):
        super().__init__()
        out_channels = width * _EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + shortcut)


class ResNet50Features(nn.Module):
    """ResNet-50 without the classifier: (N, 3, H, W) -> globally pooled (N, 2048, 1, 1)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for index, (width, blocks, stride) in enumerate(_LAYERS, start=1):
            layer = []
            for block in range(blocks):
                layer.append(Bottleneck(in_channels, width, stride if block == 0 else 1))
                in_channels = width * _EXPANSION
            self.add_module(f"layer{index}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x)


class FaceReconNet(nn.Module):
    """(N, 3, 224, 224) RGB in [0, 1] (aligned face, no mean/std normalisation) -> (N, 257) coefficients:
    id 0:80, exp 80:144, tex 144:224, angle 224:227, gamma 227:254, trans 254:257."""

    def __init__(self):
        super().__init__()
        self.backbone = ResNet50Features()
        self.final_layers = nn.ModuleList(nn.Conv2d(512 * _EXPANSION, size, 1) for size in HEAD_SIZES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        return torch.cat([head(features) for head in self.final_layers], dim=1).flatten(1)
