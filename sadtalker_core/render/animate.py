"""Coefficients -> rendered frames: 27-frame semantic windows, camera sequences, keypoints, render loop.

The official ``get_facerender_data`` + ``make_animation`` path. Differences that do not change the numbers:
the source is encoded once (KPDetector, source MappingNet, the generator's 3-D feature) instead of per step,
and frames are rendered in order in batches of ``batch_size`` and yielded as they are done, so memory stays
flat for any clip length. :func:`batch_layout` still reproduces the official (B, L, C, 27) block layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, NamedTuple, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import Cancelled, InputError
from ..motion.coeffs import CROP_PARAM_SIZE, EXPRESSION_POSE_SIZE
from ..options import Preprocess
from ..progress import Stage

SEMANTIC_RADIUS = 13
POSE_START = 64
NUM_BINS = 66
#: The official code converts degrees to radians with 3.14, not pi; keypoints depend on it.
PI_OFFICIAL = 3.14

Progress = Callable[[str, int, int], None]


# -- batch construction ---------------------------------------------------------------------------------------

def source_semantics(source_coeff, preprocess: str) -> np.ndarray:
    """The source row repeated over the 27-frame window: (1, C, 27) float32, C = 73 in full modes else 70."""
    width = EXPRESSION_POSE_SIZE + (CROP_PARAM_SIZE if Preprocess(preprocess).pastes_back else 0)
    row = np.asarray(source_coeff, dtype=np.float32).reshape(1, -1)[:, :width]
    return np.repeat(row[:, :, None], 2 * SEMANTIC_RADIUS + 1, axis=2)


def render_targets(generated: np.ndarray, source_coeff, preprocess: str, still: bool = False,
                   expression_scale: float = 1.0) -> np.ndarray:
    """Per-frame render coefficients (T, C) float32 from the generated (T, 70).

    Expression is scaled by ``expression_scale``; full modes append the source's crop parameters; still mode
    replaces the pose (and crop parameters) by the source's.
    """
    source = np.asarray(source_coeff, dtype=np.float32).reshape(1, -1)
    targets = np.array(np.asarray(generated, dtype=np.float32)[:, :EXPRESSION_POSE_SIZE], copy=True)
    targets[:, :POSE_START] = targets[:, :POSE_START] * np.float32(expression_scale)
    if Preprocess(preprocess).pastes_back:
        crop_params = source[:, EXPRESSION_POSE_SIZE:EXPRESSION_POSE_SIZE + CROP_PARAM_SIZE]
        targets = np.concatenate([targets, np.repeat(crop_params, len(targets), 0)], 1)
    if still:
        targets[:, POSE_START:] = source[:, POSE_START:targets.shape[1]]
    return targets


def semantic_windows(coeffs, radius: int = SEMANTIC_RADIUS):
    """Windows (T, C, 2r+1) of rows ``t-r .. t+r`` clamped to [0, T-1], for a (T, C) array or tensor."""
    num_frames = coeffs.shape[0]
    offsets = np.arange(-radius, radius + 1)
    index = np.clip(np.arange(num_frames)[:, None] + offsets[None, :], 0, num_frames - 1)
    if torch.is_tensor(coeffs):
        return coeffs[torch.from_numpy(index).to(coeffs.device)].transpose(1, 2)
    return np.ascontiguousarray(np.asarray(coeffs)[index].transpose(0, 2, 1))


def batch_layout(per_frame, batch_size: int):
    """The official (B, L, ...) layout of per-frame items (T, ...): the last item is repeated up to a
    multiple of B, then rows are split in contiguous blocks (batch row b holds frames b*L .. b*L+L-1)."""
    pad = -len(per_frame) % batch_size
    if torch.is_tensor(per_frame):
        padded = torch.cat([per_frame, per_frame[-1:].expand(pad, *per_frame.shape[1:])])
    else:
        per_frame = np.asarray(per_frame)
        padded = np.concatenate([per_frame, np.repeat(per_frame[-1:], pad, axis=0)])
    return padded.reshape(batch_size, -1, *padded.shape[1:])


def camera_sequence(values: Optional[Sequence[float]], num_frames: int) -> Optional[np.ndarray]:
    """Free-view angle per frame (T,) float32 from keyframe degrees (official ``gen_camera_pose``), or None.

    One value is held for every frame. Several values sweep keyframe to keyframe at a constant angular speed:
    step = (total travel) / (T - 1), each segment ``np.arange(a, b, ±step)``, then cut or padded (with the last
    value reached) to T frames. Repeated consecutive values (where the official code divides by zero) hold
    their value for as many frames as a move of average length takes; T = 1 gives the first keyframe.
    """
    if values is None or len(values) == 0:
        return None
    values = [float(v) for v in values]
    moves = [abs(b - a) for a, b in zip(values, values[1:]) if b != a]
    if len(values) == 1 or num_frames <= 1 or not moves:
        return np.full(num_frames, values[0], dtype=np.float32)
    hold = sum(moves) / len(moves)
    travel = 0.0
    for a, b in zip(values, values[1:]):
        travel += abs(b - a) if b != a else hold
    per_frame = travel / (num_frames - 1)
    sequence: list[float] = []
    for a, b in zip(values, values[1:]):
        if b != a:
            # per_frame * |d| / d, in the official order of operations (bit-identical steps).
            sequence.extend(np.arange(a, b, per_frame * abs(b - a) / (b - a)))
        else:
            sequence.extend([a] * len(np.arange(0.0, hold, per_frame)))
    sequence = sequence[:num_frames]
    sequence.extend([sequence[-1]] * (num_frames - len(sequence)))
    return np.asarray(sequence, dtype=np.float32)


# -- keypoints ------------------------------------------------------------------------------------------------

def headpose_degrees(logits: torch.Tensor) -> torch.Tensor:
    """Degrees (B,) from 66-bin logits (B, 66): ``3 * E[bin] - 99``."""
    bins = torch.arange(NUM_BINS, dtype=logits.dtype, device=logits.device)
    return torch.sum(F.softmax(logits, dim=1) * bins, dim=1) * 3 - 99


def rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """R = Rx(pitch) @ Ry(yaw) @ Rz(roll) (B, 3, 3) from degrees (B,), with the official pi = 3.14."""
    yaw, pitch, roll = (a / 180 * PI_OFFICIAL for a in (yaw, pitch, roll))
    one, zero = torch.ones_like(pitch), torch.zeros_like(pitch)

    def matrix(*entries):
        return torch.stack(entries, dim=1).reshape(-1, 3, 3)

    rx = matrix(one, zero, zero, zero, pitch.cos(), -pitch.sin(), zero, pitch.sin(), pitch.cos())
    ry = matrix(yaw.cos(), zero, yaw.sin(), zero, one, zero, -yaw.sin(), zero, yaw.cos())
    rz = matrix(roll.cos(), -roll.sin(), zero, roll.sin(), roll.cos(), zero, zero, zero, one)
    return rx @ ry @ rz


def transform_keypoints(kp_canonical: torch.Tensor, he: dict, yaw: Optional[torch.Tensor] = None,
                        pitch: Optional[torch.Tensor] = None, roll: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Posed keypoints (B, 15, 3) = R @ kp + (0, t_y, 0) + exp, from canonical keypoints (1 or B, 15, 3) and
    MappingNet outputs ``he``. ``yaw`` / ``pitch`` / ``roll`` (B,) degrees replace the predicted angles.

    Only the y translation is used (the official code zeroes x and z in place; ``he`` is not modified here).
    """
    yaw = headpose_degrees(he["yaw"]) if yaw is None else yaw
    pitch = headpose_degrees(he["pitch"]) if pitch is None else pitch
    roll = headpose_degrees(he["roll"]) if roll is None else roll
    rotation = rotation_matrix(yaw, pitch, roll)
    t = he["t"]
    translation = torch.stack([torch.zeros_like(t[:, 1]), t[:, 1], torch.zeros_like(t[:, 1])], dim=1)
    exp = he["exp"].reshape(he["exp"].shape[0], -1, 3)
    return torch.matmul(kp_canonical, rotation.transpose(1, 2)) + translation.unsqueeze(1) + exp


