"""Source-image loading: any path, encoded bytes, PIL image or array -> uint8 H x W x 3 RGB.

Decisions (the official code simply calls ``cv2.imread`` when the extension is jpg/png/jpeg):

* The format is sniffed from the content (Pillow), never from the extension, so a JPEG named ``.png`` or an
  upper-case ``.PNG`` loads like any other image.
* EXIF orientation is applied, so the face is upright as in an image viewer.
* Transparency is composited over **white** (``cv2.imread`` drops alpha and shows whatever colour the
  transparent pixels store, often black). A fully opaque alpha channel gives the same pixels as dropping it.
* Animated or multi-page files give their first frame.
* 16-bit and float pictures are scaled to 8 bits; grayscale, palette and CMYK pictures are converted to RGB.
* Pictures whose long side exceeds ``max_side`` (default 4096) are downscaled with Lanczos and the result
  *is* the source image from then on (crop, paste-back and output all use it), so callers need no scale
  factor. JPEGs are decoded at reduced size directly, so a huge JPEG never exists in memory at full size.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ImageError

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray]

#: Long-side limit in pixels; larger pictures are downscaled (a face needs far fewer pixels than this).
DEFAULT_MAX_SIDE = 4096
#: Smallest usable side: below this no detector can find a face and the renderer has nothing to work with.
MIN_SIDE = 32

_VIDEO_SIGNATURES = ((4, b"ftyp"), (0, b"\x1a\x45\xdf\xa3"), (8, b"AVI "), (0, b"\x00\x00\x01\xba"))


def load_image(source: ImageSource, *, max_side: int | None = DEFAULT_MAX_SIDE) -> np.ndarray:
    """Load ``source`` as a contiguous uint8 (H, W, 3) RGB array.

    ``source`` is a file path, the encoded bytes of an image file, a PIL image, or an array (H, W), (H, W, 1),
    (H, W, 3) or (H, W, 4) in RGB(A) order of dtype uint8, uint16 (0..65535), another integer type with
    values 0..255, bool, or float (0..1; taken as 0..255 when any value exceeds 1). ``max_side=None`` keeps
    the full resolution. Raises ``ImageError`` naming the problem and the fix.
    """
    if isinstance(source, Image.Image):
        try:
            rgb = _pil_to_rgb(source, max_side)
        except (OSError, ValueError) as error:  # a lazily opened image whose file is damaged or closed
            raise ImageError(f"The PIL source image cannot be decoded ({error}). Re-open or re-save the "
                             "image and try again.") from error
    elif isinstance(source, np.ndarray):
        rgb = _array_to_rgb(source)
        if max_side is not None and max(rgb.shape[:2]) > max_side:
            rgb = _downscale(Image.fromarray(rgb), max_side)
    elif isinstance(source, (str, os.PathLike)):
        rgb = _decode(_read_file(Path(source)), str(source), max_side)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageError("The source image bytes are empty (0 bytes). Pass the content of an image file.")
        rgb = _decode(data, "the source image bytes", max_side)
    else:
        raise ImageError(
            f"Unsupported source image type {type(source).__name__}. Pass a file path, the bytes of an image "
            "file, a PIL.Image or a numpy array (H, W[, 3 or 4]) in RGB order.")
    _check_size(rgb)
    return np.ascontiguousarray(rgb)


def _read_file(path: Path) -> bytes:
    if not path.exists():
        raise ImageError(f"Source image not found: {path}. Check the path (relative paths start from "
                         f"{Path.cwd()}).")
    if path.is_dir():
        raise ImageError(f"Source image path is a folder, not a file: {path}. Pass the path of an image file.")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageError(f"Cannot read the source image {path}: {error.strerror or error}. Check the file's "
                         "permissions.") from error
    if not data:
        raise ImageError(f"Source image {path} is empty (0 bytes): the file was not fully written or the upload "
                         "failed. Save or upload the image again.")
    return data


def _decode(data: bytes, name: str, max_side: int | None) -> np.ndarray:
    try:
        image = Image.open(io.BytesIO(data))
        if max_side is not None and image.format == "JPEG":
            # Decode at the smallest power-of-two reduction still larger than the target size.
            scale = max_side / max(image.size)
            if scale < 1:
                image.draft(None, (int(image.size[0] * scale) + 1, int(image.size[1] * scale) + 1))
        image.load()
    except Image.DecompressionBombError as error:
        raise ImageError(f"{name} is too large to decode safely ({error}). Downscale it below "
                         f"{DEFAULT_MAX_SIDE} px on the long side first.") from error
    except UnidentifiedImageError as error:
        hint = (" It looks like a video: pass a still image (for example its first frame) as the source."
                if _looks_like_video(data) else " Pass a PNG, JPEG, WebP, BMP or TIFF picture.")
        raise ImageError(f"{name} is not an image file that can be read.{hint}") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageError(f"{name} is damaged or truncated and cannot be decoded ({error}). Re-save or re-export "
                         "the image and try again.") from error
    return _pil_to_rgb(image, max_side)


def _looks_like_video(data: bytes) -> bool:
    return any(data[offset:offset + len(magic)] == magic for offset, magic in _VIDEO_SIGNATURES)


def _pil_to_rgb(image: Image.Image, max_side: int | None) -> np.ndarray:
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        rgb = _array_to_rgb(np.asarray(image))
    else:
        rgb = _to_rgb_mode(image)
    if max_side is not None and max(rgb.shape[:2]) > max_side:
        rgb = _downscale(Image.fromarray(rgb), max_side)
    return rgb


def _to_rgb_mode(image: Image.Image) -> np.ndarray:
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    return np.asarray(image.convert("RGB"))


def _array_to_rgb(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        raise ImageError(f"The image array has shape {array.shape}, which looks channels-first. Pass (H, W, C), "
                         "e.g. array.transpose(1, 2, 0).")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ImageError(f"The image array has shape {array.shape}; expected (H, W), (H, W, 3) RGB or "
                         "(H, W, 4) RGBA.")
    levels = _to_uint8(array)
    if levels.ndim == 2:
        return np.repeat(levels[..., None], 3, axis=2)
    if levels.shape[-1] == 4:
        return _to_rgb_mode(Image.fromarray(levels, "RGBA"))
    return levels


def _to_uint8(array: np.ndarray) -> np.ndarray:
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:
        return np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)
    if array.dtype.kind in "iu":
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low >= 0 and high <= 255:
            return array.astype(np.uint8)
        if low >= 0 and high <= 65535:
            return np.rint(array.astype(np.float64) / 257.0).astype(np.uint8)
        raise ImageError(f"The {array.dtype} image array has values {low}..{high}; expected 0..255 (8-bit) or "
                         "0..65535 (16-bit). Convert it to uint8 first.")
    if array.dtype.kind == "f":
        values = array.astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ImageError("The float image array contains NaN or infinite values. Clean it (np.nan_to_num) or "
                             "pass uint8 pixels.")
        scale = 255.0 if values.size == 0 or values.max() <= 1.0 else 1.0
        return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    raise ImageError(f"Unsupported image array dtype {array.dtype}. Pass uint8, uint16 or float pixels.")


def _downscale(image: Image.Image, max_side: int) -> np.ndarray:
    scale = max_side / max(image.size)
    size = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
    return np.asarray(image.resize(size, Image.Resampling.LANCZOS))


def _check_size(rgb: np.ndarray) -> None:
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise ImageError(f"The source image is {width}x{height} px, too small to contain a usable face. Use a "
                         f"picture at least {MIN_SIDE} px on each side (256 px or more works best).")
