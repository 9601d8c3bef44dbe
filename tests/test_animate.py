"""Unit tests of the render stage (``sadtalker_core.render.animate``): batches, camera, keypoints, render loop."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from sadtalker_core.render import animate
from sadtalker_core.errors import Cancelled, InputError
from sadtalker_core.nets.mapping_net import MappingNet


def _coeffs(num_frames, width=70, seed=0):
    return np.random.default_rng(seed).standard_normal((num_frames, width)).astype(np.float32)


# -- camera sequences ------------------------------------------------------------------------------------------

def test_camera_none_and_single_value():
    assert animate.camera_sequence(None, 10) is None
    assert animate.camera_sequence([], 10) is None
    seq = animate.camera_sequence([7], 5)
    assert seq.dtype == np.float32 and np.array_equal(seq, np.full(5, 7.0))


def test_camera_sweep_has_constant_speed_and_covers_the_clip():
    seq = animate.camera_sequence([-10, 15], 60)
    assert seq.shape == (60,) and seq.dtype == np.float32
    assert seq[0] == -10 and 14 < seq[-1] < 15
    steps = np.diff(seq)
    moving = int(np.count_nonzero(steps))
    # np.arange may stop one frame short of T; the official code then holds the last angle.
    assert moving >= 58 and np.all(steps[moving:] == 0)
    np.testing.assert_allclose(steps[:moving], 25 / 59, rtol=1e-5)


def test_camera_several_keyframes_turn_at_each_keyframe():
    seq = animate.camera_sequence([0, 20, 0], 21)
    peak = int(np.argmax(seq))
    assert peak == 10 and seq[peak] == 20 and np.all(np.diff(seq[:peak + 1]) > 0)
    # The end keyframe is excluded by np.arange (official), so the last angle reached is held.
    assert np.all(np.diff(seq[peak:-1]) < 0) and seq[-1] == seq[-2] == 2


@pytest.mark.parametrize("values", [[5, 5], [3, 3, 3], [-4, -4]])
def test_camera_repeated_values_hold(values):
    np.testing.assert_array_equal(animate.camera_sequence(values, 9), np.full(9, values[0], dtype=np.float32))


def test_camera_repeated_keyframe_holds_before_moving():
    held = animate.camera_sequence([0, 0, 20], 30)
    direct = animate.camera_sequence([0, 20], 30)
    assert held.shape == (30,) and np.all(np.diff(held) >= 0)
    assert np.count_nonzero(held == 0) > np.count_nonzero(direct == 0) + 5
    assert held.max() > 15


@pytest.mark.parametrize("values", [[-10, 15], [3], [4, 4], [0, 30, 0]])
def test_camera_single_frame(values):
    np.testing.assert_array_equal(animate.camera_sequence(values, 1), [values[0]])


# -- batch construction ----------------------------------------------------------------------------------------

def test_semantic_windows_clamp_at_both_ends():
    coeffs = _coeffs(30)
    windows = animate.semantic_windows(coeffs)
    assert windows.shape == (30, 70, 27)
    for t in (0, 5, 15, 29):
        for j in range(27):
            np.testing.assert_array_equal(windows[t, :, j], coeffs[min(max(t - 13 + j, 0), 29)])


def test_semantic_windows_tensor_matches_array_and_single_frame():
    coeffs = _coeffs(17)
    torch.testing.assert_close(animate.semantic_windows(torch.from_numpy(coeffs)),
                               torch.from_numpy(animate.semantic_windows(coeffs)), rtol=0, atol=0)
    one = animate.semantic_windows(coeffs[:1])
    assert one.shape == (1, 70, 27) and np.all(one == coeffs[0][:, None])


def test_batch_layout_pads_with_the_last_item_in_contiguous_blocks():
    layout = animate.batch_layout(np.arange(5), 2)
    np.testing.assert_array_equal(layout, [[0, 1, 2], [3, 4, 4]])
    windows = animate.semantic_windows(_coeffs(9))
    blocks = animate.batch_layout(windows, 4)
    assert blocks.shape == (4, 3, 70, 27)
    for b in range(4):
        for step in range(3):
            np.testing.assert_array_equal(blocks[b, step], windows[min(b * 3 + step, 8)])
    torch.testing.assert_close(animate.batch_layout(torch.from_numpy(windows), 4), torch.from_numpy(blocks))


def test_render_targets_scale_full_and_still():
    generated, source = _coeffs(6), _coeffs(1, 73, seed=1)
    kept = generated.copy()
    plain = animate.render_targets(generated, source, "crop", expression_scale=1.5)
    assert plain.shape == (6, 70)
    np.testing.assert_allclose(plain[:, :64], 1.5 * generated[:, :64])
    np.testing.assert_array_equal(plain[:, 64:], generated[:, 64:])
    full = animate.render_targets(generated, source, "extfull")
    assert full.shape == (6, 73) and np.all(full[:, 70:] == source[:, 70:])
    still = animate.render_targets(generated, source, "full", still=True)
    assert np.all(still[:, 64:] == source[:, 64:]) and np.array_equal(still[:, :64], generated[:, :64])
    still_crop = animate.render_targets(generated, source, "resize", still=True)
    assert still_crop.shape == (6, 70) and np.all(still_crop[:, 64:] == source[:, 64:70])
    np.testing.assert_array_equal(generated, kept)


def test_source_semantics_width_follows_the_mode():
    source = _coeffs(1, 73)
    crop = animate.source_semantics(source, "crop")
    assert crop.shape == (1, 70, 27) and np.all(crop == source[0, :70, None])
    assert animate.source_semantics(source, "full").shape == (1, 73, 27)


# -- keypoints -------------------------------------------------------------------------------------------------

def test_headpose_degrees_from_bins():
    assert torch.allclose(animate.headpose_degrees(torch.zeros(1, 66)), torch.tensor([3 * 32.5 - 99]))
    one_hot = torch.full((3, 66), -1e4)
    one_hot[0, 0], one_hot[1, 33], one_hot[2, 65] = 0, 0, 0
    torch.testing.assert_close(animate.headpose_degrees(one_hot), torch.tensor([-99.0, 0.0, 96.0]))


def test_rotation_matrix_order_and_official_pi():
    yaw, pitch, roll = torch.tensor([20.0]), torch.tensor([-35.0]), torch.tensor([50.0])
    zero = torch.zeros(1)
    rotation = animate.rotation_matrix(yaw, pitch, roll)
    composed = (animate.rotation_matrix(zero, pitch, zero) @ animate.rotation_matrix(yaw, zero, zero)
                @ animate.rotation_matrix(zero, zero, roll))
    torch.testing.assert_close(rotation, composed)
    torch.testing.assert_close(rotation @ rotation.transpose(1, 2), torch.eye(3)[None], atol=1e-6, rtol=0)
    angle = -35.0 / 180 * 3.14
    rx = animate.rotation_matrix(zero, pitch, zero)[0]
    torch.testing.assert_close(rx, torch.tensor([[1, 0, 0], [0, math.cos(angle), -math.sin(angle)],
                                                 [0, math.sin(angle), math.cos(angle)]]))
    ry = animate.rotation_matrix(yaw, zero, zero)[0]
    assert ry[0, 2] > 0 and ry[2, 0] < 0


def _he(batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(batch, n, generator=g)
            for k, n in (("yaw", 66), ("pitch", 66), ("roll", 66), ("t", 3), ("exp", 45))}


def test_transform_keypoints_uses_only_t_y_and_does_not_mutate():
    kp = torch.randn(1, 15, 3, generator=torch.Generator().manual_seed(1))
    he = _he(2)
    t_before = he["t"].clone()
    posed = animate.transform_keypoints(kp, he)
    assert posed.shape == (2, 15, 3) and torch.equal(he["t"], t_before)
    shifted = {**he, "t": he["t"] + torch.tensor([5.0, 0.0, -7.0])}
    torch.testing.assert_close(animate.transform_keypoints(kp, shifted), posed)
    rotation = animate.rotation_matrix(*(animate.headpose_degrees(he[a]) for a in ("yaw", "pitch", "roll")))
    expected = (torch.einsum("bij,bkj->bki", rotation, kp.expand(2, -1, -1))
                + torch.stack([torch.zeros(2), he["t"][:, 1], torch.zeros(2)], 1)[:, None]
                + he["exp"].reshape(2, 15, 3))
    torch.testing.assert_close(posed, expected)


def test_transform_keypoints_camera_overrides():
    kp = torch.randn(1, 15, 3, generator=torch.Generator().manual_seed(2))
    he = _he(2, seed=3)
    yaw = torch.tensor([10.0, -30.0])
    overridden = animate.transform_keypoints(kp, he, yaw=yaw)
    rotation = animate.rotation_matrix(yaw, animate.headpose_degrees(he["pitch"]), animate.headpose_degrees(he["roll"]))
    expected = (kp @ rotation.transpose(1, 2) + torch.stack([torch.zeros(2), he["t"][:, 1], torch.zeros(2)], 1)[:, None]
                + he["exp"].reshape(2, 15, 3))
    torch.testing.assert_close(overridden, expected)


# -- render loop -----------------------------------------------------------------------------------------------

class CountingKPDetector(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, image):
        self.calls += 1
        return torch.linspace(-0.5, 0.5, 45).reshape(1, 15, 3).expand(image.shape[0], -1, -1)


class EchoGenerator(nn.Module):
    """Encodes the source as its mean colour; the frame shows the first driving keypoint's x coordinate."""

    def __init__(self):
        super().__init__()
        self.encodes, self.batches = 0, []

    def encode_source(self, source):
        self.encodes += 1
        return source.mean(dim=(2, 3), keepdim=True)

    def animate(self, feature_3d, kp_source, kp_driving):
        self.batches.append(kp_driving.shape[0])
        frames = kp_driving[:, 0, 0].reshape(-1, 1, 1, 1).expand(-1, 3, 8, 8) + 0 * feature_3d
        return {"prediction": frames}