def driving_keypoints(mapping_net: torch.nn.Module, kp_canonical: torch.Tensor, windows: torch.Tensor,
                      yaw: Optional[torch.Tensor] = None, pitch: Optional[torch.Tensor] = None,
                      roll: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Driving keypoints (b, 15, 3) for target windows (b, C, 27); camera angles (b,) override the pose."""
    return transform_keypoints(kp_canonical, mapping_net(windows), yaw, pitch, roll)


# -- rendering ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EncodedSource:
    """Everything about the source that the render loop reuses for every frame."""

    kp_canonical: torch.Tensor  # (1, 15, 3)
    kp_source: torch.Tensor  # (1, 15, 3)
    feature_3d: torch.Tensor  # generator.encode_source output, batch 1


def encode_source(kp_detector: torch.nn.Module, mapping_net: torch.nn.Module, generator: torch.nn.Module,
                  source_image: torch.Tensor, source_semantics: torch.Tensor) -> EncodedSource:
    """Canonical + source keypoints and the generator's source feature. The generator's precision is its own
    (``models.ModelRuntime`` hands out a generator that runs under its autocast; keypoints stay float32)."""
    with torch.inference_mode():
        kp_canonical = kp_detector(source_image)
        kp_source = transform_keypoints(kp_canonical, mapping_net(source_semantics))
        feature_3d = generator.encode_source(source_image)
    return EncodedSource(kp_canonical, kp_source, feature_3d)


class RenderedBatch(NamedTuple):
    """One batch of the render loop: the index of its first frame and its frames (b, 3, S, S) float32 in
    (0, 1) on the source's device."""

    first_frame: int
    frames: torch.Tensor


def render_frames(kp_detector: torch.nn.Module, mapping_net: torch.nn.Module, generator: torch.nn.Module,
                  source_image: torch.Tensor, source_semantics, target_windows, *,
                  yaw: Optional[np.ndarray] = None, pitch: Optional[np.ndarray] = None,
                  roll: Optional[np.ndarray] = None, batch_size: int = 2,
                  progress: Optional[Progress] = None, cancel=None) -> Iterator[RenderedBatch]:
    """Renders the frames of ``target_windows`` (T, C, 27) in order, one :class:`RenderedBatch` at a time.

    ``source_image`` (1, 3, S, S) and ``source_semantics`` (1, C, 27) are encoded once. ``yaw`` / ``pitch`` /
    ``roll`` are per-frame free-view degrees (T,) (see :func:`camera_sequence`). ``cancel.is_set()`` is checked before
    every batch (raises :class:`Cancelled`); ``progress(Stage.RENDER, frames_done, total)`` after every batch.
    """
    if batch_size < 1:
        raise InputError(f"batch_size={batch_size} is invalid: render at least one frame per batch (e.g. 2).")
    device = source_image.device
    total = len(target_windows)
    source_semantics = torch.as_tensor(source_semantics, dtype=torch.float32).to(device)
    camera = [None if seq is None else torch.as_tensor(np.asarray(seq, dtype=np.float32)).to(device)
              for seq in (yaw, pitch, roll)]
    source = encode_source(kp_detector, mapping_net, generator, source_image, source_semantics)
    for start in range(0, total, batch_size):
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"Rendering was cancelled after {start} of {total} frames.")
        stop = min(start + batch_size, total)
        windows = torch.as_tensor(target_windows[start:stop], dtype=torch.float32).to(device)
        with torch.inference_mode():
            kp_driving = driving_keypoints(mapping_net, source.kp_canonical, windows,
                                           *(None if seq is None else seq[start:stop] for seq in camera))
            # The batch-1 source feature and keypoints broadcast over the batch inside the generator.
            out = generator.animate(source.feature_3d, source.kp_source, kp_driving)
            frames = out["prediction"].float()
        if progress is not None:
            progress(Stage.RENDER, stop, total)
        yield RenderedBatch(start, frames)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) floats in [0, 1] -> (B, H, W, 3) uint8 on the same device: ``rint(255 x)`` (round half to
    even, in float32) clipped to [0, 255], as skimage ``img_as_ubyte``."""
    return torch.round(frames.float() * 255).clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def render_batch_per_source(kp_detector: torch.nn.Module, mapping_net: torch.nn.Module, generator: torch.nn.Module,
                            source_images: torch.Tensor, source_semantics: torch.Tensor,
                            target_windows: torch.Tensor) -> torch.Tensor:
    """One batch in which every frame has its own source (dubbing a video): sources (b, 3, S, S), their
    semantics (b, C, 27) and targets (b, C, 27) -> frames (b, 3, S, S) float32 in (0, 1). The b sources are
    encoded in one network call each (KPDetector, MappingNet, the generator's source feature)."""
    source = encode_source(kp_detector, mapping_net, generator, source_images, source_semantics.float())
    with torch.inference_mode():
        kp_driving = driving_keypoints(mapping_net, source.kp_canonical, target_windows.float())
        out = generator.animate(source.feature_3d, source.kp_source, kp_driving)
    return out["prediction"].float()
