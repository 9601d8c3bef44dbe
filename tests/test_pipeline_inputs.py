"""What users get wrong (and odd but valid inputs), through ``SadTalker.generate`` and its stages.

Failing calls go through ``generate`` itself and must raise a ``SadTalkerError`` subclass naming the
problem, leave no result folder behind and put nothing into the temp folder (``tempfile`` and ``TMPDIR``
are pointed at an empty folder of the test's own, so other processes on the machine cannot disturb the
check). Valid inputs are followed up to the coefficients with the pipeline's public stages, called the
way ``generate`` calls them (``driving_audio``, ``load_source``, ``analyse_source``,
``reference_coefficients``, ``motion_coefficients``): rendering adds seconds per frame and nothing that
depends on these inputs.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import tempfile
import time

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

import golden
from sadtalker_core import (
    AudioError, CheckpointNotFoundError, ImageError, InputError, NoFaceError, OptionError, SadTalker,
    SadTalkerError, stages
)
from sadtalker_core.media import video
from sadtalker_core.errors import VideoError
from sadtalker_core.options import validate_options

DLIB = {"face_detector": "dlib"}
MEDIA = golden.MEDIA
REFERENCE_VIDEO = MEDIA / "WDA_KatieHill_000.mp4"


def ffmpeg(*args: str) -> None:
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def talker(sadtalker_256) -> SadTalker:
    sadtalker_256.runtime.prepare(256, "crop")
    return sadtalker_256


@pytest.fixture(scope="module")
def portrait() -> np.ndarray:
    return np.asarray(Image.open(MEDIA / "art_0.png").convert("RGB"))


@pytest.fixture(scope="module")
def portrait_source(talker, portrait):
    return analysed(talker, portrait)


def analysed(talker: SadTalker, image: np.ndarray, **options) -> stages.SourceFace:
    """The source face as ``generate`` analyses it with these options."""
    opts = validate_options({**DLIB, **options})
    return stages.analyse_source(talker.runtime, image, backend=opts["face_detector"], preprocess=opts["preprocess"],
                                 size=opts["size"], landmarks=opts["landmarks"], face_box=opts["face_box"],
                                 face_index=opts["face_index"])


def references(talker: SadTalker, max_frames: int | None, **options) -> dict[str, np.ndarray]:
    """The reference videos' coefficients as ``generate`` reads them with these options."""
    opts = validate_options({**DLIB, **options})
    return stages.reference_coefficients(talker.runtime, {role: opts[role] for role in stages.REFERENCE_ROLES},
                                         backend=opts["face_detector"], preprocess=opts["preprocess"],
                                         max_frames=max_frames)


def coefficients(talker: SadTalker, source, audio_path, **options) -> np.ndarray:
    """The generated coefficients (T, 70) of ``generate`` for these inputs: its stage calls, in its order."""
    opts = validate_options({"seed": 0, **DLIB, **options})
    features, _ = stages.driving_audio(audio_path, fps=opts["fps"], idle_seconds=opts["idle_seconds"],
                                       ref_info=opts["ref_info"], ref_video=opts["ref_video"])
    found = references(talker, None if opts["ref_info"] == "all" else features.num_frames, **options)
    motion = stages.motion_coefficients(
        talker.runtime, features, source, found, preprocess=opts["preprocess"], seed=opts["seed"],
        pose_style=opts["pose_style"], blink=opts["blink"], head_motion_scale=opts["head_motion_scale"],
        ref_info=opts["ref_info"], still=opts["still"], expression_scale=opts["expression_scale"])
    return motion.coefficients


@pytest.fixture
def failing(talker, tmp_path, monkeypatch, speech_clip):
    """``failing(error, match, source=..., audio=..., **options)`` runs ``generate`` expecting ``error`` and
    checks that nothing was left behind; returns the exception."""
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("TMPDIR", str(temp))
    results = tmp_path / "results"
    default_audio = speech_clip(0.04)

    def run(error, match, source=MEDIA / "happy.png", audio=default_audio, talker_=talker, **options):
        with pytest.raises(error, match=match) as caught:
            talker_.generate(source, audio, result_dir=results, **{"seed": 0, **DLIB, **options})
        assert isinstance(caught.value, SadTalkerError)
        assert not results.exists(), list(results.iterdir())
        assert list(temp.iterdir()) == []
        return caught.value

    return run


# -- source image ---------------------------------------------------------------------------------------------

