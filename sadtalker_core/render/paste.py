"""Paste-back of rendered face crops into the original image (``full`` / ``extfull`` modes).

The official code (``paste_pic``) resizes every frame to the target box and calls ``cv2.seamlessClone``
(NORMAL_CLONE, all-255 mask) per frame on the CPU. That call solves a Poisson equation on the box: inside,
the result has the Laplacian of the guidance field; on the ring just inside the box it equals the
background. Two details decide its look and are reproduced here:

* OpenCV zeroes the mask's outer pixel, works on the box shrunk by one pixel (the "ROI", whose outer ring
  is the Dirichlet boundary), and erodes the mask three times *reading the zero border*. So in a 3-pixel
  band along the ROI edge the guidance is the background's own gradient, and the patch's gradient
  elsewhere. Only the ROI interior changes (box shrunk by 2 pixels).
* The solution is truncated (not rounded) to uint8.

``blend="seamless"`` solves the same discrete equation for a whole batch at once with a spectral (DST-I)
solver in torch, on whatever device the frames are on. Everything that depends only on the background
(its band gradients, the boundary ring, the eigenvalues) is computed once per video; per frame only the
patch's masked Laplacian is transformed. ``blend="poisson"`` calls OpenCV exactly like the official code;
``blend="none"`` pastes the resized frame as it is.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError, OptionError
from ..face.crop import CropInfo
from ..options import BLEND_MODES

#: width of the band along the ROI edge where OpenCV's eroded mask keeps the background's gradients
_ERODED_BAND = 3


def paste_box(crop_info: CropInfo, mode: str) -> tuple[int, int, int, int]:
    """Target box ``(x1, y1, x2, y2)`` in original-image pixels, as ``paste_pic`` computes it.

    ``full``: the quad box inside the crop, ``(clx + int(lx), cly + int(ly), clx + int(rx), cly + int(ry))``;
    ``extfull``: the crop box itself.
    """
    crop, quad = crop_info.crop_box, crop_info.quad_box
    if crop is None:
        raise InputError(f"paste-back needs a crop box; preprocess mode '{mode}' produced none "
                         "(use preprocess='full' or 'extfull').")
    clx, cly, crx, cry = (int(v) for v in crop)
    if mode == "extfull":
        return clx, cly, crx, cry
    if mode == "full":
        lx, ly, rx, ry = (int(v) for v in quad)
        return clx + lx, cly + ly, clx + rx, cly + ry
    raise OptionError(f"paste-back mode must be 'full' or 'extfull', got {mode!r}.")


def aspect_size(crop_info: CropInfo, size: int) -> tuple[int, int]:
    """``(width, height)`` of the aspect-restored frames: ``(S, int(S * h / w))`` with ``(w, h)`` the face box."""
    w, h = crop_info.size_wh
    return size, int(size * h / w)


def restore_aspect(frames: np.ndarray, crop_info: CropInfo, size: int) -> np.ndarray:
    """Official aspect restore of uint8 HWC frames (``(H, W, 3)`` or ``(N, H, W, 3)``) with cv2 INTER_LINEAR."""
    dsize = aspect_size(crop_info, size)
    if frames.ndim == 3:
        return cv2.resize(frames, dsize, interpolation=cv2.INTER_LINEAR)
    return np.stack([cv2.resize(f, dsize, interpolation=cv2.INTER_LINEAR) for f in frames])


def restore_aspect_torch(frames: torch.Tensor, crop_info: Any, size: int) -> torch.Tensor:
    """Batched aspect restore of float NCHW frames in [0, 1] on their device, equal to :func:`restore_aspect`.

    The official frames are uint8 (``rint(255 x)``) when OpenCV resizes them, so the frames are rounded the
    same way first; the result is the resized 8-bit levels divided by 255 (``rint(255 x)`` of it gives them back
    exactly). Frames already of the target size are returned unchanged.
    """
    width, height = aspect_size(crop_info, size)
    if frames.shape[-2:] == (height, width):
        return frames
    levels = torch.round(frames.float() * 255.0).clamp_(0, 255).to(torch.int32)
    return _resize_linear_uint8(levels, width, height).float() / 255.0


# cv2.resize(INTER_LINEAR) on 8-bit pictures works in fixed point: each tap weight is a float32 weight times
# 2**11, rounded; the horizontal pass keeps the exact integer sums (levels * 2**11) and the vertical pass is the
# vectorised one, which drops 4 bits of each row before a high-half 16x16-bit product and rounds the last 2 bits.
# Reproducing those integer steps makes the result bit-identical (checked against cv2 on random sizes and
# pictures, both directions, 1 to 4 channels), where plain float bilinear differs by one level on 10-25 % of
# the values.
_COEF_BITS = 11


@functools.lru_cache(maxsize=64)
def _linear_taps(source: int, target: int, horizontal: bool) -> tuple[np.ndarray, ...]:
    """For each target index along one axis: the two source indices and their fixed-point weights (int32).

    Past either edge both taps read the edge sample; horizontally OpenCV also moves the whole weight onto it,
    vertically it keeps the two weights, and as the vertical pass floors each product separately that can
    change a level, so the two axes differ here too.
    """
    scale = 1.0 / (target / source)  # OpenCV stores the inverse of dsize/ssize, in double
    position = ((np.arange(target) + 0.5) * scale - 0.5).astype(np.float32)  # rounded to float32 like OpenCV
    first = np.floor(position).astype(np.int64)
    fraction = (position - first.astype(np.float32)).astype(np.float32)
    if horizontal:
        fraction[(first < 0) | (first >= source - 1)] = 0.0
    second = np.clip(first + 1, 0, source - 1)
    first = np.clip(first, 0, source - 1)
    one = np.float32(1 << _COEF_BITS)
    weight_first = np.rint((np.float32(1) - fraction) * one).astype(np.int32)
    weight_second = np.rint(fraction * one).astype(np.int32)
    return first, second, weight_first, weight_second


def _resize_linear_uint8(levels: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``cv2.resize(..., (width, height), INTER_LINEAR)`` of 8-bit levels held in an int32 NCHW tensor."""
    device = levels.device
    # horizontal pass: exact sums in units of 2**-11 levels, then the 4 bits the vertical pass drops
    if width == levels.shape[-1]:
        rows = levels << (_COEF_BITS - 4)  # the aspect restore keeps the width: weights (2**11, 0)
    else:
        x0, x1, a0, a1 = (torch.from_numpy(a).to(device) for a in _linear_taps(levels.shape[-1], width, True))
        rows = (levels.index_select(-1, x0) * a0 + levels.index_select(-1, x1) * a1) >> 4
    # vertical pass: ((S0 * b0) >> 16) + ((S1 * b1) >> 16), then (+2) >> 2 (in place: frames can be large)
    taps_y = _linear_taps(levels.shape[-2], height, False)
    y0, y1, b0, b1 = (torch.from_numpy(a).to(device)[:, None] for a in taps_y)
    out = rows.index_select(-2, y0[:, 0]).mul_(b0).bitwise_right_shift_(16)
    out += rows.index_select(-2, y1[:, 0]).mul_(b1).bitwise_right_shift_(16)
    return out.add_(2).bitwise_right_shift_(2).clamp_(0, 255)


