"""Audio -> per-frame 3DMM coefficients (T, 70): blinks, ExpNet, PoseVAE, smoothing, reference videos.

The official ``get_data`` + ``Audio2Coeff.generate`` path as plain functions. Coefficient vectors are
``[expression (64), angles (3), translation (3)]``; the source coefficient row may carry the 3 crop
parameters after them (73 values), which this stage ignores.

Randomness follows the official draw order and count: one ``rng.choice(range(...))`` per
blink attempt, one ``torch.randn(1, 64)`` per PoseVAE window, drawn even when a later option discards them, so
a seed gives the same video whatever the reference / still / blink options.
"""

from __future__ import annotations

import random
from typing import Optional

import numpy as np
import torch
from scipy.signal import savgol_filter

from ..errors import InputError, OptionError

EXPRESSION_SIZE = 64
POSE_SLICE = slice(64, 70)
#: a generated coefficient row: expression (64) + angles (3) + translation (3)
EXPRESSION_POSE_SIZE = 70
#: the crop parameters a source row carries after those 70 (full modes render with all 73)
CROP_PARAM_SIZE = 3
LATENT_SIZE = 64

#: The official blink profile (eyelid closure over five frames) and the frame count below which no blink is drawn.
BLINK_PROFILE = np.array([0.5, 0.9, 1.0, 0.9, 0.5], dtype=np.float32)
MIN_BLINK_FRAMES = 20

#: Frames per ExpNet call. The official code uses 10; frames are independent, so bigger chunks only batch more.
EXPRESSION_CHUNK = 256

SMOOTH_WINDOW = 13
SMOOTH_POLYORDER = 2

#: ``ref_info`` values of the official Gradio path: what a reference video drives.
REF_INFO_ROLES = {
    "pose": ("pose",),
    "blink": ("blink",),
    "pose+blink": ("pose", "blink"),
    "all": ("all",),
}


