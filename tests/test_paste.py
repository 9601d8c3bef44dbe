"""Fast checks of the paste-back on synthetic pictures (no golden kit needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sadtalker_core.render import animate
from sadtalker_core.errors import InputError, OptionError
from sadtalker_core.face.crop import CropInfo
from sadtalker_core.render.paste import Paster, paste_box, restore_aspect, restore_aspect_torch

CROP_INFO = CropInfo((100, 120), (20, 30, 150, 170), (10.7, 5.2, 110.9, 125.6))


def _background(height=200, width=220, seed=0) -> np.ndarray:
    """A smooth colour gradient plus texture: a realistic, non-constant background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([40 + 0.8 * xx, 60 + 0.6 * yy, 200 - 0.3 * (xx + yy)], -1)
    return np.clip(base + rng.normal(0, 2, base.shape), 0, 255).astype(np.uint8)


def _frames(n=3, size=64, seed=1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=gen) * 0.5 + 0.25


def test_paste_box_full_and_extfull():
    assert paste_box(CROP_INFO, "full") == (30, 35, 130, 155)
    assert paste_box(CROP_INFO, "extfull") == (20, 30, 150, 170)
    with pytest.raises(OptionError):
        paste_box(CROP_INFO, "crop")
    with pytest.raises(InputError):
        paste_box(CropInfo((256, 256)), "full")