def _frames_to_float255(frames: Any, device: torch.device) -> torch.Tensor:
    """Any supported frame batch -> float32 NCHW in 0..255 on ``device``.

    Float tensors are NCHW in [0, 1]; uint8 arrays/tensors are NHWC (or a single HWC picture), RGB.
    """
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if frames.dtype == torch.uint8:
        if frames.ndim == 3:
            frames = frames[None]
        return frames.to(device).permute(0, 3, 1, 2).float()
    if frames.ndim == 3:
        frames = frames[None]
    return frames.to(device=device, dtype=torch.float32) * 255.0


def _dst1(x: torch.Tensor, dim: int) -> torch.Tensor:
    """Unnormalised DST-I along ``dim``: ``y_k = sum_j x_j sin(pi (j+1) (k+1) / (n+1))``.

    A zero-padded real FFT of length ``2 (n+1)`` gives ``sum_j x_j exp(-i pi j k / (n+1))``; the phase
    factor of the index shift turns its imaginary part into the sine sum (no odd extension is built).
    """
    n = x.shape[dim]
    spectrum = torch.fft.rfft(x, n=2 * (n + 1), dim=dim).narrow(dim, 1, n)
    angle = torch.arange(1, n + 1, device=x.device, dtype=torch.float64) * (math.pi / (n + 1))
    shape = [1] * x.ndim
    shape[dim] = n
    sin, cos = (v.to(x.dtype).view(shape) for v in (torch.sin(angle), torch.cos(angle)))
    return spectrum.real * sin - spectrum.imag * cos


def _sine_matrix(n: int, device: torch.device) -> torch.Tensor:
    """The symmetric DST-I matrix ``S[k, j] = sin(pi (j+1) (k+1) / (n+1))``, built in float64."""
    index = torch.arange(1, n + 1, device=device, dtype=torch.float64)
    return torch.sin(index[:, None] * index[None, :] * (math.pi / (n + 1)))