def test_missing_unreadable_empty_and_non_image_sources(failing, tmp_path):
    failing(ImageError, "not found", source=tmp_path / "nope.png")
    failing(ImageError, "folder", source=tmp_path)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    failing(ImageError, "empty", source=empty)
    text = tmp_path / "notes.png"
    text.write_text("not a picture\n" * 20)
    failing(ImageError, "notes.png is not an image", source=text)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((MEDIA / "happy.png").read_bytes()[:2000])
    failing(ImageError, "damaged or truncated", source=truncated)


def test_unreadable_source(failing, tmp_path):
    locked = tmp_path / "locked.png"
    locked.write_bytes((MEDIA / "happy.png").read_bytes())
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("this user (root) reads mode-000 files")
        failing(ImageError, "Cannot read the source image", source=locked)
    finally:
        locked.chmod(0o600)


def test_wrong_source_types_and_tiny_or_flat_pictures(failing):
    failing(ImageError, "Unsupported source image type int", source=123)
    failing(InputError, "give exactly one source.*none was given", source=None)
    failing(ImageError, "channels-first", source=np.zeros((3, 256, 256), np.uint8))
    failing(ImageError, "1x1 px, too small", source=np.zeros((1, 1, 3), np.uint8))
    failing(NoFaceError, "No face found in the 300x200", source=np.full((200, 300, 3), 128, np.uint8))


def _formats(image: Image.Image):
    """(name, file suffix, PIL image to save, save options) of the pictures a user may have."""
    gray = image.convert("L")
    return [
        ("rgba", ".png", image.convert("RGBA"), {}),
        ("grayscale", ".png", gray, {}),
        ("16-bit", ".png", Image.fromarray(np.asarray(gray).astype(np.uint16) * 257), {}),
        ("cmyk-jpeg", ".jpg", image.convert("CMYK"), {"quality": 95}),
        ("cmyk-tiff", ".tif", image.convert("CMYK"), {}),
    ]


def test_rgba_grayscale_16bit_and_cmyk_sources_reach_the_same_face(talker, portrait, portrait_source, tmp_path):
    rgb = Image.fromarray(portrait)
    for name, suffix, picture, save in _formats(rgb):
        path = tmp_path / f"{name}{suffix}"
        picture.save(path, **save)
        assert Image.open(path).mode == picture.mode
        for given in (path, picture):
            image = stages.load_source(given)
            assert image.shape == portrait.shape and image.dtype == np.uint8, name
            source = analysed(talker, image)
            # the same face: crop regions agree to a few pixels on a 640x896 picture
            assert np.abs(np.subtract(source.region, portrait_source.region)).max() <= 12, name
            difference = np.abs(source.coeff - portrait_source.coeff)[0]
            assert difference[:70].max() < 0.1 and difference[70:].max() < 3, name  # 70: alignment px
    # an opaque alpha channel changes nothing at all
    image = stages.load_source(rgb.convert("RGBA"))
    np.testing.assert_array_equal(analysed(talker, image).coeff, portrait_source.coeff)


def test_jpeg_content_with_a_png_name_and_a_video_as_source(talker):
    path = MEDIA / "full_body_1.png"
    assert path.read_bytes()[:3] == b"\xff\xd8\xff"  # JPEG bytes behind the .png name
    image = stages.load_source(path)
    assert image.shape == (1200, 800, 3)
    x0, y0, x1, y1 = analysed(talker, image).region
    assert 0 <= x0 < x1 <= 800 and 0 <= y0 < y1 <= 1200

    frame = stages.load_source(REFERENCE_VIDEO)  # a video source: its first frame, as the original
    np.testing.assert_array_equal(frame, next(video.read_video_frames(REFERENCE_VIDEO, max_frames=1)))


def test_a_huge_array_is_downscaled_before_the_face_stage(talker, portrait):
    huge = np.asarray(Image.fromarray(portrait).resize((4286, 6000), Image.BICUBIC))
    image = stages.load_source(huge)
    assert max(image.shape[:2]) == 4096 and image.shape[1] == round(4286 * 4096 / 6000)
    x0, y0, x1, y1 = analysed(talker, image).region
    assert (x1 - x0) > 1000  # the face of a 4096-px picture, found at its own scale


@pytest.fixture(scope="module")
def two_faces() -> np.ndarray:
    """art_7 (512 px) on the left, the same portrait at half size on the right."""
    big = Image.open(MEDIA / "art_7.png").convert("RGB")
    canvas = Image.new("RGB", (832, 512), (255, 255, 255))
    canvas.paste(big, (0, 0))
    canvas.paste(big.resize((256, 256), Image.LANCZOS), (560, 128))
    return np.asarray(canvas)