#: (render size S, crop_info height for width S): 34 aspect restores around 256 and 512, taller and shorter
ASPECT_SIZES = [(s, s + d) for s in (256, 512) for d in (-s // 2, -97, -40, -13, -7, -3, -2, -1, 1, 2, 3, 9, 31,
                                                         64, 111, s // 2, s)]


@pytest.mark.parametrize("size, height", ASPECT_SIZES)
def test_restore_aspect_torch_equals_cv2(size, height):
    """The batched torch path reproduces cv2's fixed-point INTER_LINEAR: bit-identical levels."""
    rng = np.random.default_rng(size * 10_000 + height)
    frames = torch.from_numpy(rng.random((2, 3, size, size), dtype=np.float32))
    frames[1, :, : size // 4] = torch.round(frames[1, :, : size // 4])  # hard 0 / 1 edges as well as noise
    crop_info = CropInfo((size, height))
    official = restore_aspect(animate.to_uint8(frames).numpy(), crop_info, size)
    assert official.shape == (2, height, size, 3)
    ours = animate.to_uint8(restore_aspect_torch(frames, crop_info, size)).numpy()
    assert ours.shape == official.shape
    differ = int((ours != official).sum())
    assert differ == 0, f"{differ} of {ours.size} values differ, by up to {np.abs(ours - official.astype(int)).max()}"


def test_restore_aspect_torch_equals_cv2_when_the_width_changes_too():
    """Frames of another width than S (an upscaler's output) go through the horizontal fixed-point pass."""
    rng = np.random.default_rng(1)
    for width in (97, 300, 640):
        frames = torch.from_numpy(rng.random((1, 3, 256, width), dtype=np.float32))
        official = restore_aspect(animate.to_uint8(frames).numpy(), CROP_INFO, 256)
        ours = animate.to_uint8(restore_aspect_torch(frames, CROP_INFO, 256)).numpy()
        assert np.array_equal(ours, official), width


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_restore_aspect_torch_on_cuda_equals_cv2():
    frames = torch.rand(4, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    crop_info = CropInfo((512, 600))
    official = restore_aspect(animate.to_uint8(frames).numpy(), crop_info, 512)
    ours = restore_aspect_torch(frames.cuda(), crop_info, 512)
    assert ours.is_cuda and np.array_equal(animate.to_uint8(ours).cpu().numpy(), official)


def test_restore_aspect_torch_keeps_frames_of_the_target_size():
    frames = torch.rand(1, 3, 64, 64)
    assert restore_aspect_torch(frames, CropInfo((100, 100)), 64) is frames


@pytest.mark.parametrize("mode", ["full", "extfull"])
@pytest.mark.parametrize("blend", ["seamless", "poisson", "none"])
def test_outside_box_unchanged(mode, blend):
    background = _background()
    box = x1, y1, x2, y2 = paste_box(CROP_INFO, mode)
    out = Paster(background, box, blend).paste(_frames()).numpy()
    assert out.shape == (3,) + background.shape and out.dtype == np.uint8
    outside = np.ones(background.shape[:2], bool)
    outside[y1:y2, x1:x2] = False
    assert np.array_equal(out[:, outside], np.broadcast_to(background[outside], out[:, outside].shape))
    assert not np.array_equal(out[:, y1:y2, x1:x2], np.broadcast_to(background[y1:y2, x1:x2], (3, y2 - y1, x2 - x1, 3)))


def _seam_step(picture: np.ndarray, box) -> float:
    """Mean absolute step from the last row/column outside the box to the third one inside, on all edges."""
    x1, y1, x2, y2 = box
    p = picture.astype(np.float64)
    jumps = [p[y1 + 2, x1 + 4:x2 - 4] - p[y1 - 1, x1 + 4:x2 - 4], p[y2 - 3, x1 + 4:x2 - 4] - p[y2, x1 + 4:x2 - 4],
             p[y1 + 4:y2 - 4, x1 + 2] - p[y1 + 4:y2 - 4, x1 - 1], p[y1 + 4:y2 - 4, x2 - 3] - p[y1 + 4:y2 - 4, x2]]
    return float(np.mean([np.abs(j).mean() for j in jumps]))


def test_seamless_hides_the_seam():
    background = _background()
    box = paste_box(CROP_INFO, "full")
    frames = _frames(n=1) * 0.3  # a dark patch on a bright background: a hard paste leaves a strong seam
    hard = Paster(background, box, "none").paste(frames)[0].numpy()
    soft = Paster(background, box, "seamless").paste(frames)[0].numpy()
    assert _seam_step(soft, box) < 0.25 * _seam_step(hard, box)


def test_seamless_close_to_opencv_poisson():
    background = _background()
    box = x1, y1, x2, y2 = paste_box(CROP_INFO, "extfull")
    frames = _frames(n=2)
    ours = Paster(background, box, "seamless").paste(frames).numpy().astype(int)
    opencv = Paster(background, box, "poisson").paste(frames).numpy().astype(int)
    difference = np.abs(ours - opencv)[:, y1:y2, x1:x2]
    # OpenCV's fixed-point resize differs from the float one by <= 1 level; after truncation <= 2
    assert difference.max() <= 2 and difference.mean() < 0.3


def test_batched_equals_per_frame_and_input_kinds():
    background = _background()
    paster = Paster(background, paste_box(CROP_INFO, "full"), "seamless")
    frames = _frames(n=4)
    batched = paster.paste(frames)
    single = torch.cat([paster.paste(frames[i:i + 1]) for i in range(4)])
    # float rounding may differ between batch shapes (FFT/matmul blocking): rare 1-level truncation flips
    difference = (batched.int() - single.int()).abs()
    assert difference.max() <= 1 and difference.float().mean() < 1e-3
    as_uint8 = torch.floor(frames * 255 + 0.5).to(torch.uint8)
    from_uint8 = paster.paste(as_uint8.permute(0, 2, 3, 1).numpy())
    from_float = paster.paste(as_uint8.float() / 255)
    assert (from_uint8.int() - from_float.int()).abs().max() <= 1
    assert torch.equal(paster.paste(as_uint8[0].permute(1, 2, 0).numpy()), from_uint8[:1])


def test_box_reaching_past_the_image_is_cut():
    background = _background(100, 120)  # the box's right and bottom parts lie outside
    out = Paster(background, (80, 60, 140, 130), "seamless").paste(_frames(n=1)).numpy()[0]
    assert np.array_equal(out[:60], background[:60]) and np.array_equal(out[:, :80], background[:, :80])


def test_rejects_bad_arguments():
    with pytest.raises(OptionError):
        Paster(_background(), (10, 10, 90, 90), "laplacian")
    with pytest.raises(InputError):
        Paster(_background(), (10, 10, 14, 90))
    with pytest.raises(InputError):
        Paster(_background().astype(np.float32), (10, 10, 90, 90))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu():
    background = _background()
    box = paste_box(CROP_INFO, "full")
    frames = _frames(n=4)
    cpu = Paster(background, box, "seamless").paste(frames)
    gpu = Paster(background, box, "seamless", device="cuda").paste(frames.cuda()).cpu()
    assert (cpu.int() - gpu.int()).abs().max() <= 1
