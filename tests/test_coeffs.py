"""Unit tests of the coefficient stage (``sadtalker_core.motion.coeffs``): blinks, chunking, smoothing, options."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from sadtalker_core.motion import coeffs
from sadtalker_core.errors import InputError, OptionError
from sadtalker_core.nets.expnet import ExpNet
from sadtalker_core.nets.posevae import PoseVAE


class RecordingRandom(random.Random):
    """Records the ranges handed to ``choice``."""

    def __init__(self, seed):
        super().__init__(seed)
        self.ranges = []

    def choice(self, seq):
        self.ranges.append(seq)
        return super().choice(seq)


class SpyExpNet(nn.Module):
    """Records ExpNet inputs and answers with the reference expression."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, mels, ref, ratio):
        self.calls.append((mels.clone(), ref.clone(), ratio.clone()))
        return ref.clone()


class SpyPoseVAE(nn.Module):
    """Records PoseVAE inputs; the motion is a ramp so that smoothing and scaling are visible."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def predict_motion(self, mels, ref_pose, pose_class, latents):
        self.calls.append((ref_pose.clone(), pose_class.clone(), latents.clone()))
        ramp = torch.linspace(0, 1, mels.shape[1]) ** 2
        return ramp.reshape(1, -1, 1).expand(1, -1, 6).clone()


def _source(seed=0):
    return np.random.default_rng(seed).standard_normal((1, 73)).astype(np.float32)


def _windows(num_frames, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).uniform(-4, 4, (1, num_frames, 1, 80, 16)).astype(np.float32))


@pytest.fixture(scope="module")
def real_nets():
    torch.manual_seed(0)
    return ExpNet().eval(), PoseVAE().eval()


# -- blinks ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_frames", [0, 1, 20])
def test_blink_short_clips_are_zero_without_drawing(num_frames):
    rng = RecordingRandom(0)
    ratio = coeffs.blink_ratio(num_frames, rng)
    assert ratio.shape == (num_frames, 1) and ratio.dtype == np.float32
    assert not ratio.any() and rng.ranges == []


def test_blink_same_seed_same_curve_and_seeds_differ():
    a = coeffs.blink_ratio(500, random.Random(3))
    assert np.array_equal(a, coeffs.blink_ratio(500, random.Random(3)))
    assert not np.array_equal(a, coeffs.blink_ratio(500, random.Random(4)))


def test_blink_21_frames_does_not_crash():
    ratio = coeffs.blink_ratio(21, random.Random(0))
    assert np.array_equal(np.nonzero(ratio[:, 0])[0], np.arange(10, 15))


def _blinks(ratio):
    """Start frames of the blinks (runs of non-zero ratio)."""
    nonzero = ratio[:, 0] > 0
    return [i for i in range(len(nonzero)) if nonzero[i] and (i == 0 or not nonzero[i - 1])]


@pytest.mark.parametrize("num_frames,seed", [(22, 0), (60, 1), (200, 2), (1000, 3)])
def test_blink_profile_spacing_and_draw_count(num_frames, seed):
    rng = RecordingRandom(seed)
    ratio = coeffs.blink_ratio(num_frames, rng)
    starts = _blinks(ratio)
    low, high = min(10, num_frames), min(num_frames // 2, 70)
    assert all(r == range(low, high) for r in rng.ranges)
    assert len(rng.ranges) == len(starts) + 1  # the last draw is the one that does not fit
    previous_end = 0
    for start in starts:
        np.testing.assert_array_equal(ratio[start:start + 5, 0], coeffs.BLINK_PROFILE)
        assert low <= start - previous_end < high
        previous_end = start + 5
    assert previous_end <= num_frames - 1
    assert np.count_nonzero(ratio) == 5 * len(starts)


# -- networks and chunking -------------------------------------------------------------------------------------

def test_expression_chunking_does_not_change_results(real_nets):
    expnet, _ = real_nets
    windows = _windows(23)
    ref = torch.randn(1, 23, 64, generator=torch.Generator().manual_seed(1))
    ratio = torch.from_numpy(coeffs.blink_ratio(23, random.Random(0)))[None]
    with torch.inference_mode():
        official = coeffs.expression_coeffs(expnet, windows, ref, ratio, chunk=10)
        batched = coeffs.expression_coeffs(expnet, windows, ref, ratio)
    assert official.shape == (1, 23, 64)
    torch.testing.assert_close(batched, official, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_frames,count", [(1, 0), (2, 1), (33, 1), (34, 2), (60, 2), (65, 2), (66, 3)])
def test_pose_latents_count_and_order(num_frames, count):
    latents = coeffs.pose_latents(num_frames, torch.Generator().manual_seed(5))
    assert latents.shape == (count, 1, 64)
    g = torch.Generator().manual_seed(5)
    for z in latents:
        assert torch.equal(z, torch.randn(1, 64, generator=g))


def test_pose_coeffs_is_reference_plus_motion(real_nets):
    _, posevae = real_nets
    windows = _windows(40)
    ref_pose = torch.randn(1, 6, generator=torch.Generator().manual_seed(2))
    latents = coeffs.pose_latents(40, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        pose = coeffs.pose_coeffs(posevae, windows, ref_pose, 3, latents)
        motion = posevae.predict_motion(windows, ref_pose, torch.tensor([3]), latents)
    assert pose.shape == (1, 40, 6)
    torch.testing.assert_close(pose, ref_pose[:, None] + motion)
    assert torch.equal(pose[0, 0], ref_pose[0])  # frame 0 has zero motion


# -- smoothing, references, scaling ----------------------------------------------------------------------------

@pytest.mark.parametrize("num_frames", [1, 2])
def test_smooth_pose_skips_clips_too_short_for_the_filter(num_frames):
    pose = np.random.default_rng(0).standard_normal((num_frames, 6)).astype(np.float32)
    np.testing.assert_array_equal(coeffs.smooth_pose(pose), pose)


@pytest.mark.parametrize("num_frames", [3, 4, 12, 13, 50])
def test_smooth_pose_keeps_quadratics_and_removes_noise(num_frames):
    t = np.arange(num_frames, dtype=np.float64)[:, None]
    quadratic = (0.01 * t ** 2 - 0.2 * t + 0.5) * np.ones((1, 6))
    smoothed = coeffs.smooth_pose(quadratic.astype(np.float32))
    assert smoothed.dtype == np.float32 and smoothed.shape == (num_frames, 6)
    np.testing.assert_allclose(smoothed, quadratic, atol=1e-5)
    if num_frames >= 13:
        noise = np.random.default_rng(1).standard_normal((num_frames, 6)).astype(np.float32)
        assert coeffs.smooth_pose(noise).std() < 0.8 * noise.std()


def test_apply_ref_pose_adds_tiled_relative_motion_without_mutating():
    generated = np.random.default_rng(0).standard_normal((7, 70)).astype(np.float32)
    original = generated.copy()
    reference = np.zeros((3, 73), dtype=np.float32)
    reference[:, 64:70] = np.array([[1.0], [2.0], [4.0]])
    out = coeffs.apply_ref_pose(generated, reference)
    np.testing.assert_array_equal(generated, original)
    np.testing.assert_array_equal(out[:, :64], generated[:, :64])
    offsets = np.array([0, 1, 3, 0, 1, 3, 0], dtype=np.float32)[:, None]
    np.testing.assert_allclose(out[:, 64:70], generated[:, 64:70] + offsets)


def test_tile_frames_whole_copies_then_prefix():
    np.testing.assert_array_equal(coeffs.tile_frames(np.arange(3)[:, None], 8)[:, 0], [0, 1, 2, 0, 1, 2, 0, 1])
    np.testing.assert_array_equal(coeffs.tile_frames(np.arange(5)[:, None], 2)[:, 0], [0, 1])
    with pytest.raises(InputError):
        coeffs.tile_frames(np.zeros((0, 70)), 3)


# -- generate_coeffs -------------------------------------------------------------------------------------------

def _generate(expnet, posevae, num_frames=34, seed=0, **options):
    return coeffs.generate_coeffs(expnet, posevae, _windows(num_frames), _source(), rng=random.Random(seed),
                                  generator=torch.Generator().manual_seed(seed), **options)


def test_same_seed_is_bit_identical_and_seeds_differ(real_nets):
    a = _generate(*real_nets, seed=7)
    assert a.shape == (34, 70) and a.dtype == np.float32
    assert np.array_equal(a, _generate(*real_nets, seed=7))
    assert not np.array_equal(a, _generate(*real_nets, seed=8))


def test_head_motion_scale(real_nets):
    source_pose = _source()[0, 64:70]
    still = _generate(*real_nets, head_motion_scale=0.0)
    assert np.array_equal(still[:, 64:70], np.repeat(source_pose[None], 34, axis=0))
    default = _generate(*real_nets)
    assert np.array_equal(_generate(*real_nets, head_motion_scale=1.0), default)
    doubled = _generate(*real_nets, head_motion_scale=2.0)
    np.testing.assert_allclose(doubled[:, 64:70] - source_pose, 2 * (default[:, 64:70] - source_pose), atol=1e-5)
    np.testing.assert_array_equal(doubled[:, :64], default[:, :64])


def test_reference_inputs_and_blink_switch():
    expnet, posevae = SpyExpNet(), SpyPoseVAE()
    source = _source()
    _generate(expnet, posevae, num_frames=60)
    (_, ref, ratio), = expnet.calls
    assert ratio.any()
    np.testing.assert_array_equal(ref[0].numpy(), np.repeat(source[:, :64], 60, axis=0))
    ref_pose, pose_class, latents = posevae.calls[0]
    np.testing.assert_array_equal(ref_pose.numpy(), source[:, 64:70])
    assert pose_class.tolist() == [0] and latents.shape == (2, 1, 64)

    expnet.calls.clear()
    _generate(expnet, posevae, num_frames=60, blink=False)
    assert not expnet.calls[0][2].any()

    expnet.calls.clear()
    blink_video = np.random.default_rng(3).standard_normal((25, 73)).astype(np.float32)
    _generate(expnet, posevae, num_frames=60, ref_eyeblink=blink_video)
    _, ref, ratio = expnet.calls[0]
    assert not ratio.any()
    np.testing.assert_array_equal(ref[0].numpy(), coeffs.tile_frames(blink_video[:, :64], 60))


def test_latents_are_drawn_whatever_the_options():
    """The same seed gives the same latents with or without reference videos (draw count is fixed)."""
    posevae = SpyPoseVAE()
    video = np.random.default_rng(3).standard_normal((25, 73)).astype(np.float32)
    _generate(SpyExpNet(), posevae, num_frames=70)
    _generate(SpyExpNet(), posevae, num_frames=70, ref_pose=video, ref_eyeblink=video, blink=False)
    assert torch.equal(posevae.calls[0][2], posevae.calls[1][2])


def test_ref_info_roles():
    video = np.random.default_rng(4).standard_normal((33, 73)).astype(np.float32)
    everything = coeffs.generate_coeffs(None, None, None, _source(), ref_video=video, ref_info="all")
    np.testing.assert_array_equal(everything, video[:, :70])

    base = _generate(SpyExpNet(), SpyPoseVAE(), num_frames=40)
    posed = _generate(SpyExpNet(), SpyPoseVAE(), num_frames=40, ref_video=video, ref_info="pose")
    np.testing.assert_array_equal(posed, coeffs.apply_ref_pose(base, video))

    expnet = SpyExpNet()
    both = _generate(expnet, SpyPoseVAE(), num_frames=40, ref_video=video, ref_info="pose+blink")
    assert not expnet.calls[0][2].any()
    np.testing.assert_array_equal(both[:, :64], coeffs.tile_frames(video[:, :64], 40))

    with pytest.raises(OptionError):
        _generate(SpyExpNet(), SpyPoseVAE(), ref_video=video, ref_info="lips")
    with pytest.raises(OptionError):
        _generate(SpyExpNet(), SpyPoseVAE(), ref_video=video, ref_info="pose", ref_pose=video)


def test_empty_audio_is_an_input_error():
    with pytest.raises(InputError):
        _generate(SpyExpNet(), SpyPoseVAE(), num_frames=0)


@pytest.mark.parametrize("num_frames", [1, 2, 21])
def test_short_clips_generate(real_nets, num_frames):
    out = _generate(*real_nets, num_frames=num_frames)
    assert out.shape == (num_frames, 70) and np.isfinite(out).all()
