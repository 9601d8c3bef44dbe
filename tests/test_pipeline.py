"""End to end: real media + synthetic official-format checkpoints + dlib landmarks -> mp4 files.

Every render here is 1-2 frames (a 256 frame costs seconds to tens of seconds on a small CPU); one
``SadTalker`` (fixture ``sadtalker_256``) serves the whole session. Options whose effect is fixed before
rendering (seeds, blinks, references, head-motion scale) are checked on the coefficients in
``test_pipeline_inputs.py``; here each preprocess mode renders once, each with a few more options, so
every option also goes through the full pipeline once.
"""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image

import golden
import media_probe
from sadtalker_core import Cancelled, GenerationResult, SadTalker, stages
from sadtalker_core.media import image_io, video
from sadtalker_core.render import paste
from sadtalker_core.options import validate_options
from sadtalker_core.progress import STAGES, Stage

pytestmark = pytest.mark.slow

DLIB = {"face_detector": "dlib"}


def decoded(path) -> np.ndarray:
    return np.stack(list(video.read_video_frames(path)))


def even(n: int) -> int:
    return n + (n & 1)


def check_streams(result: GenerationResult, frames: int, fps: int) -> dict:
    """The mp4 has ``frames`` H.264 frames of the reported size at ``fps`` and an AAC track as long."""
    summary = media_probe.probe_streams(result.video_path)
    width, height = result.info["output_size"]
    assert summary["video"]["codec"] == "h264"
    assert summary["video"]["frames"] == frames == result.info["num_frames"]
    assert summary["video"]["fps"] == fps == result.info["fps"]
    # the reported size is the file's: odd sizes get one edge-replicated row/column (yuv420p needs even sizes)
    assert (summary["video"]["width"], summary["video"]["height"]) == (width, height) == (even(width), even(height))
    assert summary["audio"]["codec"] == "aac"
    assert summary["audio"]["duration"] == pytest.approx(frames / fps, abs=0.005)
    return summary


@pytest.fixture(scope="module")
def crop_run(sadtalker_256, speech_clip, tmp_path_factory):
    """Default options (crop), seed 1, a 2-frame clip rendered in one batch, coefficients kept."""
    folder = tmp_path_factory.mktemp("crop_run")
    events = []
    result = sadtalker_256.generate(str(golden.MEDIA / "art_0.png"), speech_clip(0.08), result_dir=folder,
                                    seed=1, keep_intermediates=True, progress=lambda *e: events.append(e),
                                    **DLIB)
    return result, events, folder


def test_crop_mode_video_options_info_and_progress(crop_run):
    result, events, folder = crop_run
    assert result.video_path.parent == folder and result.video_path.suffix == ".mp4"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [result.video_path.name, result.video_path.with_suffix(".coeffs.npy").name])
    check_streams(result, frames=2, fps=25)
    width, height = result.info["output_size"]
    assert width == 256 and 0 < height <= 512  # aspect restore keeps the face crop's proportions

    assert result.options == validate_options(seed=1, **DLIB)
    assert result.info["num_frames"] == 2 and result.info["duration_s"] == pytest.approx(0.08)
    assert result.info["device"] == "cpu" and result.info["precision"] == "float32"
    assert result.info["face_detector"] == "dlib"
    assert set(result.info["seconds"]) == set(STAGES)
    assert result.crop_preview.shape == (256, 256, 3)

    coeffs = np.load(result.video_path.with_suffix(".coeffs.npy"))
    assert coeffs.shape == (2, 70) and np.isfinite(coeffs).all()

    stages = [stage for stage, _, _ in events]
    assert tuple(dict.fromkeys(stages)) == STAGES
    assert all(0 <= done <= total for _, done, total in events)
    render = [(done, total) for stage, done, total in events if stage == Stage.RENDER]
    assert render[0] == (0, 2) and render[-1] == (2, 2)


def test_cli_with_the_same_seed_reproduces_the_api_video(crop_run, checkpoints_256, speech_clip, tmp_path):
    """Same inputs and seed through ``python -m sadtalker_core`` (a separate process): identical decoded
    frames and coefficients, and the CLI contract (exit 0, the path on stdout)."""
    api, _, _ = crop_run
    out = tmp_path / "cli"
    proc = subprocess.run(
        [sys.executable, "-m", "sadtalker_core", "--driven_audio", str(speech_clip(0.08)),
         "--source_image", str(golden.MEDIA / "art_0.png"), "--checkpoint_dir", str(checkpoints_256),
         "--result_dir", str(out), "--face_detector", "dlib", "--seed", "1", "--cpu", "--verbose"],
        cwd=golden.REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    printed = proc.stdout.strip().splitlines()
    assert len(printed) == 1
    path = out / printed[0].rsplit("/", 1)[-1]
    assert printed[0] == str(path) and path.is_file()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [path.name, path.with_suffix(".coeffs.npy").name, path.with_suffix(".json").name])  # + the parameters

    np.testing.assert_array_equal(np.load(path.with_suffix(".coeffs.npy")),
                                  np.load(api.video_path.with_suffix(".coeffs.npy")))
    np.testing.assert_array_equal(decoded(path), decoded(api.video_path))


