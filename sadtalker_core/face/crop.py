"""Crop geometry of the five preprocess modes (official ``src/utils/croper.py:Preprocesser``).

The official cropper builds an FFHQ-style oriented square ("quad") from the eyes and mouth, but only uses
axis-aligned boxes: a bordered *crop box* around the quad (the ``ext*`` modes) and the quad's bounding box
inside it (``crop``/``full``). :class:`CropInfo` holds the official crop tuple's three parts by name
(``size_wh``, ``crop_box``, ``quad_box``) for paste-back and the aspect-ratio restore; ``quad_box`` is
relative to the crop box.

Two deliberate differences, both invisible whenever the official result is self-consistent (as in every recorded
official run the parity tests replay):

* Faces whose quad is >= 2048 px are analysed on an image shrunk by an integer factor, exactly like the
  official code (the pixels still come from ``cv2.resize`` of the original to the shrunk size; the official
  ``Image.ANTIALIAS`` resize only determined that size, so no Pillow resize is needed). The official code
  then hands out boxes in *shrunk* pixels, which paste-back applies to the full-size image (face pasted at
  the wrong place and size). Here every box in ``crop_info`` and ``region`` is in original-image pixels.
* The inner box is additionally clamped to the crop box, so ``crop_info`` and ``region`` describe the pixels
  actually cut (the official slice is clamped by numpy while its size tuple is not).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

from ..errors import NoFaceError, OptionError
from ..options import PREPROCESS_MODES, Preprocess
from .landmarks import as_landmarks68

#: Official ``align_face(output_size=512)``: faces whose quad reaches 4x this are analysed shrunk.
_ANALYSIS_SIZE = 512

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class CropInfo:
    """Where a face frame lies in its picture, in original-image pixels (the official ``crop_info``)."""

    size_wh: tuple[int, int]  # (w, h) of the face box (the whole picture in ``resize`` mode)
    crop_box: Optional[Box] = None  # (clx, cly, crx, cry) the bordered crop box; None in ``resize`` mode
    quad_box: Optional[tuple[float, float, float, float]] = None  # (lx, ly, rx, ry) relative to crop_box

    def face_box_in_frame(self, size: int) -> tuple[float, float, float, float]:
        """The face box in the pixels of a ``size`` frame that shows the whole crop box (``ext*`` modes)."""
        clx, cly, crx, cry = self.crop_box
        lx, ly, rx, ry = self.quad_box
        sx, sy = size / (crx - clx), size / (cry - cly)
        return (lx * sx, ly * sy, rx * sx, ry * sy)


@dataclass(frozen=True)
class CropGeometry:
    """The official ``align_face`` result, in pixels of the analysis image of size ``rsize``."""

    rsize: tuple[int, int]  # analysis-image (W, H): the original size unless shrunk
    shrink: int  # 1, or the integer factor the analysis image was shrunk by
    crop_box: Box  # (clx, cly, crx, cry), the bordered box
    quad_box: tuple[float, float, float, float]  # (lx, ly, rx, ry), relative to crop_box when it is smaller


@dataclass(frozen=True)
class CropResult:
    frame: np.ndarray  # (size, size, 3) uint8 RGB: what the 3DMM regressor and the renderer see
    crop_info: CropInfo  # original-image pixels
    landmarks_in_frame: np.ndarray  # (68, 2) the input landmarks mapped into ``frame`` pixels
    region: Box  # (x0, y0, x1, y1) original-image pixels shown in ``frame``


def align_quad(lm: np.ndarray) -> tuple[np.ndarray, float]:
    """The oriented face square: corners (4, 2) float64 and its side ``qsize``, in the landmarks' pixels.

    Means and differences stay in the landmarks' dtype (FAN gives float32) and the corner arithmetic is
    float64, as in the official code on numpy < 2.
    """
    eye_left = lm[36:42].mean(axis=0)
    eye_right = lm[42:48].mean(axis=0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg

    x = eye_to_eye - np.flipud(eye_to_mouth) * np.array([-1, 1])
    length = np.hypot(*x)
    if not (np.isfinite(length) and length > 0):
        raise NoFaceError("The face landmarks are degenerate (eyes and mouth on one point), so no face crop can "
                          "be built. Pass real 68-point landmarks or let the detector find the face.")
    x = x / length
    # Scalars: numpy < 2 promoted float32 hypot results to float64 before scaling; do so on every numpy.
    x = x * max(float(np.hypot(*eye_to_eye)) * 2.0, float(np.hypot(*eye_to_mouth)) * 1.8)
    y = np.flipud(x) * np.array([-1, 1])
    c = eye_avg + eye_to_mouth * lm.dtype.type(0.1)
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


def crop_geometry(lm: np.ndarray, width: int, height: int) -> CropGeometry:
    """Official ``Preprocesser.align_face`` box arithmetic for an image of ``width`` x ``height``."""
    lm = as_landmarks68(lm, "landmarks")
    quad, qsize = align_quad(lm)
    rsize = (width, height)
    shrink = int(np.floor(qsize / _ANALYSIS_SIZE * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(width) / shrink)), int(np.rint(float(height) / shrink)))
        quad = quad / shrink
        qsize = qsize / shrink
    else:
        shrink = 1

    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(quad[:, 0].min())) - border, int(np.floor(quad[:, 1].min())) - border,
            int(np.ceil(quad[:, 0].max())) + border, int(np.ceil(quad[:, 1].max())) + border)
    crop = (max(crop[0], 0), max(crop[1], 0), min(crop[2], rsize[0]), min(crop[3], rsize[1]))
    if crop[2] <= crop[0] or crop[3] <= crop[1]:
        raise NoFaceError(f"The face landmarks lie outside the {width}x{height} image, so there is nothing to "
                          "crop. Pass landmarks in this image's pixel coordinates.")
    if crop[2] - crop[0] < rsize[0] or crop[3] - crop[1] < rsize[1]:
        quad = quad - np.array(crop[0:2])

    q = (quad + 0.5).flatten()
    lx = max(min(q[0], q[2]), 0)
    ly = max(min(q[1], q[7]), 0)
    rx = min(max(q[4], q[6]), rsize[0])
    ry = min(max(q[3], q[5]), rsize[0])  # official quirk: clipped with the width, kept for identical crops
    return CropGeometry(rsize, shrink, crop, (float(lx), float(ly), float(rx), float(ry)))


def crop_face(image: np.ndarray, landmarks: np.ndarray, mode: str = "crop", size: int = 256) -> CropResult:
    """Cut and resize the face region of ``image`` (uint8 H x W x 3 RGB) for preprocess ``mode``.

    ``landmarks`` are 68 (x, y) points in ``image`` pixels. Pixels follow the official path exactly:
    ``cv2.resize`` (INTER_LINEAR) to the analysis size, slice, ``cv2.resize`` to ``size`` x ``size``.
    """
    if mode not in PREPROCESS_MODES:
        raise OptionError(f"Unknown preprocess mode {mode!r}. Use one of: {', '.join(PREPROCESS_MODES)}.")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise OptionError(f"Crop size must be a positive integer (256 or 512), got {size!r}.")
    lm = as_landmarks68(landmarks, "landmarks")
    height, width = image.shape[:2]

    if mode == "resize":
        frame = cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)
        region = (0, 0, width, height)
        return CropResult(frame, CropInfo((width, height)), map_landmarks(lm, region, size), region)

    geometry = crop_geometry(lm, width, height)
    clx, cly, crx, cry = geometry.crop_box
    lx, ly, rx, ry = geometry.quad_box
    rx = min(rx, crx - clx)
    ry = min(ry, cry - cly)
    inner = (clx + int(lx), cly + int(ly), clx + int(rx), cly + int(ry))
    shown = geometry.crop_box if Preprocess(mode).shows_margin else inner

    analysed = image
    if geometry.shrink > 1:
        analysed = cv2.resize(image, geometry.rsize, interpolation=cv2.INTER_LINEAR)
    frame = cv2.resize(np.ascontiguousarray(analysed[shown[1]:shown[3], shown[0]:shown[2]]), (size, size),
                       interpolation=cv2.INTER_LINEAR)

    if geometry.shrink == 1:
        crop_info = CropInfo((inner[2] - inner[0], inner[3] - inner[1]), geometry.crop_box, (lx, ly, rx, ry))
        return CropResult(frame, crop_info, map_landmarks(lm, shown, size), shown)

    scale = (width / geometry.rsize[0], height / geometry.rsize[1])
    crop_box = _scale_box(geometry.crop_box, scale, width, height)
    inner_box = _scale_box(inner, scale, width, height)
    relative = tuple(float(v - crop_box[i % 2]) for i, v in enumerate(inner_box))
    crop_info = CropInfo((inner_box[2] - inner_box[0], inner_box[3] - inner_box[1]), crop_box, relative)
    # Landmarks go through the analysis image (cv2's pixel-centre convention) so they match the pixels.
    lm_analysed = (lm.astype(np.float64) + 0.5) / np.array(scale) - 0.5
    region = crop_box if Preprocess(mode).shows_margin else inner_box
    return CropResult(frame, crop_info, map_landmarks(lm_analysed, shown, size), region)


def _scale_box(box: Box, scale: tuple[float, float], width: int, height: int) -> Box:
    x0, y0, x1, y1 = box
    return (min(round(x0 * scale[0]), width), min(round(y0 * scale[1]), height),
            min(round(x1 * scale[0]), width), min(round(y1 * scale[1]), height))


def map_landmarks(lm: np.ndarray, region: Box, size: int) -> np.ndarray:
    """Where the landmarks land after ``cv2.resize`` of ``region`` to ``size`` (pixel centres aligned)."""
    x0, y0, x1, y1 = region
    scale = np.array([size / (x1 - x0), size / (y1 - y0)])
    return (lm.astype(np.float64) - np.array([x0, y0]) + 0.5) * scale - 0.5
