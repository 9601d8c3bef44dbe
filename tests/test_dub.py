"""Dubbing a video (``SadTalker.generate(source_video=...)``, ``dub.py``): a 3-frame cut of a real video at
reduced size (frame 2 blanked: no face), synthetic weights, real dlib landmarks, lossless encodes.

Comparisons are against the input frames pushed through the same lossless writer (crf 0): the writer's
RGB -> yuv420p conversion is lossy on its own and mixes 2x2 chroma blocks, so pixels within ``MARGIN``
of the paste box may differ from the input's even where the output took no rendered pixel.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import cv2
import numpy as np
import pytest

import golden
import media_probe
from host_double.fixtures import make_host  # noqa: F401  (fixture)
from sadtalker_core import dub
from sadtalker_core.render import paste
from sadtalker_core.media import video
from sadtalker_core.errors import InputError, NoFaceError, OptionError, VideoError
from sadtalker_core.face import crop, landmarks
from sadtalker_core.options import GenerationConfig

DLIB = {"face_detector": "dlib"}
FPS = 25
#: canvas of the test clip (width, height) and where the shrunk video frame sits in it
CANVAS = (320, 240)
FACE_SIDE = 176
#: per-frame marker square (x0, y0, side) outside any face, its grey level tells the source frame
MARKER = (296, 8, 16)
MARGIN = 8


def marker_level(index: int) -> int:
    return 40 + 70 * index


def decoded(path) -> np.ndarray:
    return np.stack(list(video.read_video_frames(path)))


def write(path, frames, audio=None, duration=None) -> None:
    with video.VideoWriter(path, fps=FPS, crf=0, audio=audio, duration=duration) as writer:
        writer.write(np.stack(frames))


@pytest.fixture(scope="module")
def clip(speech_clip, tmp_path_factory):
    """(path, decoded frames) of the 3-frame test clip with sound; frame 2 is blank (no face)."""
    source = list(video.read_video_frames(golden.MEDIA / "WDA_KatieHill_000.mp4", max_frames=3))
    frames = []
    for i, frame in enumerate(source):
        canvas = np.full((CANVAS[1], CANVAS[0], 3), 90, np.uint8)
        if i < 2:
            canvas[40:40 + FACE_SIDE, 20:20 + FACE_SIDE] = cv2.resize(frame, (FACE_SIDE, FACE_SIDE),
                                                                      interpolation=cv2.INTER_AREA)
        x, y, side = MARKER
        canvas[y:y + side, x:x + side] = marker_level(i)
        frames.append(canvas)
    path = tmp_path_factory.mktemp("dub_clip") / "clip.mp4"
    write(path, frames, audio=speech_clip(0.12), duration=0.12)
    return path, decoded(path)


def tracked_boxes(frames) -> list:
    """The paste box of each frame as dubbing finds it (same tracker, smoothing, crop), None without a face."""
    tracker = dub.FaceTracker()
    points, found = [], []
    for frame in frames:
        lm = tracker(landmarks.detect_faces(frame, "dlib"))
        found.append(lm is not None)
        points.append(lm if lm is not None else np.zeros((68, 2), np.float32))
    points = dub.smooth_tracks(np.stack(points), np.array(found))
    boxes = [paste.paste_box(crop.crop_face(f, lm, "full", 256).crop_info, "full") if ok else None
             for f, lm, ok in zip(frames, points, found)]
    return boxes, points


def outside(box, shape, margin=MARGIN) -> np.ndarray:
    mask = np.ones(shape[:2], bool)
    x1, y1, x2, y2 = box
    mask[max(y1 - margin, 0):y2 + margin, max(x1 - margin, 0):x2 + margin] = False
    return mask


def region(points: np.ndarray, pad: int = 2) -> tuple[slice, slice]:
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - pad
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + pad
    return slice(y0, y1), slice(x0, x1)


def check_file(result, frames: int, size: tuple[int, int]) -> None:
    summary = media_probe.probe_streams(result.video_path)
    assert summary["video"]["frames"] == frames == result.info["num_frames"]
    assert summary["video"]["fps"] == FPS == result.info["fps"]
    assert (summary["video"]["width"], summary["video"]["height"]) == size
    assert summary["audio"]["duration"] == pytest.approx(frames / FPS, abs=0.01)


# -- whole pipeline (renders) ------------------------------------------------------------------------------

@pytest.mark.slow
def test_longer_audio_ping_pongs_with_the_mouth_only_region(sadtalker_256, clip, speech_clip, tmp_path):
    path, frames = clip
    result = sadtalker_256.generate(source_video=path, driven_audio=speech_clip(0.2), result_dir=tmp_path,
                                    crf=0, batch_size=4, seed=3, **DLIB)
    assert [p.name for p in tmp_path.iterdir()] == [result.video_path.name]
    check_file(result, frames=5, size=CANVAS)
    order = dub.pingpong_indices(5, 3)
    assert order.tolist() == [0, 1, 2, 1, 0]
    info = result.info
    assert info["source_video_frames"] == 3 and info["frames_with_face"] == 2
    assert info["frames_passed_through"] == 1 and info["video_loops"] is True
    assert info["output_size"] == list(CANVAS) and set(info["seconds"]) >= {"face", "coeffs", "render"}

    out = decoded(result.video_path)
    reference = tmp_path / "reference.mp4"
    write(reference, [frames[i] for i in order])
    expected = decoded(reference)
    boxes, points = tracked_boxes(frames)
    assert boxes[2] is None and boxes[0] is not None and boxes[1] is not None
    x, y, side = MARKER
    for t, i in enumerate(order):
        # the marker says which input frame each output frame shows: forward, then backward
        assert np.all(out[t, y:y + side, x:x + side] == expected[t, y:y + side, x:x + side])
        assert abs(int(out[t, y + side // 2, x + side // 2, 0]) - marker_level(i)) <= 2
        if boxes[i] is None:
            assert np.array_equal(out[t], expected[t])  # a frame without a face passes through untouched
            continue
        keep = outside(boxes[i], out.shape[1:])
        assert np.array_equal(out[t][keep], expected[t][keep])
        mouth = region(points[i][48:68])
        assert np.abs(out[t][mouth].astype(int) - expected[t][mouth]).mean() > 1  # the mouth was replaced
        eyes = region(points[i][36:48])
        assert np.array_equal(out[t][eyes], expected[t][eyes])  # mouth_only: the video's own eyes stay


@pytest.mark.slow
def test_shorter_audio_cuts_and_whole_face_mode(sadtalker_256, clip, speech_clip, tmp_path):
    path, frames = clip
    result = sadtalker_256.generate(source_video=path, driven_audio=speech_clip(0.08), result_dir=tmp_path,
                                    crf=0, mouth_only=False, blend="none", seed=3, **DLIB)
    check_file(result, frames=2, size=CANVAS)
    assert result.info["video_loops"] is False and result.info["frames_passed_through"] == 0
    out = decoded(result.video_path)
    reference = tmp_path / "reference.mp4"
    write(reference, frames[:2])
    expected = decoded(reference)
    boxes, points = tracked_boxes(frames)
    for t in range(2):
        keep = outside(boxes[t], out.shape[1:])
        assert np.array_equal(out[t][keep], expected[t][keep])
        eyes = region(points[t][36:48])
        assert np.abs(out[t][eyes].astype(int) - expected[t][eyes]).mean() > 1  # the whole face re-rendered


# -- bad inputs: clear errors, no files ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def faceless(tmp_path_factory):
    path = tmp_path_factory.mktemp("faceless") / "grey.mp4"
    write(path, [np.full((64, 96, 3), 120, np.uint8)] * 3)
    return path


@pytest.fixture(scope="module")
def no_frames(faceless, tmp_path_factory):
    """An MP4 whose header describes a video stream but whose frame data is missing (zero frames)."""
    data = faceless.read_bytes()
    position = 0
    while data[position + 4:position + 8] != b"mdat":  # walk the top-level boxes to the media data
        position += int.from_bytes(data[position:position + 4], "big")
    path = tmp_path_factory.mktemp("zero") / "zero.mp4"
    path.write_bytes(data[:position + 8])
    assert video.video_info(path).n_frames == 0
    return path


@pytest.mark.slow
@pytest.mark.parametrize("case, error, match", [
    ("text", VideoError, "not a readable video"),
    ("empty", VideoError, "empty"),
    ("no_frames", VideoError, "zero.mp4 has no video frames"),
    ("faceless", NoFaceError, "no face was found in any of the 3 frames"),
])
def test_bad_videos_fail_clearly_and_leave_no_files(sadtalker_256, speech_clip, faceless, no_frames, tmp_path,
                                                   case, error, match):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    if case == "text":
        source = inputs / "notes.mp4"
        source.write_text("not a video at all\n" * 20)
    elif case == "empty":
        source = inputs / "empty.mp4"
        source.touch()
    else:
        source = {"faceless": faceless, "no_frames": no_frames}[case]
    results = tmp_path / "results"
    with pytest.raises(error, match=match):
        # 0.12 s at the video's 25 fps: all 3 of its frames are needed
        sadtalker_256.generate(source_video=source, driven_audio=speech_clip(0.12), result_dir=results, **DLIB)
    assert not results.exists()


def test_exactly_one_source(tmp_path):
    from sadtalker_core.pipeline import SadTalker

    talker = SadTalker.__new__(SadTalker)  # the check comes before anything is loaded
    with pytest.raises(InputError, match="not both"):
        talker.generate(golden.MEDIA / "happy.png", "speech.wav", source_video="clip.mp4", result_dir=tmp_path)
    with pytest.raises(InputError, match="none was given"):
        talker.generate(None, "speech.wav", result_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_options_that_the_video_decides_are_refused():
    with pytest.raises(OptionError, match="ref_pose, input_yaw cannot be used with source_video"):
        dub.check_options(GenerationConfig.from_options(ref_pose="x.mp4", input_yaw=[10.0]))
    dub.check_options(GenerationConfig.from_options(ref_pose=None, still=True))


def test_every_option_is_placed_once_for_dubbing():
    from sadtalker_core.options import (DUB_ONLY_OPTIONS, DUB_OPTIONS, IGNORED_WITH_VIDEO, NOT_WITH_VIDEO,
                                        OPTIONS, OPTIONS_BY_NAME, PORTRAIT_OPTIONS)

    named = DUB_ONLY_OPTIONS + NOT_WITH_VIDEO + IGNORED_WITH_VIDEO
    assert set(named) <= set(OPTIONS_BY_NAME) and len(set(named)) == len(named)  # no typo, no name twice
    # check_options sees "given" as "not None": an option with a default could never be refused
    assert all(OPTIONS_BY_NAME[name].optional for name in NOT_WITH_VIDEO)
    for name in NOT_WITH_VIDEO:
        with pytest.raises(OptionError, match=f"{name} cannot be used with source_video"):
            # any value that is set counts (dataclasses.replace skips the value checks this test is not about)
            dub.check_options(dataclasses.replace(GenerationConfig(), **{name: "x"}))
    dub_names = [o.name for o in DUB_OPTIONS]
    assert set(DUB_ONLY_OPTIONS) <= set(dub_names) and not set(dub_names) & set(NOT_WITH_VIDEO + IGNORED_WITH_VIDEO)
    assert not {o.name for o in PORTRAIT_OPTIONS} & set(DUB_ONLY_OPTIONS)
    # every option acts on a portrait, a dub, or both
    assert {o.name for o in PORTRAIT_OPTIONS} | set(dub_names) == {o.name for o in OPTIONS}


# -- the pieces ------------------------------------------------------------------------------------------------

def test_pingpong_order_has_no_jump():
    assert dub.pingpong_indices(9, 4).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert dub.pingpong_indices(3, 5).tolist() == [0, 1, 2]
    assert dub.pingpong_indices(4, 1).tolist() == [0, 0, 0, 0]
    steps = np.abs(np.diff(dub.pingpong_indices(200, 7)))
    assert steps.max() == 1


def test_track_smoothing_removes_jitter_and_keeps_runs_apart():
    rng = np.random.default_rng(0)
    base = rng.uniform(50, 150, (68, 2)).astype(np.float32)
    points = np.stack([base + rng.normal(0, 2, base.shape) for _ in range(30)]).astype(np.float32)
    found = np.ones(30, bool)
    found[15] = False
    points[16:] += 500  # a different place after the lost frame
    smooth = dub.smooth_tracks(points, found)
    assert np.abs(smooth[:15] - base).std() < 0.6 * np.abs(points[:15] - base).std()
    assert np.all(smooth[16:] > 400)  # not pulled towards the first run
    assert np.array_equal(smooth[15], points[15])


def test_tracker_follows_the_overlapping_face():
    def face(x):
        return landmarks.Face((x, 0.0, x + 50.0, 50.0), np.full((68, 2), x, np.float32), 1.0)

    tracker = dub.FaceTracker()
    assert tracker([face(100), face(0)])[0, 0] == 100  # the first frame takes the first (largest) face
    assert tracker([face(0), face(104)])[0, 0] == 104  # then the face overlapping the last one
    assert tracker([face(0)]) is None  # the other person only: the tracked face is lost in this frame
    assert tracker([]) is None


def test_mouth_mask_covers_the_mouth_not_the_eyes():
    first = next(iter(video.read_video_frames(golden.MEDIA / "WDA_KatieHill_000.mp4", max_frames=1)))
    lm = landmarks.detect_faces(cv2.resize(first, (240, 240)), "dlib")[0].landmarks68 / 2
    mask = dub.mouth_mask(lm, 120, 120)
    mouth = lm[48:68].mean(axis=0).round().astype(int)
    assert mask[mouth[1], mouth[0]] > 0.99
    for point in lm[36:48].round().astype(int):
        assert mask[point[1], point[0]] == 0


def test_frame_store_reads_back_in_any_order():
    store = dub.FrameStore()
    frames = [np.full((6, 4, 3), i, np.uint8) for i in range(5)]
    for frame in frames:
        store.append(frame)
    try:
        assert [int(store[i][0, 0, 0]) for i in (4, 0, 3, 3, 1)] == [4, 0, 3, 3, 1]
        with pytest.raises(VideoError, match="changes frame size"):
            store.append(np.zeros((2, 2, 3), np.uint8))
    finally:
        store.close()


# -- front ends --------------------------------------------------------------------------------------------------

def test_cli_source_video_flag(tmp_path):
    from sadtalker_core.frontends.cli import build_parser, options_from_args
    from sadtalker_core.options import validate_options

    args = build_parser().parse_args(["--source_video", "clip.mp4", "--no-mouth_only", "--video_audio_volume",
                                      "0.3"])
    options = validate_options(options_from_args(args))
    assert args.source_video == "clip.mp4" and args.source_image is None
    assert options["mouth_only"] is False and options["video_audio_volume"] == 0.3
    assert validate_options(options_from_args(build_parser().parse_args([])))["mouth_only"] is True


@pytest.mark.slow
def test_cli_refuses_a_video_that_is_not_one(checkpoints_256, speech_clip, tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("nothing")
    proc = subprocess.run([sys.executable, "-m", "sadtalker_core", "--source_video", str(bad), "--driven_audio",
                           str(speech_clip(0.04)), "--checkpoint_dir", str(checkpoints_256), "--result_dir",
                           str(tmp_path / "results"), "--cpu"], cwd=golden.REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and "bad.mp4 is not a readable video" in proc.stderr
    assert not (tmp_path / "results").exists()


def test_rest_video_field_and_its_alias(tmp_path):
    import base64

    from sadtalker_core.frontends.api import RequestError, parse_generate_request
    from test_api import _png_b64, _wav_b64

    clip_bytes = (golden.MEDIA / "WDA_KatieHill_000.mp4").read_bytes()[:4096]  # only stored, never decoded here
    video_b64 = base64.b64encode(clip_bytes).decode()
    image, audio, config, source_video = parse_generate_request(
        {"source_video": video_b64, "audio": _wav_b64(), "mouth_only": False}, tmp_path)
    assert image is None and source_video.suffix == ".mp4" and source_video.read_bytes() == clip_bytes
    assert audio.suffix == ".wav" and config.mouth_only is False
    with pytest.raises(RequestError) as both:
        parse_generate_request({"video": video_b64, "image": _png_b64(), "audio": _wav_b64()}, tmp_path)
    assert both.value.status == 422 and both.value.field == "video" and "not both" in both.value.message
    with pytest.raises(RequestError) as neither:
        parse_generate_request({"audio": _wav_b64()}, tmp_path)
    assert neither.value.field == "image" and "'video' to dub" in neither.value.message


def test_app_passes_the_video_to_dub(tmp_path):
    from host_double.fixtures import StubTalker
    from sadtalker_core.frontends.app import build_app
    from test_webui_extension import stub_checkpoints

    talkers = []

    def factory(checkpoint_dir, device, dtype):
        talkers.append(StubTalker(checkpoint_dir, device, dtype))
        return talkers[-1]

    parts = build_app(stub_checkpoints(tmp_path / "ckpt"), tmp_path / "out", talker_factory=factory)

    def click(image, source_video):
        given = {"source_image": image, "audio": "a.wav", "source_video": source_video, "mouth_only": False}
        # the app's Generate streams live previews; its last update holds (preview, video, crop, folder, info)
        *_, last = parts.generate(*(given.get(getattr(c, "elem_id", "")[len("sadtalker_"):], c.value)
                                    for c in parts.inputs))
        return last[1:]

    video, _, _, info = click(None, "clip.mp4")
    call = talkers[0].calls[0]
    assert call["source_video"] == "clip.mp4" and call["source_image"] is None
    assert call["options"]["mouth_only"] is False and "Saved" in info
    assert "not both" in click("face.png", "clip.mp4")[3]
    assert "or a video to dub" in click(None, None)[3]
    assert len(talkers[0].calls) == 1


def test_the_videos_sound_mixed_under_the_speech_follows_the_ping_pong(clip, tmp_path):
    import wave

    from sadtalker_core.motion import audio

    speech = tmp_path / "silence.wav"
    with wave.open(str(speech), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\x00\x00" * 1600)  # 0.1 s: shorter than the output, padded with silence
    path, _ = clip
    mixed = dub._mixed_track(speech, path, num_output=5, num_frames=3, fps=FPS, volume=0.5)
    per_frame = 48000 // FPS
    under = audio.load_audio(path, 48000)
    assert mixed.shape == (5 * per_frame,)
    # forward over frames 0..2, then backward from frame 2's start: a triangle with no jump
    assert np.array_equal(mixed[:2 * per_frame], 0.5 * under[:2 * per_frame])
    backward = mixed[2 * per_frame:4 * per_frame]
    assert np.array_equal(backward[1:], 0.5 * under[2 * per_frame - 1:0:-1][:len(backward) - 1])


@pytest.mark.host
def test_rest_dub_job_reaches_the_pipeline(make_host, tmp_path):
    import base64

    from fastapi.testclient import TestClient

    from host_double.fixtures import use_stub_talker
    from test_api import _wav_b64
    from test_webui_extension import stub_checkpoints

    host = make_host(args="--api", config={"sadtalker_checkpoint_dir": stub_checkpoints(tmp_path / "ckpt")})
    client, talkers = TestClient(host.start()), use_stub_talker()
    video_b64 = base64.b64encode((golden.MEDIA / "WDA_KatieHill_000.mp4").read_bytes()[:4096]).decode()
    response = client.post("/sadtalker/v1/generate", json={"source_video": video_b64, "audio": _wav_b64(),
                                                            "mouth_only": False})
    assert response.status_code == 200, response.text
    call = talkers[0].calls[0]
    assert call["source_image"] is None and call["source_video"].name == "video.mp4"
    assert call["options"]["mouth_only"] is False