def _masked_laplacian(image: torch.Tensor, keep_x: torch.Tensor, keep_y: torch.Tensor) -> torch.Tensor:
    """Divergence of the forward-difference gradient of ``image`` multiplied by the masks, on the interior.

    ``image`` (..., H, W); ``keep_x`` (H, W-1) and ``keep_y`` (H-1, W) weight each gradient sample.
    Result (..., H-2, W-2) as OpenCV builds it (forward differences, then backward differences).
    """
    gx = (image[..., :, 1:] - image[..., :, :-1]) * keep_x
    gy = (image[..., 1:, :] - image[..., :-1, :]) * keep_y
    return (gx[..., 1:-1, 1:] - gx[..., 1:-1, :-1]) + (gy[..., 1:, 1:-1] - gy[..., :-1, 1:-1])


class Paster:
    """Pastes batches of rendered frames into one background picture.

    ``background``: the original image, uint8 RGB ``(H, W, 3)``. ``box``: :func:`paste_box`. Frames given to
    :meth:`paste` are resized to the box (bilinear, rounded to 8 bit like the official uint8 frames), so
    either the rendered ``S x S`` frames or the aspect-restored ones can be passed. The result is a uint8
    tensor ``(N, H, W, 3)`` on ``device``; pixels outside the box are the background's, bit for bit.
    """

    def __init__(self, background: np.ndarray, box: Sequence[int], blend: str = "seamless",
                 device: torch.device | str | None = None):
        if blend not in BLEND_MODES:
            raise OptionError(f"blend must be one of {', '.join(BLEND_MODES)}; got {blend!r}.")
        if background.ndim != 3 or background.shape[2] != 3 or background.dtype != np.uint8:
            raise InputError(f"paste-back background must be a uint8 RGB picture (H, W, 3); got "
                             f"{background.dtype} {background.shape}.")
        self.blend = blend
        self.device = torch.device(device or "cpu")
        self.background = np.array(background, order="C")  # own writable copy: torch refuses read-only memory
        height, width = background.shape[:2]
        self.box = tuple(int(v) for v in box)
        x1, y1, x2, y2 = self.box
        # the visible part of the box; a box reaching past the image (possible with the official ry quirk)
        # is cut instead of failing like cv2.seamlessClone does
        self.visible = (max(x1, 0), max(y1, 0), min(x2, width), min(y2, height))
        vx1, vy1, vx2, vy2 = self.visible
        if min(vx2 - vx1, vy2 - vy1) < 4 * _ERODED_BAND:
            raise InputError(f"paste-back box {self.box} leaves a {vx2 - vx1}x{vy2 - vy1} region inside the "
                             f"{width}x{height} image; it is too small to blend. Check the crop.")
        self._background_t = torch.from_numpy(self.background).to(self.device)
        if blend == "seamless":
            self._prepare_seamless()

    def _prepare_seamless(self) -> None:
        vx1, vy1, vx2, vy2 = self.visible
        band, strip = _ERODED_BAND, _ERODED_BAND + 2
        # ROI: the box shrunk by one pixel; its outer ring is the Dirichlet boundary
        roi = self._background_t[vy1 + 1:vy2 - 1, vx1 + 1:vx2 - 1].permute(2, 0, 1).float()
        rows, cols = roi.shape[-2:]
        n, m = rows - 2, cols - 2
        # gradient samples where OpenCV's eroded mask is 0 (the guidance is the background's there)
        in_band = torch.ones(rows, cols, device=self.device)
        in_band[band:rows - band, band:cols - band] = 0.0
        not_ring = torch.zeros(rows, cols, device=self.device)
        not_ring[1:-1, 1:-1] = 1.0
        bx, by = in_band[:, :-1], in_band[:-1, :]
        # the solution is patch + correction; the correction's source only lives within `band` pixels of
        # the ROI edge, so it is computed on four strips of `strip` pixels
        self._strips = (
            (slice(0, strip), slice(None), bx[:strip], by[:strip - 1]),
            (slice(rows - strip, rows), slice(None), bx[rows - strip:], by[rows - strip:]),
            (slice(None), slice(0, strip), bx[:, :strip - 1], by[:, :strip]),
            (slice(None), slice(cols - strip, cols), bx[:, cols - strip:], by[:, cols - strip:]),
        )
        self._strip_backgrounds = [roi[..., r, c] for r, c, _, _ in self._strips]
        self._strip_not_ring = [not_ring[r, c] for r, c, _, _ in self._strips]
        # the small products in float64 on CUDA, where hosts may turn on TF32 matmuls (A1111 does);
        # MPS has no float64, and CPU matmuls are full float32
        dtype = torch.float64 if self.device.type == "cuda" else torch.float32
        sine_rows, sine_cols = (_sine_matrix(k, self.device).to(dtype) for k in (n, m))
        self._sine_rows_edge = sine_rows[:, list(range(band)) + list(range(n - band, n))]
        self._sine_rows_middle = sine_rows[:, band:n - band]
        self._sine_cols = sine_cols
        self._sine_cols_edge = sine_cols[list(range(band)) + list(range(m - band, m))]
        ky = torch.arange(1, n + 1, device=self.device, dtype=torch.float64)
        kx = torch.arange(1, m + 1, device=self.device, dtype=torch.float64)
        eigen = (2 * torch.cos(math.pi * ky / (n + 1)))[:, None] + (2 * torch.cos(math.pi * kx / (m + 1)))[None] - 4
        # DST-I applied twice is (len + 1) / 2 times the identity: fold both inverses into the divisor
        self._divisor = (eigen * ((n + 1) * (m + 1) / 4.0)).to(dtype)

    def _correction(self, roi_patch: torch.Tensor) -> torch.Tensor:
        """Solution minus patch on the ROI interior: zero-boundary Poisson solve whose source is the
        masked Laplacian of (background - patch), with the ring's difference entering as boundary term."""
        band = _ERODED_BAND
        sources = []
        for (r, c, bx, by), background, not_ring in zip(self._strips, self._strip_backgrounds, self._strip_not_ring):
            difference = (background - roi_patch[..., r, c]) * not_ring
            sources.append(_masked_laplacian(difference, bx, by).to(self._divisor.dtype))
        top, bottom, left, right = sources
        n = left.shape[-2]
        edge_rows = torch.cat([top, bottom], dim=-2)
        edge_cols = torch.cat([left[..., band:n - band, :], right[..., band:n - band, :]], dim=-1)
        coefficients = self._sine_rows_edge @ (edge_rows @ self._sine_cols)
        coefficients += (self._sine_rows_middle @ edge_cols) @ self._sine_cols_edge
        coefficients = (coefficients / self._divisor).float()
        return _dst1(_dst1(coefficients, -1), -2)

    def _patches(self, frames: Any) -> torch.Tensor:
        """Frames resized to the box and rounded to 8-bit levels, cut to the visible part: float NCHW."""
        x1, y1, x2, y2 = self.box
        vx1, vy1, vx2, vy2 = self.visible
        frames = _frames_to_float255(frames, self.device)
        patch = F.interpolate(frames, size=(y2 - y1, x2 - x1), mode="bilinear", align_corners=False)
        patch = torch.floor(patch + 0.5).clamp_(0, 255)
        return patch[..., vy1 - y1:vy2 - y1, vx1 - x1:vx2 - x1]

    @torch.no_grad()
    def paste(self, frames: Any) -> torch.Tensor:
        """Blend a batch of frames into the background; returns uint8 ``(N, H, W, 3)`` on the paster's device."""
        if self.blend == "poisson":
            return self._paste_poisson(frames)
        patch = self._patches(frames)
        vx1, vy1, vx2, vy2 = self.visible
        out = self._background_t.expand(patch.shape[0], -1, -1, -1).clone()
        if self.blend == "none":
            out[:, vy1:vy2, vx1:vx2] = patch.to(torch.uint8).permute(0, 2, 3, 1)
            return out
        solution = patch[..., 2:-2, 2:-2] + self._correction(patch[..., 1:-1, 1:-1])
        # OpenCV truncates towards zero after clamping
        inner = solution.clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        out[:, vy1 + 2:vy2 - 2, vx1 + 2:vx2 - 2] = inner
        return out

    def _paste_poisson(self, frames: Any) -> torch.Tensor:
        """The official per-frame ``cv2.seamlessClone`` on the CPU (BGR, as ``paste_pic`` runs it)."""
        x1, y1, x2, y2 = self.box
        vx1, vy1, vx2, vy2 = self.visible
        if isinstance(frames, torch.Tensor) and frames.dtype != torch.uint8:
            frames = torch.floor(frames.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
            frames = frames.permute(0, 2, 3, 1) if frames.ndim == 4 else frames.permute(1, 2, 0)
        if isinstance(frames, torch.Tensor):
            frames = frames.cpu().numpy()
        if frames.ndim == 3:
            frames = frames[None]
        background_bgr = np.ascontiguousarray(self.background[..., ::-1])
        center = ((vx1 + vx2) // 2, (vy1 + vy2) // 2)
        pasted = []
        for frame in frames:
            patch = cv2.resize(frame, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
            patch = np.ascontiguousarray(patch[vy1 - y1:vy2 - y1, vx1 - x1:vx2 - x1, ::-1])
            mask = np.full(patch.shape, 255, np.uint8)
            clone = cv2.seamlessClone(patch, background_bgr, mask, center, cv2.NORMAL_CLONE)
            pasted.append(clone[..., ::-1])
        return torch.from_numpy(np.stack(pasted)).to(self.device)