class Event:
    def __init__(self, after_checks):
        self.after_checks = after_checks

    def is_set(self):
        self.after_checks -= 1
        return self.after_checks < 0


@pytest.fixture(scope="module")
def mapping_net():
    torch.manual_seed(0)
    return MappingNet(70).eval()


def _render(mapping_net, num_frames=5, **kwargs):
    kp, generator = CountingKPDetector(), EchoGenerator()
    windows = animate.semantic_windows(_coeffs(num_frames))
    semantics = animate.source_semantics(_coeffs(1, 73, seed=1), "crop")
    batches = animate.render_frames(kp, mapping_net, generator, torch.rand(1, 3, 8, 8), semantics, windows, **kwargs)
    return kp, generator, windows, batches


def test_render_in_order_encoding_the_source_once(mapping_net):
    progress = []
    kp, generator, windows, batches = _render(mapping_net, batch_size=2,
                                              progress=lambda *a: progress.append(a))
    batches = list(batches)
    assert [start for start, _ in batches] == [0, 2, 4] and generator.batches == [2, 2, 1]
    assert kp.calls == 1 and generator.encodes == 1
    assert progress == [("render", 2, 5), ("render", 4, 5), ("render", 5, 5)]
    frames = torch.cat([f for _, f in batches])
    with torch.inference_mode():
        expected = animate.driving_keypoints(mapping_net, kp(torch.zeros(1, 3, 8, 8)), torch.from_numpy(windows))
    torch.testing.assert_close(frames[:, 0, 0, 0], expected[:, 0, 0])


