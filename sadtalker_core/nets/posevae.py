"""PoseVAE: audio -> head-motion sequence (official ``Audio2Pose``), inference path only.

Inference needs the audio encoder and the CVAE *decoder* fed with an external latent ``z``. The CVAE encoder
(``netG.encoder.*``) and the motion discriminator (``netD_motion.*``) are training-only: they are not built,
and their checkpoint keys are dropped by :func:`drop_unused_keys` (listed in
:data:`UNUSED_CHECKPOINT_PREFIXES`) before the strict load.

Motion is predicted relative to the first frame: frame 0 gets zero motion and frames 1..T-1 are covered by
independent windows of :data:`SEQ_LEN` frames (see :func:`split_windows`).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, Union

import torch
from torch import nn

from ..errors import InputError
from .audio_encoder import AudioEncoder

SEQ_LEN = 32
LATENT_SIZE = 64
POSE_SIZE = 6
NUM_POSE_STYLES = 46
EMBEDDING_SIZE = 512
AUDIO_FEATURE_SIZE = 6
MLP_SIZES = (128, SEQ_LEN * POSE_SIZE)

#: Checkpoint key prefixes of the official Audio2Pose that inference never uses (not built here).
UNUSED_CHECKPOINT_PREFIXES = ("netG.encoder.", "netD_motion.")

#: Mel windows encoded per batch in :meth:`PoseVAE.audio_embedding`: bounds activation memory for long audio
#: (the first blocks hold 32x80x16 floats per window).
_EMBED_BATCH = 256

Latents = Union[Callable[[int], torch.Tensor], Sequence[torch.Tensor], torch.Tensor]


def drop_unused_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official Audio2Pose state dict without the training-only entries (timm-style filter)."""
    return {k: v for k, v in state_dict.items() if not k.startswith(UNUSED_CHECKPOINT_PREFIXES)}


class ResidualConv(nn.Module):
    """Pre-activation residual unit: (BN, ReLU, conv, BN, ReLU, conv) + (conv, BN) skip."""

    def __init__(self, in_channels: int, out_channels: int, stride=1):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.conv_skip = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x) + self.conv_skip(x)