def test_full_mode_keeps_the_pixels_outside_the_paste_box(sadtalker_256, speech_clip, tmp_path):
    """``full`` + ``still``: outside the paste box the video shows the source picture.

    The mp4 is yuv420p: even losslessly coded (crf 0), RGB -> YUV 4:2:0 -> RGB changes pixels (the chroma
    is subsampled and filtered), so the source picture itself is sent through the same VideoWriter and
    reader at crf 0 and the two decodes must agree exactly outside the box widened by a few pixels (the
    reach of the chroma filters). Inside, the face must have changed.
    """
    image = image_io.load_image(golden.MEDIA / "art_0.png")
    result = sadtalker_256.generate(image, speech_clip(0.04), result_dir=tmp_path / "out", preprocess="full",
                                    still=True, crf=0, seed=2, **DLIB)
    check_streams(result, frames=1, fps=25)
    assert result.info["output_size"] == [640, 896]
    rendered = decoded(result.video_path)[0]

    with video.VideoWriter(tmp_path / "source.mp4", (640, 896), fps=25, crf=0) as writer:
        writer.write(image)
    reference = decoded(tmp_path / "source.mp4")[0]
    assert not np.array_equal(reference, image)  # the colour round trip alone changes pixels

    source = stages.analyse_source(sadtalker_256.runtime, image, backend="dlib", preprocess="full", size=256)
    x0, y0, x1, y1 = paste.paste_box(source.crop, "full")
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 896
    margin = 4
    outside = np.ones(image.shape[:2], bool)
    outside[max(0, y0 - margin):y1 + margin, max(0, x0 - margin):x1 + margin] = False
    assert outside.mean() > 0.3  # the neck, shoulders and background: plenty to compare
    np.testing.assert_array_equal(rendered[outside], reference[outside])
    inside = np.abs(rendered[y0:y1, x0:x1].astype(int) - reference[y0:y1, x0:x1]).mean()
    assert inside > 2


def test_extcrop_from_a_huge_pil_image_with_repeated_yaw_keyframes(sadtalker_256, speech_clip, tmp_path):
    """A 4286x6000 PIL picture (downscaled on load, not rendered at full size), yaw keyframes with a repeat
    (the original divides by zero), stronger expressions, two batches of one frame."""
    huge = Image.open(golden.MEDIA / "art_0.png").convert("RGB").resize((4286, 6000), Image.BICUBIC)
    result = sadtalker_256.generate(huge, speech_clip(0.08), result_dir=tmp_path, preprocess="extcrop",
                                    input_yaw=[10, 10, -10], expression_scale=1.5, batch_size=1, seed=3, **DLIB)
    check_streams(result, frames=2, fps=25)
    assert result.info["output_size"][0] == 256
    assert result.options["input_yaw"] == [10.0, 10.0, -10.0]


def test_resize_from_an_array_at_30_fps_with_a_reference_video(sadtalker_256, speech_clip, tmp_path):
    """RGB array source, fps 30, head pose and blinks from the reference video, generated blinks off."""
    image = np.asarray(Image.open(golden.MEDIA / "art_7.png").convert("RGB"))
    events = []
    result = sadtalker_256.generate(image, speech_clip(0.04), result_dir=tmp_path, preprocess="resize", fps=30,
                                    ref_video=str(golden.MEDIA / "WDA_KatieHill_000.mp4"),
                                    ref_info="pose+blink", blink=False, seed=4,
                                    progress=lambda *e: events.append(e), **DLIB)
    check_streams(result, frames=1, fps=30)
    # the reference is read only as far as the clip needs: one frame
    assert [e for e in events if e[0] == Stage.REFERENCE] == [(Stage.REFERENCE, 0, 1)]


def test_extfull_idle_mode_without_seed_reports_a_reproducing_seed(sadtalker_256, tmp_path):
    """Idle mode (no audio: a silent track), no seed given, no head motion; the reported seed recomputes the
    kept coefficients exactly, and with ``head_motion_scale=0`` the pose is the source's."""
    image = image_io.load_image(golden.MEDIA / "happy.png")
    result = sadtalker_256.generate(image, None, result_dir=tmp_path, preprocess="extfull", idle_seconds=0.04,
                                    head_motion_scale=0, keep_intermediates=True, **DLIB)
    check_streams(result, frames=1, fps=25)
    assert result.info["output_size"] == [256, 256]
    seed = result.options["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**63

    kept = np.load(result.video_path.with_suffix(".coeffs.npy"))
    opts = dict(result.options)
    features, _ = stages.driving_audio(None, fps=opts["fps"], idle_seconds=opts["idle_seconds"])
    source = stages.analyse_source(sadtalker_256.runtime, image, backend="dlib", preprocess="extfull", size=256)
    motion = stages.motion_coefficients(sadtalker_256.runtime, features, source, {}, preprocess="extfull",
                                        seed=seed, head_motion_scale=0)
    np.testing.assert_array_equal(motion.coefficients, kept)
    np.testing.assert_allclose(kept[:, 64:70], np.repeat(source.coeff[:, 64:70], len(kept), 0), atol=1e-6)


def test_cancel_during_render_leaves_no_files(sadtalker_256, speech_clip, tmp_path):
    """Cancelled after the first of two batches (ffmpeg is already writing): ``Cancelled``, and neither the
    partial mp4 nor the coefficients remain."""
    cancel = threading.Event()
    events = []

    def progress(stage, done, total):
        events.append((stage, done))
        if stage == Stage.RENDER and done >= 1:
            cancel.set()

    folder = tmp_path / "results"
    with pytest.raises(Cancelled, match="cancelled"):
        sadtalker_256.generate(str(golden.MEDIA / "happy.png"), speech_clip(0.08), result_dir=folder,
                               batch_size=1, keep_intermediates=True, progress=progress, cancel=cancel,
                               seed=5, **DLIB)
    assert (Stage.RENDER, 1) in events and (Stage.RENDER, 2) not in events
    assert list(folder.iterdir()) == []  # created for the coefficients, left empty


def test_public_api_surface():
    assert SadTalker.__module__ == "sadtalker_core.pipeline"
    import sadtalker_core

    assert sadtalker_core.SadTalker is SadTalker and sadtalker_core.GenerationResult is GenerationResult
