"""ExpNet: audio -> absolute 3DMM expression coefficients (official ``SimpleWrapperV2``)."""

from __future__ import annotations

import torch
from torch import nn

from .audio_encoder import AudioEncoder

EXPRESSION_SIZE = 64
EMBEDDING_SIZE = 512


class ExpNet(nn.Module):
    """``(mels (N,1,80,16), ref (1,N,64), ratio (1,N,1)) -> (1,N,64)``.

    One linear map of [audio embedding (512), reference expression (64), eye-blink ratio (1)]; each frame is
    independent, so any chunking of the frames gives the same result. The output is absolute (the reference
    is an input feature, not added back).
    """

    def __init__(self):
        super().__init__()
        self.audio_encoder = AudioEncoder()
        self.mapping1 = nn.Linear(EMBEDDING_SIZE + EXPRESSION_SIZE + 1, EXPRESSION_SIZE)

    def forward(self, mels: torch.Tensor, ref: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        n = mels.shape[0]
        embedding = self.audio_encoder(mels).reshape(n, -1)
        features = torch.cat([embedding, ref.reshape(n, -1), ratio.reshape(n, -1)], dim=1)
        return self.mapping1(features).reshape(ref.shape[0], ref.shape[1], -1)
