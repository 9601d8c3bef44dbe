"""The parity tests' expectation building (``golden.blink_plan`` / ``render_plan`` / ``paste_plan``) on the kit's
sidecars and on copies altered to other official runs: a reference blink video, batch size 2 at size 512 with
free-view angles, a non-square JPEG portrait in ``extfull``. Each alteration must change the expectation as
the official code would, and a setting the helpers do not model must fail with its name.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import golden
from sadtalker_core.render import animate
from sadtalker_core.render.paste import paste_box, restore_aspect

pytestmark = pytest.mark.parity


def _kit(name: str) -> tuple[dict, dict]:
    path = golden.kit_dir() / "stages" / f"{name}.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: these tests alter the kit's own sidecars")
    return golden.load_sidecar(path)


def _replace_call(meta: dict, old: str, new: str) -> dict:
    """A copy of ``meta`` whose recorded official calls have ``old`` replaced by ``new`` (which must occur)."""
    altered = copy.deepcopy(meta)
    key = "official_calls" if "official_calls" in altered else "official_call"
    calls = altered[key]
    text = " ".join(calls) if isinstance(calls, list) else calls
    assert old in text, f"{old!r} not in the recorded calls {text!r}"
    altered[key] = [c.replace(old, new) for c in calls] if isinstance(calls, list) else calls.replace(old, new)
    return altered


def _raises_naming(setting: str, build, *args):
    with pytest.raises(golden.UnsupportedSidecar) as error:
        build(*args)
    assert setting in str(error.value), str(error.value)


def test_call_arguments_by_official_parameter_name():
    meta = {"official_calls": ["x = f(a(b, c), 'p, q', [1, 2], key={'k': (3, 4)})  # done", "g(1)"]}
    assert golden.call_arguments(meta, "f", ("first", "second", "third", "key")) == {
        "first": "a(b, c)", "second": "'p, q'", "third": "[1, 2]", "key": "{'k': (3, 4)}"}
    assert golden.call_arguments(meta, "h", ("x",)) is None
    assert golden.call_arguments({"official_call": "obj.g(7)"}, "g", ("x",)) == {"x": "7"}
    _raises_naming("f(other=...)", golden.call_arguments, {"official_call": "f(1, other=2)"}, "f", ("x",))


# -- (a) reference blink video: the official get_data draws the blinks, then zeroes the ratio -----------------

GET_DATA_KIT = "'cpu', None, still=False)"


def test_blink_plan_of_the_kit_reproduces_its_ratio():
    meta, arrays = _kit("s1_audio_mel")
    plan = golden.blink_plan(meta)
    assert (plan.ref_eyeblink, plan.use_blink, plan.zeroed) == (False, True, False)
    expected = plan.ratio(int(meta["num_frames"]))
    assert np.array_equal(expected, arrays["ratio_gt"][0]) and expected.any()


@pytest.mark.parametrize("call", ["'cpu', 'ref_blink.mat', still=False)",
                                  "'cpu', ref_eyeblink_coeff_path='ref_blink.mat', still=False)"])
def test_blink_plan_with_a_reference_blink_video_is_zero(call):
    meta, _ = _kit("s1_audio_mel")
    kit = golden.blink_plan(meta)
    plan = golden.blink_plan(_replace_call(meta, GET_DATA_KIT, call))
    assert plan.ref_eyeblink and plan.zeroed and plan.seed == kit.seed
    num_frames = int(meta["num_frames"])
    assert kit.ratio(num_frames).any() and not plan.ratio(num_frames).any()


def test_blink_plan_without_blinks_is_zero():
    meta, _ = _kit("s1_audio_mel")
    plan = golden.blink_plan(_replace_call(meta, GET_DATA_KIT, "'cpu', None, still=False, use_blink=False)"))
    assert not plan.ref_eyeblink and plan.zeroed and not plan.ratio(int(meta["num_frames"])).any()


@pytest.mark.parametrize("call, setting", [
    ("'cpu', None, still=False, idlemode=True, length_of_audio=2.4)", "idlemode"),
    ("'cpu', None, still=False, blink_scale=2)", "blink_scale"),
    ("'cpu', None, still=False, use_blink=maybe)", "use_blink"),
])
def test_blink_plan_rejects_settings_it_does_not_model(call, setting):
    meta, _ = _kit("s1_audio_mel")
    _raises_naming(setting, golden.blink_plan, _replace_call(meta, GET_DATA_KIT, call))


def test_blink_plan_needs_the_recorded_seed():
    meta, _ = _kit("s1_audio_mel")
    _raises_naming("random.seed", golden.blink_plan, _replace_call(meta, "random.seed(0);", ""))


# -- (b) batch size 2 at size 512 with free-view angles -------------------------------------------------------

def _batch2_free_view(meta: dict) -> dict:
    altered = copy.deepcopy(meta)
    altered.update(size=512, input_yaw=[-10, 15], input_pitch=[3], input_roll=None,
                   render_layout="target_semantics_bs2 as built, (2, L, C, 27) (= the batch_size=2 layout); "
                                 "first 2 time steps",
                   rendered_frame_indices=[0, 1, 30, 31])
    return altered


def test_render_plan_of_the_kit_matches_its_arrays():
    meta, arrays = _kit("s4_facerender")
    plan = golden.render_plan(meta)
    assert (plan.batch_size, plan.steps, plan.frame_indices) == (1, 4, (0, 1, 2, 3))
    assert all(arrays[name].shape == shape for name, shape in plan.expected_shapes().items())
    assert plan.camera_per_frame(int(meta["frame_num"])) == [None, None, None]


def test_render_plan_batch2_512_free_view():
    meta, _ = _kit("s4_facerender")
    plan = golden.render_plan(_batch2_free_view(meta))
    assert (plan.size, plan.batch_size, plan.steps, plan.frame_indices) == (512, 2, 2, (0, 1, 30, 31))
    # one canonical / source keypoint row per batch row; driving keypoints (B, steps, 15, 3), b-major frames
    assert plan.expected_shapes() == {
        "kp_canonical": (2, 15, 3), "kp_source": (2, 15, 3), "kp_driving_per_step": (2, 2, 15, 3),
        "rendered_frames": (4, 3, 512, 512), "rendered_frames_uint8_hwc": (4, 512, 512, 3)}
    num_frames = int(meta["frame_num"])
    yaw, pitch, roll = plan.camera_per_frame(num_frames)
    assert np.array_equal(yaw, animate.camera_sequence([-10, 15], num_frames)[[0, 1, 30, 31]])
    assert yaw[0] == -10 and yaw[2] > yaw[1] and np.all(pitch == 3) and roll is None


def test_render_plan_batch_padding_repeats_the_last_frame():
    meta, _ = _kit("s4_facerender")
    altered = _batch2_free_view(meta)
    altered.update(frame_num=5, rendered_frame_indices=[0, 1, 2, 3, 4, 5])  # 5 frames padded to 6: rows of 3
    plan = golden.render_plan(altered)
    assert (plan.padded_frames, plan.steps) == (6, 3)
    assert plan.per_frame(np.arange(5)).tolist() == [0, 1, 2, 3, 4, 4]


@pytest.mark.parametrize("change, setting", [
    ({"render_layout": "first 4 time steps"}, "render_layout"),
    ({"rendered_frame_indices": [0, 1, 2, 31]}, "rendered_frame_indices"),
    ({"rendered_frame_indices": [0, 1, 30]}, "rendered_frame_indices"),
    ({"size": 384}, "size"),
    ({"input_yaw": "10"}, "input_yaw"),
    ({"preprocess": "square"}, "preprocess"),
    ({"still": "yes"}, "still"),
    ({"render_batch_size": "2"}, "render_batch_size"),
])
def test_render_plan_rejects_settings_it_does_not_model(change, setting):
    meta, _ = _kit("s4_facerender")
    altered = _batch2_free_view(meta)
    altered.update(change)
    _raises_naming(setting, golden.render_plan, altered)


def test_render_plan_rejects_renders_without_expression():
    meta, _ = _kit("s4_facerender")
    _raises_naming("use_exp", golden.render_plan, _replace_call(meta, "use_exp=True", "use_exp=False"))


# -- (c) non-square JPEG portrait in extfull ------------------------------------------------------------------

def _extfull_jpeg(meta: dict) -> dict:
    altered = _replace_call(meta, "extended_crop=False", "extended_crop=True")
    altered.update(mode="extfull", extended_crop=True, original_image="examples/source_image/portrait.jpg")
    altered["crop_info"] = dict(altered["crop_info"], original_size_wh=[300, 392])
    return altered


def test_paste_plan_of_the_kit_matches_its_arrays():
    meta, arrays = _kit("s5_paste_back")
    plan = golden.paste_plan(meta, arrays["rendered_frame_uint8_rgb"].shape)
    assert (plan.mode, plan.size) == ("full", 256)
    assert arrays["video_frame_uint8_rgb"].shape == plan.video_frame_shape


def test_paste_plan_extfull_non_square_jpeg():
    meta, arrays = _kit("s5_paste_back")
    rendered = arrays["rendered_frame_uint8_rgb"]
    kit = golden.paste_plan(meta, rendered.shape)
    plan = golden.paste_plan(_extfull_jpeg(meta), rendered.shape)
    assert plan.mode == "extfull" and plan.original_image.endswith(".jpg")
    # extfull pastes into the crop box, full into the quad box inside it
    assert paste_box(plan.crop_info, plan.mode) == tuple(meta["crop_info"]["crop_box_clx_cly_crx_cry"])
    assert paste_box(plan.crop_info, plan.mode) != paste_box(kit.crop_info, kit.mode)
    # the aspect restore: width S, height int(S * 392 / 300)
    assert plan.video_frame_shape == (334, 256, 3) != kit.video_frame_shape
    assert restore_aspect(rendered, plan.crop_info, plan.size).shape == plan.video_frame_shape
    big = golden.paste_plan(_extfull_jpeg(meta), (512, 512, 3))
    assert big.video_frame_shape == (int(512 * 392 / 300), 512, 3)


@pytest.mark.parametrize("change, setting", [
    ({"mode": "full"}, "extended_crop"),  # the recorded call pastes with extended_crop=True
    ({"extended_crop": False}, "extended_crop"),
    ({"mode": "crop"}, "mode"),
    ({"original_image": "examples/source_image/portrait.JPG"}, "original_image"),
    ({"original_image": "examples/source_image/portrait.mp4"}, "original_image"),
    ({"crop_info": {"original_size_wh": [300, 392]}}, "crop_info"),
    ({"size": 320}, "size"),
])
def test_paste_plan_rejects_settings_it_does_not_model(change, setting):
    meta, arrays = _kit("s5_paste_back")
    altered = _extfull_jpeg(meta)
    altered.update(change)
    _raises_naming(setting, golden.paste_plan, altered, arrays["rendered_frame_uint8_rgb"].shape)