class Upsample(nn.Module):
    """Transposed conv that doubles the time axis only."""

    def __init__(self, channels: int):
        super().__init__()
        self.upsample = nn.ConvTranspose2d(channels, channels, kernel_size=(2, 1), stride=(2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)


class ResUnet(nn.Module):
    """U-Net over a (B, 1, time, 6) motion map; strides (2, 1) halve only the time axis."""

    def __init__(self, filters: tuple[int, int, int, int] = (32, 64, 128, 256)):
        super().__init__()
        f0, f1, f2, f3 = filters
        self.input_layer = nn.Sequential(
            nn.Conv2d(1, f0, 3, padding=1),
            nn.BatchNorm2d(f0),
            nn.ReLU(),
            nn.Conv2d(f0, f0, 3, padding=1),
        )
        self.input_skip = nn.Sequential(nn.Conv2d(1, f0, 3, padding=1))
        self.residual_conv_1 = ResidualConv(f0, f1, stride=(2, 1))
        self.residual_conv_2 = ResidualConv(f1, f2, stride=(2, 1))
        self.bridge = ResidualConv(f2, f3, stride=(2, 1))
        self.upsample_1 = Upsample(f3)
        self.up_residual_conv1 = ResidualConv(f3 + f2, f2)
        self.upsample_2 = Upsample(f2)
        self.up_residual_conv2 = ResidualConv(f2 + f1, f1)
        self.upsample_3 = Upsample(f1)
        self.up_residual_conv3 = ResidualConv(f1 + f0, f0)
        self.output_layer = nn.Sequential(nn.Conv2d(f0, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.input_layer(x) + self.input_skip(x)
        x2 = self.residual_conv_1(x1)
        x3 = self.residual_conv_2(x2)
        x4 = self.bridge(x3)
        x6 = self.up_residual_conv1(torch.cat([self.upsample_1(x4), x3], dim=1))
        x8 = self.up_residual_conv2(torch.cat([self.upsample_2(x6), x2], dim=1))
        x10 = self.up_residual_conv3(torch.cat([self.upsample_3(x8), x1], dim=1))
        return self.output_layer(x10)


class MotionDecoder(nn.Module):
    """CVAE decoder: (audio embedding window, reference pose, style, z) -> motion window (B, 32, 6)."""

    def __init__(self):
        super().__init__()
        self.classbias = nn.Parameter(torch.zeros(NUM_POSE_STYLES, LATENT_SIZE))
        self.resunet = ResUnet()
        in_size = POSE_SIZE + LATENT_SIZE + SEQ_LEN * AUDIO_FEATURE_SIZE
        self.MLP = nn.Sequential()
        self.MLP.add_module("L0", nn.Linear(in_size, MLP_SIZES[0]))
        self.MLP.add_module("A0", nn.ReLU())
        self.MLP.add_module("L1", nn.Linear(MLP_SIZES[0], MLP_SIZES[1]))
        self.MLP.add_module("sigmoid", nn.Sigmoid())
        self.pose_linear = nn.Linear(POSE_SIZE, POSE_SIZE)
        self.linear_audio = nn.Linear(EMBEDDING_SIZE, AUDIO_FEATURE_SIZE)

    def forward(self, audio_emb: torch.Tensor, ref_pose: torch.Tensor, pose_class: torch.Tensor,
                z: torch.Tensor) -> torch.Tensor:
        batch = audio_emb.shape[0]
        audio_features = self.linear_audio(audio_emb).reshape(batch, -1)  # frame-major (t0 d0..d5, t1 ...)
        z = z + self.classbias[pose_class]
        x = self.MLP(torch.cat([ref_pose.expand(batch, -1), z, audio_features], dim=-1))
        x = self.resunet(x.reshape(batch, 1, SEQ_LEN, -1))
        return self.pose_linear(x.squeeze(1))


class SequenceAudioEncoder(nn.Module):
    """(B, T, 1, 80, 16) -> (B, T, 512) with the official time-major batching.

    The official wrapper stacks the windows time-major (t0 of every batch row, then t1, ...) but reshapes the
    result batch-major, so rows are mixed up for B > 1. Reproduced as is; every SadTalker call has B = 1,
    where both orders agree.
    """

    def __init__(self):
        super().__init__()
        self.audio_encoder = AudioEncoder()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        batch = mels.shape[0]
        stacked = mels.transpose(0, 1).reshape(-1, *mels.shape[2:])
        embedding = torch.cat([self.audio_encoder(part) for part in stacked.split(_EMBED_BATCH)])
        return embedding.reshape(batch, -1, embedding.shape[1])


class _CVAE(nn.Module):
    """Holds the decoder under the official key path ``netG.decoder``."""

    def __init__(self):
        super().__init__()
        self.decoder = MotionDecoder()


def count_windows(num_frames: int) -> int:
    """How many decoder calls (and latents ``z``) :meth:`PoseVAE.predict_motion` needs for T frames."""
    moving = max(num_frames - 1, 0)
    return moving // SEQ_LEN + (1 if moving % SEQ_LEN else 0)


def split_windows(audio_emb: torch.Tensor) -> torch.Tensor:
    """Decoder windows (W, 32, 512) over the embeddings (1, n, 512) of frames 1..T-1 (official order).

    Full windows ``[32k, 32k+32)`` first; if n is not a multiple of 32, one more window = the last 32
    embeddings, overlapping the previous one; with fewer than 32 it is left-padded by repeating its first
    embedding.
    """
    n = audio_emb.shape[1]
    full = n // SEQ_LEN
    windows = [audio_emb[:, : full * SEQ_LEN].reshape(full, SEQ_LEN, audio_emb.shape[-1])]
    if n % SEQ_LEN:
        last = audio_emb[:, -SEQ_LEN:]
        if n < SEQ_LEN:
            last = torch.cat([last[:, :1].expand(-1, SEQ_LEN - n, -1), last], dim=1)
        windows.append(last)
    return torch.cat(windows)


def join_windows(window_motions: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(1, T, 6) motion from the decoder outputs (W, 32, 6): zero for frame 0, full windows in order, then
    the last ``(T-1) % 32`` predictions of the remainder window."""
    moving = num_frames - 1
    full = moving // SEQ_LEN
    remainder = moving % SEQ_LEN
    size = window_motions.shape[-1]
    parts = [window_motions.new_zeros(1, 1, size), window_motions[:full].reshape(1, full * SEQ_LEN, size)]
    if remainder:
        parts.append(window_motions[full:, -remainder:])
    return torch.cat(parts, dim=1)


def _stack_latents(latents: Latents, count: int, like: torch.Tensor) -> torch.Tensor:
    if callable(latents):
        drawn = [latents(k) for k in range(count)]
    else:
        drawn = list(latents)
        if len(drawn) < count:
            raise InputError(f"PoseVAE needs {count} latents (one per window) but got {len(drawn)}: pass "
                             f"count_windows(num_frames) of them, or a callable that draws one per call.")
        drawn = drawn[:count]
    return torch.stack([torch.as_tensor(z).reshape(LATENT_SIZE) for z in drawn]).to(like)


class PoseVAE(nn.Module):
    """Audio -> head motion relative to the first frame (official ``Audio2Pose`` inference path).

    State-dict keys: ``audio_encoder.audio_encoder.*`` and ``netG.decoder.*`` (the official file minus
    :data:`UNUSED_CHECKPOINT_PREFIXES`).
    """

    def __init__(self):
        super().__init__()
        self.audio_encoder = SequenceAudioEncoder()
        self.netG = _CVAE()

    def audio_embedding(self, mels: torch.Tensor) -> torch.Tensor:
        """(1, t, 1, 80, 16) mel windows -> (1, t, 512)."""
        return self.audio_encoder(mels)

    def decode(self, audio_emb: torch.Tensor, ref_pose: torch.Tensor, pose_class: torch.Tensor,
               z: torch.Tensor) -> torch.Tensor:
        """(W, 32, 512) embeddings, ref_pose (1, 6), pose_class (1,) long, z (W, 64) -> motion (W, 32, 6).

        W = 1 is the official per-window call; windows are independent, so several decode in one batch.
        """
        return self.netG.decoder(audio_emb, ref_pose, pose_class, z)

    def predict_motion(self, indiv_mels: torch.Tensor, ref_pose: torch.Tensor, pose_class: torch.Tensor,
                       latents: Latents) -> torch.Tensor:
        """Motion (1, T, 6) for the mel windows (1, T, 1, 80, 16); the pose is ``ref_pose + motion``.

        ``latents`` gives one (1, 64) z per decoder window, in window order (:func:`count_windows` of them): a
        sequence / (W, 1, 64) tensor, or a callable ``latents(k)``; ``lambda k: torch.randn(1, 64)`` after
        ``torch.manual_seed(s)`` draws the official noise stream. Any T >= 1 works (T = 1: zero motion).
        """
        num_frames = indiv_mels.shape[1]
        if num_frames < 1:
            raise InputError("PoseVAE got no audio frames: the driving audio must last at least one video "
                             "frame (40 ms at 25 fps).")
        if int(pose_class.min()) < 0 or int(pose_class.max()) >= NUM_POSE_STYLES:
            raise InputError(f"pose style {pose_class.tolist()} is out of range: use 0..{NUM_POSE_STYLES - 1}.")
        count = count_windows(num_frames)
        if count == 0:
            return indiv_mels.new_zeros(1, 1, POSE_SIZE)
        windows = split_windows(self.audio_embedding(indiv_mels[:, 1:]))
        z = _stack_latents(latents, count, windows)
        return join_windows(self.decode(windows, ref_pose, pose_class, z), num_frames)