def test_several_faces_largest_by_default_and_face_index(talker, two_faces, failing):
    centre = {}
    for index in (None, 0, 1):
        region = analysed(talker, two_faces, face_index=index).region
        centre[index] = (region[0] + region[2]) / 2
    assert centre[None] == centre[0] < 512 < 560 < centre[1] < 832
    failing(OptionError, "face_index 2 is out of range: 2 face", source=two_faces, face_index=2)


# -- audio ----------------------------------------------------------------------------------------------------

def test_missing_empty_corrupt_and_non_audio_files(failing, tmp_path):
    failing(AudioError, "not found", audio=tmp_path / "nope.wav")
    failing(AudioError, "folder", audio=tmp_path)
    zero = tmp_path / "zero.wav"
    zero.write_bytes(b"")
    failing(AudioError, "empty", audio=zero)
    no_samples = tmp_path / "no_samples.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0", str(no_samples))
    failing(AudioError, "no audio samples", audio=no_samples)
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    failing(AudioError, "garbage.wav", audio=garbage)
    picture = tmp_path / "picture.wav"
    picture.write_bytes((MEDIA / "happy.png").read_bytes())
    failing(AudioError, "is an image", audio=picture)
    mute_video = tmp_path / "mute.mp4"
    with video.VideoWriter(mute_video, (64, 64), fps=25) as writer:
        writer.write(np.zeros((3, 64, 64, 3), np.uint8))
    failing(AudioError, "mute.mp4", audio=mute_video)
    too_short = tmp_path / "short.wav"
    ffmpeg("-i", str(MEDIA / "RD_Radio31_000.wav"), "-t", "0.02", str(too_short))
    failing(AudioError, "too short", audio=too_short)


def test_no_audio_or_a_non_path(failing):
    failing(AudioError, "no driving audio", audio=None)
    failing(AudioError, "driven_audio must be a path", audio=123)


@pytest.mark.parametrize("seconds, frames", [(0.04, 1), (0.08, 2), (0.84, 21)])
def test_one_two_and_21_frame_audio(talker, portrait_source, speech_clip, seconds, frames):
    """The original crashes on these lengths (blink draws, PoseVAE chunking)."""
    generated = coefficients(talker, portrait_source, speech_clip(seconds))
    assert generated.shape == (frames, 70) and np.isfinite(generated).all()


def test_silent_audio_and_audio_from_a_video(talker, portrait_source, tmp_path):
    silent = tmp_path / "silent.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "0.5", str(silent))
    generated = coefficients(talker, portrait_source, silent)
    assert generated.shape == (12, 70) and np.isfinite(generated).all()

    clip = tmp_path / "talk.mp4"
    ffmpeg("-i", str(REFERENCE_VIDEO), "-t", "0.2", "-c:v", "libx264", "-c:a", "aac", str(clip))
    generated = coefficients(talker, portrait_source, clip)
    assert generated.shape[0] == pytest.approx(5, abs=1) and np.isfinite(generated).all()


@pytest.mark.slow
def test_three_minutes_of_audio_with_bounded_memory(talker, portrait_source, tmp_path):
    long = tmp_path / "three_minutes.wav"
    ffmpeg("-stream_loop", "-1", "-i", str(MEDIA / "RD_Radio31_000.wav"), "-t", "180", "-ac", "1", str(long))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    generated = coefficients(talker, portrait_source, long)
    assert generated.shape == (4500, 70) and np.isfinite(generated).all()
    # mel windows are 23 MB; the peak may not grow by more than a few hundred MB (no per-frame copies)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak_before
    assert grown < 600 * 2**20


# -- seeds, blinks, references --------------------------------------------------------------------------------

def test_seeds_and_blinks_on_the_coefficients(talker, portrait_source, speech_clip):
    clip = speech_clip(3.0)  # 75 frames: long enough for blinks
    first = coefficients(talker, portrait_source, clip, seed=11)
    np.testing.assert_array_equal(coefficients(talker, portrait_source, clip, seed=11), first)
    assert not np.allclose(coefficients(talker, portrait_source, clip, seed=12), first)
    no_blink = coefficients(talker, portrait_source, clip, seed=11, blink=False)
    np.testing.assert_array_equal(no_blink[:, 64:], first[:, 64:])  # blinks touch the expression only
    assert not np.allclose(no_blink[:, :64], first[:, :64])


