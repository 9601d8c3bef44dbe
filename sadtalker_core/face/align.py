"""224 x 224 alignment for the 3DMM regressor (official ``CropAndExtract.generate`` + Deep3DFaceRecon
``align_img``): 5 landmarks, a POS fit against the standard 3-D face, PIL bicubic resize and crop.

Everything is float64 except the standard face (float32, as stored in ``similarity_Lm3D_all.mat``).
``trans_params = [W, H, s, t_x, t_y]`` is returned in float64; the official code casts it to float32, which
``coeff_73`` does when it appends ``s, t_x, t_y`` to the motion coefficients.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..errors import NoFaceError
from .landmarks import as_landmarks68

#: Standard 3-D landmarks reduced to 5 points: left eye, right eye, nose tip, left and right mouth corner.
LM3D_STD_5 = np.array([
    [-0.31148657, 0.29036078, 0.13377953],
    [0.30979887, 0.28972036, 0.13179526],
    [0.0032534988, -0.046179324, 0.55244243],
    [-0.25216928, -0.38133916, 0.22405732],
    [0.2484662, -0.38128236, 0.22235769],
], dtype=np.float32)

RECON_SIZE = 224
#: Deep3DFaceRecon's target scale: the POS scale is mapped to this many pixels.
RESCALE_FACTOR = 102.0


def five_points(lm68: np.ndarray) -> np.ndarray:
    """(5, 2): mean of eye corners 36/39 and 42/45, nose tip 30, mouth corners 48 and 54."""
    return np.stack([lm68[[36, 39]].mean(axis=0), lm68[[42, 45]].mean(axis=0), lm68[30], lm68[48], lm68[54]])


def flip_y(lm: np.ndarray, height: int) -> np.ndarray:
    """Landmarks (float64) with y measured upwards from the last row, as the 3DMM fit expects."""
    flipped = np.array(lm, dtype=np.float64)
    flipped[:, 1] = height - 1 - flipped[:, 1]
    return flipped


def pos_fit(points_2d: np.ndarray, points_3d: np.ndarray = LM3D_STD_5) -> tuple[np.ndarray, float]:
    """Least-squares scaled-orthographic pose: translation ``t`` (2,) and scale ``s`` (float64).

    Unknowns ``[r1 (3), s*tx, r2 (3), s*ty]``; rows alternate x and y per point. ``rcond=-1`` is the legacy
    cut-off the official numpy < 2 call used implicitly.
    """
    count = points_2d.shape[0]
    system = np.zeros((2 * count, 8))
    system[0::2, 0:3] = points_3d
    system[0::2, 3] = 1
    system[1::2, 4:7] = points_3d
    system[1::2, 7] = 1
    target = np.asarray(points_2d, dtype=np.float64).reshape(2 * count, 1)
    k = np.linalg.lstsq(system, target, rcond=-1)[0][:, 0]
    scale = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.array([k[3], k[7]]), float(scale)


def align_for_recon(frame: np.ndarray, landmarks_in_frame: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Align a square face frame (S, S, 3) uint8 RGB for the regressor.

    ``landmarks_in_frame`` are 68 (x, y) points in ``frame`` pixels (y down). Returns ``aligned`` (224, 224, 3)
    uint8 (black where the frame does not reach), ``trans_params`` (5,) float64 and ``lm_new`` (68, 2), the
    y-flipped landmarks in aligned-image pixels.
    """
    height, width = frame.shape[:2]
    lm = flip_y(as_landmarks68(landmarks_in_frame, "landmarks_in_frame"), height)
    t, s_pos = pos_fit(five_points(lm))
    if not np.isfinite(s_pos) or s_pos <= 0:
        raise NoFaceError("The face landmarks are degenerate, so the face cannot be aligned for the 3DMM fit. "
                          "Pass real 68-point landmarks or let the detector find the face.")
    s = RESCALE_FACTOR / s_pos

    # int32 casts truncate toward zero, also for negative offsets (official resize_n_crop_img).
    w = int(np.int32(width * s))
    h = int(np.int32(height * s))
    half = RECON_SIZE / 2
    left = int(np.int32(w / 2 - half + float((t[0] - width / 2) * s)))
    up = int(np.int32(h / 2 - half + float((height / 2 - t[1]) * s)))
    resized = Image.fromarray(np.ascontiguousarray(frame)).resize((w, h), resample=Image.BICUBIC)
    aligned = np.asarray(resized.crop((left, up, left + RECON_SIZE, up + RECON_SIZE)).convert("RGB"))

    lm_new = np.stack([lm[:, 0] - t[0] + width / 2, lm[:, 1] - t[1] + height / 2], axis=1) * s
    lm_new = lm_new - np.array([[w / 2 - half, h / 2 - half]])
    trans_params = np.array([width, height, s, t[0], t[1]], dtype=np.float64)
    return aligned, trans_params, lm_new


def recon_input(aligned: np.ndarray) -> np.ndarray:
    """(224, 224, 3) uint8 -> (1, 3, 224, 224) float32 RGB in [0, 1] (divided in float64, like the official)."""
    return (np.asarray(aligned).transpose(2, 0, 1)[None] / 255.0).astype(np.float32)


def coeff_73(full_257: np.ndarray, trans_params: np.ndarray) -> np.ndarray:
    """Per-frame coefficients kept by SadTalker: exp (64), angle (3), trans (3), then s, t_x, t_y (float32)."""
    full = np.asarray(full_257, dtype=np.float32).reshape(-1, 257)
    crop = np.broadcast_to(np.asarray(trans_params, dtype=np.float32).reshape(-1, 5)[:, 2:], (full.shape[0], 3))
    return np.concatenate([full[:, 80:144], full[:, 224:227], full[:, 254:257], crop], axis=1)