def blink_ratio(num_frames: int, rng: random.Random) -> np.ndarray:
    """Eye-blink ratio (T, 1) float32, drawn like the official ``generate_blink_seq_randomly``.

    Each attempt draws the gap before the next blink with ``rng.choice(range(lo, hi))``,
    ``lo = min(10, T)``, ``hi = min(T // 2, 70)``; the blink is written if it ends before the last frame,
    otherwise drawing stops. For T = 21 the official range is empty (a crash); here it is widened to the
    single gap ``lo``, which is what T = 22 always draws. T <= 20 gives zeros without drawing.
    """
    ratio = np.zeros((num_frames, 1), dtype=np.float32)
    if num_frames <= MIN_BLINK_FRAMES:
        return ratio
    low = min(10, num_frames)
    high = max(min(num_frames // 2, 70), low + 1)
    frame = 0
    while frame < num_frames:
        start = frame + rng.choice(range(low, high))
        if start + len(BLINK_PROFILE) > num_frames - 1:
            break
        ratio[start:start + len(BLINK_PROFILE), 0] = BLINK_PROFILE
        frame = start + len(BLINK_PROFILE)
    return ratio


def tile_frames(coeffs: np.ndarray, num_frames: int) -> np.ndarray:
    """Rows of ``coeffs`` repeated (whole copies, then a prefix) and cut to ``num_frames`` rows."""
    coeffs = np.asarray(coeffs)
    if len(coeffs) == 0:
        raise InputError("The reference video gave no coefficient frames: use a video in which a face is "
                         "visible from the first frame.")
    copies = -(-num_frames // len(coeffs))
    return np.concatenate([coeffs] * copies, axis=0)[:num_frames]


def expression_coeffs(expnet: torch.nn.Module, windows: torch.Tensor, ref_exp: torch.Tensor,
                      ratio: torch.Tensor, chunk: int = EXPRESSION_CHUNK) -> torch.Tensor:
    """Absolute expression coefficients (1, T, 64) from mel windows (1, T, 1, 80, 16).

    ``ref_exp`` (1, T, 64) and ``ratio`` (1, T, 1) are per-frame inputs of ExpNet. The official code calls
    the network on chunks of 10 frames; the frames are independent, so ``chunk`` only trades memory for speed.
    """
    parts = []
    for i in range(0, windows.shape[1], chunk):
        mels = windows[0, i:i + chunk]
        parts.append(expnet(mels, ref_exp[:, i:i + chunk], ratio[:, i:i + chunk]))
    return torch.cat(parts, dim=1)


def pose_latents(num_frames: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The PoseVAE latents (W, 1, 64): one ``torch.randn(1, 64)`` per decoder window (frames 1..T-1 in windows
    of 32, plus one for a remainder) on the CPU, in official order.

    ``generator=None`` draws from torch's global CPU generator, like the official code.
    """
    from ..nets.posevae import count_windows

    draws = [torch.randn(1, LATENT_SIZE, generator=generator) for _ in range(count_windows(num_frames))]
    return torch.stack(draws) if draws else torch.zeros(0, 1, LATENT_SIZE)


def pose_coeffs(posevae: torch.nn.Module, windows: torch.Tensor, ref_pose: torch.Tensor, pose_style: int,
                latents: torch.Tensor) -> torch.Tensor:
    """Head pose (1, T, 6) = ``ref_pose`` (1, 6) + PoseVAE motion (frame 0 has zero motion), unsmoothed."""
    pose_class = torch.tensor([pose_style], dtype=torch.long, device=windows.device)
    motion = posevae.predict_motion(windows, ref_pose, pose_class, latents.to(windows.device))
    return ref_pose.unsqueeze(1) + motion


def smooth_pose(pose: np.ndarray) -> np.ndarray:
    """Savitzky-Golay smoothing over time of a (T, 6) pose (official: window 13, order 2, mode ``interp``).

    Shorter clips use the largest odd window <= T; for T <= 2 no window fits the polynomial and the pose is
    returned unchanged (the official code raises there).
    """
    pose = np.asarray(pose, dtype=np.float32)
    num_frames = pose.shape[0]
    window = SMOOTH_WINDOW if num_frames >= SMOOTH_WINDOW else (num_frames - 1) // 2 * 2 + 1
    if window <= SMOOTH_POLYORDER:
        return pose.copy()
    # float32 in -> float32 out; SciPy computes in float64 internally, as in the official call.
    return savgol_filter(pose, window, SMOOTH_POLYORDER, axis=0)


def scale_head_motion(pose: np.ndarray, source_pose: np.ndarray, scale: float) -> np.ndarray:
    """``source + scale * (pose - source)``: 0 keeps the source pose, 1 is the generated motion unchanged."""
    if scale == 1:
        return pose
    source_pose = np.asarray(source_pose, dtype=np.float32).reshape(1, -1)
    return (source_pose + np.float32(scale) * (pose - source_pose)).astype(np.float32)


def apply_ref_pose(coeffs: np.ndarray, ref_pose_coeffs: np.ndarray) -> np.ndarray:
    """Adds the reference video's head motion relative to its first frame to ``coeffs`` (T, 70).

    The reference pose (columns 64:70 of its coefficients) is tiled to T frames;
    ``pose[t] += ref[t] - ref[0]`` (official ``--ref_pose``: added on top of the generated motion).
    """
    ref = tile_frames(np.asarray(ref_pose_coeffs, dtype=np.float32)[:, POSE_SLICE], coeffs.shape[0])
    out = np.array(coeffs, dtype=np.float32, copy=True)
    out[:, POSE_SLICE] = out[:, POSE_SLICE] + (ref - ref[:1])
    return out


def reference_roles(ref_info: Optional[str]) -> tuple[str, ...]:
    """What a Gradio-style reference video drives: a subset of ``("pose", "blink")``, or ``("all",)``."""
    if ref_info not in REF_INFO_ROLES:
        problem = f"got {ref_info!r}, expected one of {', '.join(REF_INFO_ROLES)} with a reference video."
        raise OptionError(f"ref_info: {problem}", option="ref_info", problem=problem)
    return REF_INFO_ROLES[ref_info]


def generate_coeffs(expnet: Optional[torch.nn.Module], posevae: Optional[torch.nn.Module],
                    windows: Optional[torch.Tensor], source_coeff, *, pose_style: int = 0, blink: bool = True,
                    rng: Optional[random.Random] = None, generator: Optional[torch.Generator] = None,
                    ref_eyeblink: Optional[np.ndarray] = None, ref_pose: Optional[np.ndarray] = None,
                    ref_video: Optional[np.ndarray] = None, ref_info: Optional[str] = None,
                    head_motion_scale: float = 1.0, expression_chunk: int = EXPRESSION_CHUNK) -> np.ndarray:
    """Generated coefficients (T, 70) float32 for mel windows (1, T, 1, 80, 16) on the networks' device.

    ``source_coeff`` (1, >=70): the source's 3DMM row. ``ref_eyeblink`` / ``ref_pose`` (N, >=70): coefficients
    of reference videos (official ``--ref_eyeblink`` / ``--ref_pose``); ``ref_video`` + ``ref_info`` is the
    Gradio form (``"all"`` returns the video's own coefficients; the networks and windows are then unused).
    ``rng`` draws the blinks and ``generator`` the PoseVAE latents; ``None`` means unseeded (``rng``) / torch's
    global generator. Same seeds -> bit-identical output on the same machine.
    """
    if ref_video is not None:
        roles = reference_roles(ref_info)
        if "all" in roles:
            return np.array(np.asarray(ref_video, dtype=np.float32)[:, :EXPRESSION_POSE_SIZE], copy=True)
        if ("blink" in roles and ref_eyeblink is not None) or ("pose" in roles and ref_pose is not None):
            problem = ("names a reference for the same role as ref_eyeblink/ref_pose: give either ref_video with "
                       "ref_info, or ref_eyeblink/ref_pose.")
            raise OptionError(f"ref_video {problem}", option="ref_video", problem=problem)
        ref_eyeblink = ref_video if "blink" in roles else ref_eyeblink
        ref_pose = ref_video if "pose" in roles else ref_pose

    num_frames = windows.shape[1]
    if num_frames < 1:
        raise InputError("The driving audio is shorter than one video frame (40 ms): use a longer audio file.")
    device = windows.device
    source = np.asarray(source_coeff.cpu() if torch.is_tensor(source_coeff) else source_coeff,
                        dtype=np.float32).reshape(1, -1)[:, :EXPRESSION_POSE_SIZE]

    ratio = blink_ratio(num_frames, rng if rng is not None else random.Random())
    ref = np.repeat(source, num_frames, axis=0)
    if ref_eyeblink is not None:
        ratio[:] = 0
        ref[:, :EXPRESSION_SIZE] = tile_frames(np.asarray(ref_eyeblink, dtype=np.float32)[:, :EXPRESSION_SIZE],
                                               num_frames)
    if not blink:
        ratio[:] = 0

    ref_t = torch.from_numpy(ref).to(device).unsqueeze(0)
    ratio_t = torch.from_numpy(ratio).to(device).unsqueeze(0)
    latents = pose_latents(num_frames, generator)
    with torch.inference_mode():
        exp = expression_coeffs(expnet, windows, ref_t[:, :, :EXPRESSION_SIZE], ratio_t, chunk=expression_chunk)
        pose = pose_coeffs(posevae, windows, ref_t[:, 0, POSE_SLICE], pose_style, latents)

    pose = smooth_pose(pose[0].float().cpu().numpy())
    pose = scale_head_motion(pose, source[0, POSE_SLICE], head_motion_scale)
    coeffs = np.concatenate([exp[0].float().cpu().numpy(), pose], axis=1).astype(np.float32)
    if ref_pose is not None:
        coeffs = apply_ref_pose(coeffs, ref_pose)
    return coeffs