def test_reference_videos_drive_pose_and_blinks(talker, portrait_source, speech_clip):
    clip = speech_clip(0.12)  # 3 frames: the reference is read for 3 frames only
    reference = references(talker, 3, ref_pose=str(REFERENCE_VIDEO))["ref_pose"]
    assert reference.shape == (3, 73)

    plain = coefficients(talker, portrait_source, clip, seed=7)
    posed = coefficients(talker, portrait_source, clip, seed=7, ref_pose=str(REFERENCE_VIDEO))
    np.testing.assert_allclose(posed[:, 64:70] - plain[:, 64:70], reference[:, 64:70] - reference[:1, 64:70],
                               atol=1e-5)
    np.testing.assert_array_equal(posed[:, :64], plain[:, :64])

    blinked = coefficients(talker, portrait_source, clip, seed=7, ref_eyeblink=str(REFERENCE_VIDEO))
    np.testing.assert_array_equal(blinked[:, 64:], plain[:, 64:])
    assert not np.allclose(blinked[:, :64], plain[:, :64])
    via_video = coefficients(talker, portrait_source, clip, seed=7, ref_video=str(REFERENCE_VIDEO),
                             ref_info="pose+blink")
    np.testing.assert_array_equal(via_video, coefficients(
        talker, portrait_source, clip, seed=7, ref_pose=str(REFERENCE_VIDEO), ref_eyeblink=str(REFERENCE_VIDEO)))


def test_reenacting_a_video_with_its_own_audio(talker, portrait_source, tmp_path):
    clip = tmp_path / "talk.mp4"
    ffmpeg("-i", str(REFERENCE_VIDEO), "-t", "0.12", "-c:v", "libx264", "-c:a", "aac", str(clip))
    reference = references(talker, None, ref_video=str(clip), ref_info="all")["ref_video"]
    generated = coefficients(talker, portrait_source, None, ref_video=str(clip), ref_info="all")
    frames = min(len(generated), len(reference))
    assert frames >= 2
    np.testing.assert_array_equal(generated[:frames], reference[:frames, :70])


def test_unusable_reference_videos(failing, tmp_path):
    failing(VideoError, "not found", ref_pose=str(tmp_path / "nope.mp4"))
    failing(VideoError, "no video stream", ref_eyeblink=str(MEDIA / "RD_Radio31_000.wav"))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    failing(VideoError, "empty", ref_video=str(empty), ref_info="pose")


# -- options --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, match", [
    ({"pose_style": 46}, "pose_style.*0 to 45"),
    ({"pose_style": -1}, "pose_style"),
    ({"batch_size": 0}, "batch_size.*1 to 256"),
    ({"preprocess": "zoom"}, "preprocess.*crop, extcrop, resize, full, extfull"),
    ({"size": "big"}, "size.*integer"),
    ({"size": 300}, "size.*256, 512"),
    ({"seed": "lucky"}, "seed"),
    ({"expression_scale": float("nan")}, "expression_scale.*finite"),
    ({"input_yaw": "left"}, "input_yaw.*list of numbers"),
    ({"input_yaw": []}, "input_yaw.*at least one"),
    ({"face_box": [10, 10, 5, 5]}, "face_box.*x0 < x1"),
    ({"landmarks": [[0, 0]] * 5}, "landmarks.*68"),
    ({"ref_info": "pose"}, "ref_info.*needs 'ref_video'"),
    ({"enhancer": "sharpen"}, "enhancer.*gfpgan"),
    ({"still": "maybe"}, "still.*true or false"),
    ({"pose_stlye": 3}, "unknown option.*pose_stlye"),
])
def test_bad_options(failing, options, match):
    failing(OptionError, match, **options)


# -- checkpoints ----------------------------------------------------------------------------------------------

@pytest.fixture
def closed_port_mirror(monkeypatch):
    """Downloads go to a loopback port nobody listens on: refused at once, as with no network."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SADTALKER_DOWNLOAD_BASE_URL", f"http://127.0.0.1:{port}/releases")


def test_missing_checkpoints_name_the_files_and_the_folder(closed_port_mirror, failing, tmp_path):
    folder = tmp_path / "no_checkpoints"
    folder.mkdir()
    started = time.perf_counter()
    error = failing(CheckpointNotFoundError, "SadTalker_V0.0.2_256.safetensors", talker_=SadTalker(folder, device="cpu"))
    assert time.perf_counter() - started < 10
    message = str(error)
    assert str(folder) in message and "mapping_00229-model.pth.tar" in message
    assert list(folder.iterdir()) == []  # no partial downloads


def test_512_without_its_checkpoint(closed_port_mirror, failing, checkpoints_256):
    before = sorted(p.name for p in checkpoints_256.iterdir())
    error = failing(CheckpointNotFoundError, "SadTalker_V0.0.2_512.safetensors", size=512)
    assert str(checkpoints_256) in str(error)
    assert sorted(p.name for p in checkpoints_256.iterdir()) == before
