"""load_image: real media, every input kind, pixel formats, orientation, size limits and error messages."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from golden import MEDIA
from sadtalker_core.errors import ImageError
from sadtalker_core.media.image_io import MIN_SIDE, load_image

PORTRAITS = {"art_0.png": (896, 640), "art_7.png": (512, 512), "happy.png": (256, 256),
             "full_body_1.png": (1200, 800)}


def _png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def _checker(height=64, width=48) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", sorted(PORTRAITS))
def test_media_loads_as_uint8_rgb(name):
    rgb = load_image(MEDIA / name)
    assert rgb.dtype == np.uint8 and rgb.shape == PORTRAITS[name] + (3,)
    assert rgb.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("name", ["art_0.png", "art_7.png", "happy.png"])
def test_png_pixels_match_the_official_reader(name):
    # The official code reads PNG sources with cv2.imread and converts BGR -> RGB.
    official = cv2.imread(str(MEDIA / name))[..., ::-1]
    np.testing.assert_array_equal(load_image(MEDIA / name), official)


def test_jpeg_content_behind_a_png_name_is_sniffed():
    path = MEDIA / "full_body_1.png"
    assert path.read_bytes()[:3] == b"\xff\xd8\xff"  # the media file really is a JPEG
    np.testing.assert_array_equal(load_image(path), np.asarray(Image.open(path).convert("RGB")))


def test_path_string_bytes_and_pil_inputs_agree():
    path = MEDIA / "happy.png"
    reference = load_image(path)
    np.testing.assert_array_equal(load_image(str(path)), reference)
    np.testing.assert_array_equal(load_image(path.read_bytes()), reference)
    np.testing.assert_array_equal(load_image(bytearray(path.read_bytes())), reference)
    np.testing.assert_array_equal(load_image(Image.open(path)), reference)


def test_uint8_rgb_array_is_unchanged():
    pixels = _checker()
    out = load_image(pixels)
    np.testing.assert_array_equal(out, pixels)


def test_gray_arrays_become_three_equal_channels():
    gray = _checker()[..., 0]
    for array in (gray, gray[..., None]):
        out = load_image(array)
        assert out.shape == gray.shape + (3,)
        for channel in range(3):
            np.testing.assert_array_equal(out[..., channel], gray)


def test_uint16_and_float_arrays_are_scaled_to_8_bits():
    pixels = _checker()
    np.testing.assert_array_equal(load_image(pixels.astype(np.uint16) * 257), pixels)
    np.testing.assert_array_equal(load_image(pixels / 255.0), pixels)
    np.testing.assert_array_equal(load_image(pixels.astype(np.float32)), pixels)  # 0..255 floats
    np.testing.assert_array_equal(load_image(pixels.astype(np.int64)), pixels)
    mask = load_image(np.ones((40, 40), dtype=bool))
    assert mask.min() == 255


def test_rgba_is_composited_on_white():
    pixels = _checker()
    alpha = np.zeros(pixels.shape[:2], np.uint8)
    alpha[:, : pixels.shape[1] // 2] = 255
    alpha[0, -1] = 128
    out = load_image(np.dstack([pixels, alpha]))
    left = pixels.shape[1] // 2
    np.testing.assert_array_equal(out[:, :left], pixels[:, :left])  # opaque: unchanged
    assert (out[1:, left:] == 255).all()  # transparent: white
    expected = (pixels[0, -1].astype(int) * 128 + 255 * 127 + 127) // 255
    assert np.abs(out[0, -1].astype(int) - expected).max() <= 1  # half transparent: blended


def test_rgba_png_file_and_la_and_palette_transparency():
    pixels = _checker()
    rgba = np.dstack([pixels, np.full(pixels.shape[:2], 0, np.uint8)])
    rgba[:10, :, 3] = 255
    out = load_image(_png_bytes(Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(out[:10], pixels[:10])
    assert (out[10:] == 255).all()

    la = Image.fromarray(np.dstack([pixels[..., 0], rgba[..., 3]]), "LA")
    out = load_image(_png_bytes(la))
    np.testing.assert_array_equal(out[:10, :, 1], pixels[:10, :, 0])
    assert (out[10:] == 255).all()

    palette = Image.new("P", (40, 40), 0)
    palette.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    palette.paste(1, (0, 0, 20, 40))
    out = load_image(_png_bytes(palette, transparency=0))
    assert (out[:, :20] == [200, 100, 50]).all() and (out[:, 20:] == 255).all()


def test_cmyk_jpeg_and_16_bit_gray_png():
    pixels = _checker()
    cmyk = Image.fromarray(pixels).convert("CMYK")
    buffer = io.BytesIO()
    cmyk.save(buffer, format="JPEG", quality=95)
    out = load_image(buffer.getvalue())
    expected = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    np.testing.assert_array_equal(out, expected)

    deep = (pixels[..., 0].astype(np.uint16) * 257)
    ok, encoded = cv2.imencode(".png", deep)
    assert ok and Image.open(io.BytesIO(encoded.tobytes())).mode.startswith("I;16")
    np.testing.assert_array_equal(load_image(encoded.tobytes())[..., 0], pixels[..., 0])


def test_exif_orientation_is_applied():
    pixels = _checker(48, 80)  # landscape as stored
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", exif=exif.tobytes())
    out = load_image(buffer.getvalue())
    assert out.shape == (80, 48, 3)
    np.testing.assert_array_equal(out, np.rot90(pixels, k=-1))


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (40, 40), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    out = load_image(buffer.getvalue())
    assert tuple(out[20, 20]) == (255, 0, 0)


def test_huge_images_are_downscaled_keeping_the_aspect():
    wide = np.zeros((300, 5000, 3), np.uint8)
    wide[:, 2500:] = 200
    out = load_image(wide)
    assert out.shape == (246, 4096, 3)
    assert out[:, :2000].max() == 0 and out[:, 2100:].min() == 200
    assert load_image(wide, max_side=None).shape == wide.shape
    assert load_image(wide, max_side=1000).shape == (60, 1000, 3)


def test_huge_jpeg_is_decoded_at_reduced_size():
    buffer = io.BytesIO()
    Image.new("RGB", (6000, 1500), (90, 120, 150)).save(buffer, format="JPEG")
    out = load_image(buffer.getvalue())
    assert out.shape == (1024, 4096, 3)
    assert np.abs(out.astype(int) - [90, 120, 150]).max() <= 3


def test_too_small_image_is_refused():
    with pytest.raises(ImageError, match="too small"):
        load_image(np.zeros((1, 1, 3), np.uint8))
    with pytest.raises(ImageError, match=f"at least {MIN_SIDE}"):
        load_image(_png_bytes(Image.new("RGB", (1, 1))))


def test_missing_empty_folder_and_non_image_files(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        load_image(tmp_path / "nope.png")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    with pytest.raises(ImageError, match="not an image"):
        load_image(text)
    with pytest.raises(ImageError, match="empty"):
        load_image(b"")


def test_video_file_gets_a_video_hint():
    with pytest.raises(ImageError, match="video"):
        load_image(MEDIA / "WDA_KatieHill_000.mp4")


def test_truncated_file_is_reported_as_damaged(tmp_path):
    data = (MEDIA / "happy.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(cut)


@pytest.mark.parametrize("bad, message", [
    (42, "Unsupported source image type int"),
    (None, "Unsupported source image type NoneType"),
    (np.zeros((3, 64, 64), np.uint8), "channels-first"),
    (np.zeros((64, 64, 2), np.uint8), "expected"),
    (np.zeros((64, 64, 3), np.complex64), "dtype"),
    (np.full((64, 64, 3), np.nan), "NaN"),
    (np.full((64, 64, 3), 70000, np.int32), "0..255"),
])
def test_unusable_api_inputs(bad, message):
    with pytest.raises(ImageError, match=message):
        load_image(bad)
