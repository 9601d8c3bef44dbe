"""HEEstimator: head pose / expression from an image (official facevid2vid net).

Only the old-version checkpoint ``facevid2vid_00189-model.pth.tar`` holds its weights and SadTalker's
renderer never calls it; it exists so that file loads strictly and its numerics can be checked.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .blocks import ResBottleneck

NUM_BINS = 66
NUM_KP = 15


class HEEstimator(nn.Module):
    """``(B, 3, S, S) -> dict(yaw, pitch, roll (B, 66), t (B, 3), exp (B, 45))``.

    Official quirk kept: ``yaw`` is computed by ``fc_roll`` and ``roll`` by ``fc_yaw``.
    """

    def __init__(self, block_expansion: int = 64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, block_expansion, 7, padding=3, stride=2)
        self.norm1 = nn.BatchNorm2d(block_expansion)
        self.conv2 = nn.Conv2d(block_expansion, 256, 1)
        self.norm2 = nn.BatchNorm2d(256)
        self.block1 = _bottleneck_stack("b1", 256, 3)
        self.conv3 = nn.Conv2d(256, 512, 1)
        self.norm3 = nn.BatchNorm2d(512)
        self.block2 = ResBottleneck(512, stride=2)
        self.block3 = _bottleneck_stack("b3", 512, 3)
        self.conv4 = nn.Conv2d(512, 1024, 1)
        self.norm4 = nn.BatchNorm2d(1024)
        self.block4 = ResBottleneck(1024, stride=2)
        self.block5 = _bottleneck_stack("b5", 1024, 5)
        self.conv5 = nn.Conv2d(1024, 2048, 1)
        self.norm5 = nn.BatchNorm2d(2048)
        self.block6 = ResBottleneck(2048, stride=2)
        self.block7 = _bottleneck_stack("b7", 2048, 2)
        self.fc_roll = nn.Linear(2048, NUM_BINS)
        self.fc_pitch = nn.Linear(2048, NUM_BINS)
        self.fc_yaw = nn.Linear(2048, NUM_BINS)
        self.fc_t = nn.Linear(2048, 3)
        self.fc_exp = nn.Linear(2048, 3 * NUM_KP)

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        out = F.max_pool2d(F.relu(self.norm1(self.conv1(image))), 3, stride=2, padding=1)
        out = self.block1(F.relu(self.norm2(self.conv2(out))))
        out = self.block3(self.block2(F.relu(self.norm3(self.conv3(out)))))
        out = self.block5(self.block4(F.relu(self.norm4(self.conv4(out)))))
        out = self.block7(self.block6(F.relu(self.norm5(self.conv5(out)))))
        out = out.mean(dim=(2, 3))
        return {"yaw": self.fc_roll(out), "pitch": self.fc_pitch(out), "roll": self.fc_yaw(out),
                "t": self.fc_t(out), "exp": self.fc_exp(out)}


def _bottleneck_stack(prefix: str, features: int, count: int) -> nn.Sequential:
    stack = nn.Sequential()
    for i in range(count):
        stack.add_module(f"{prefix}_{i}", ResBottleneck(features, stride=1))
    return stack