def test_render_applies_camera_slices(mapping_net):
    yaw = animate.camera_sequence([-20, 20], 5)
    kp, _, windows, batches = _render(mapping_net, batch_size=3, yaw=yaw)
    frames = torch.cat([f for _, f in batches])
    with torch.inference_mode():
        expected = animate.driving_keypoints(mapping_net, kp(torch.zeros(1, 3, 8, 8)), torch.from_numpy(windows),
                                             yaw=torch.from_numpy(yaw))
    torch.testing.assert_close(frames[:, 0, 0, 0], expected[:, 0, 0])


def test_cancel_between_batches(mapping_net):
    _, generator, _, batches = _render(mapping_net, batch_size=2, cancel=Event(after_checks=1))
    start, _ = next(batches)
    assert start == 0
    with pytest.raises(Cancelled):
        next(batches)
    assert generator.batches == [2]


def test_render_rejects_batch_size_zero(mapping_net):
    with pytest.raises(InputError):
        next(_render(mapping_net, batch_size=0)[3])


# -- uint8 conversion ------------------------------------------------------------------------------------------

def test_to_uint8_rounds_half_to_even_and_clips():
    # float32 inputs whose float32 product with 255 lies exactly on a half level
    halves = [x for x in (np.float32((k + 0.5) / 255) for k in range(255)) if float(x * np.float32(255)) % 1 == 0.5]
    assert halves, "no float32 x with 255x exactly on a half"
    values = np.concatenate([halves, np.linspace(-0.2, 1.2, 997, dtype=np.float32)]).astype(np.float32)
    frames = torch.from_numpy(np.tile(values[:, None, None, None], (1, 3, 2, 2)))
    out = animate.to_uint8(frames)
    assert out.dtype == torch.uint8 and out.shape == (len(values), 2, 2, 3)
    expected = np.clip(np.rint(values * np.float32(255)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(out[:, 0, 0, 0].numpy(), expected)
    for x, level in zip(halves, out[:len(halves), 0, 0, 0].tolist()):
        assert level % 2 == 0 and abs(level - float(x * np.float32(255))) == 0.5


def test_to_uint8_keeps_channel_order_and_accepts_half():
    frames = torch.zeros(1, 3, 1, 1)
    frames[0, :, 0, 0] = torch.tensor([0.0, 0.5, 1.0])
    assert animate.to_uint8(frames.half())[0, 0, 0].tolist() == [0, 128, 255]
