"""Streaming H.264 + AAC writer, reference-video readers and stream probing (bundled ffmpeg only)."""

from __future__ import annotations

import numpy as np
import pytest

import media_probe
from golden import MEDIA
from sadtalker_core.motion import audio
from sadtalker_core.media import video
from sadtalker_core.errors import Cancelled, FFmpegError, VideoError

CLIP = MEDIA / "RD_Radio31_000.wav"
REFERENCE_VIDEO = MEDIA / "WDA_KatieHill_000.mp4"


def smooth_frames(n: int, height: int, width: int) -> np.ndarray:
    """Soft moving gradients (what a codec keeps well), different in every frame."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for i in range(n):
        r = 128 + 100 * np.sin(x / 23 + i / 3)
        g = 128 + 100 * np.cos(y / 31 - i / 4)
        b = 128 + 60 * np.sin((x + y) / 40)
        frames.append(np.stack([r, g, b], -1))
    return np.rint(np.stack(frames)).astype(np.uint8)


def listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_writes_h264_aac_with_the_audio_duration(tmp_path):
    frames = smooth_frames(10, 256, 256)
    out = tmp_path / "clip.mp4"
    with video.VideoWriter(out, fps=25, audio=CLIP, duration=10 / 25, crf=18) as writer:
        writer.write(frames[:4])
        for frame in frames[4:]:
            writer.write(frame)
    assert listing(tmp_path) == ["clip.mp4"]
    summary = media_probe.probe_streams(out)
    v, a = summary["video"], summary["audio"]
    assert (v["codec"], v["pix_fmt"], v["width"], v["height"], v["fps"], v["frames"]) == \
        ("h264", "yuv420p", 256, 256, 25.0, 10)
    assert a["codec"] == "aac"
    assert a["sample_rate"] == 16000  # the source's own rate, not a fixed one
    assert abs(a["duration"] - 0.4) < 1 / 25
    assert abs(summary["duration"] - 0.4) < 1 / 25
    assert "h264" in media_probe.describe_streams(summary) and "aac" in media_probe.describe_streams(summary)

    back = np.stack(list(video.read_video_frames(out)))
    assert back.shape == frames.shape
    error = np.abs(back.astype(np.int16) - frames)
    assert error.mean() < 2.0 and np.percentile(error, 99) <= 8


def test_odd_size_is_padded_not_stretched(tmp_path):
    frames = smooth_frames(6, 257, 255)
    wav = audio.load_audio(CLIP)[: 6 * 640]
    out = tmp_path / "odd.mp4"
    with video.VideoWriter(out, (255, 257), fps=25, audio=wav, audio_sample_rate=16000) as writer:
        writer.write(frames)
    summary = media_probe.probe_streams(out)
    assert (summary["video"]["width"], summary["video"]["height"], summary["video"]["frames"]) == (256, 258, 6)
    assert abs(summary["audio"]["duration"] - 6 / 25) < 1 / 25
    back = np.stack(list(video.read_video_frames(out))).astype(np.int16)
    assert np.abs(back[:, :257, :255] - frames).mean() < 2.0  # same geometry: no rescale
    # the extra column and row repeat the edge instead of being black
    assert np.abs(back[:, :257, 255] - back[:, :257, 254]).mean() < 3
    assert np.abs(back[:, 257, :255] - back[:, 256, :255]).mean() < 3


def test_no_audio_and_other_fps(tmp_path):
    out = tmp_path / "silent.mp4"
    with video.VideoWriter(out, fps=30) as writer:
        writer.write(smooth_frames(3, 64, 96))
    info = video.video_info(out)
    assert (info.width, info.height, info.fps, info.n_frames, info.has_audio) == (96, 64, 30.0, 3, False)


def test_without_duration_the_sound_ends_with_the_video(tmp_path):
    out = tmp_path / "short.mp4"
    with video.VideoWriter(out, audio=CLIP) as writer:  # the clip is 8 s, the video 0.4 s
        writer.write(smooth_frames(10, 32, 32))
    summary = media_probe.probe_streams(out)
    assert abs(summary["audio"]["duration"] - 0.4) < 1 / 25
    assert summary["video"]["frames"] == 10


def test_torch_channels_first_batches(tmp_path):
    torch = pytest.importorskip("torch")
    frames = smooth_frames(2, 32, 48)
    out = tmp_path / "torch.mp4"
    with video.VideoWriter(out) as writer:
        writer.write(torch.from_numpy(frames).permute(0, 3, 1, 2))
    back = np.stack(list(video.read_video_frames(out)))
    assert back.shape == (2, 32, 48, 3)
    assert np.abs(back.astype(np.int16) - frames).mean() < 3.0


@pytest.mark.parametrize("error", [RuntimeError("boom"), Cancelled("stopped by the user")])
def test_exception_inside_the_writer_leaves_nothing(tmp_path, error):
    out = tmp_path / "never.mp4"
    with pytest.raises(type(error)):
        with video.VideoWriter(out, audio=CLIP, duration=1.0) as writer:
            writer.write(smooth_frames(3, 64, 64))
            process = writer._process
            raise error
    assert process.poll() is not None  # ffmpeg was stopped
    assert listing(tmp_path) == []


def test_no_frames_is_an_error_and_leaves_nothing(tmp_path):
    with pytest.raises(FFmpegError, match="no frames"):
        with video.VideoWriter(tmp_path / "empty.mp4"):
            pass
    assert listing(tmp_path) == []


def test_frame_size_change_is_refused(tmp_path):
    with pytest.raises(ValueError, match="differs"):
        with video.VideoWriter(tmp_path / "sizes.mp4") as writer:
            writer.write(smooth_frames(1, 64, 64))
            writer.write(smooth_frames(1, 64, 66))
    assert listing(tmp_path) == []


def test_wrong_dtype_is_refused(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        with video.VideoWriter(tmp_path / "float.mp4") as writer:
            writer.write(np.zeros((8, 8, 3), np.float32))
    assert listing(tmp_path) == []


def test_ffmpeg_failure_is_one_clear_line(tmp_path):
    """An audio 'file' ffmpeg cannot read makes it exit: the writer reports why and cleans up."""
    bad = tmp_path / "inputs"
    bad.mkdir()
    (bad / "fake.wav").write_text("not audio\n" * 10)
    out_dir = tmp_path / "out"
    with pytest.raises(FFmpegError) as error:
        with video.VideoWriter(out_dir / "clip.mp4", audio=bad / "fake.wav") as writer:
            for _ in range(20):
                writer.write(smooth_frames(1, 256, 256))
    message = str(error.value)
    assert "\n" not in message and "Invalid data" in message
    assert listing(out_dir) == []


def test_missing_audio_file_to_mux(tmp_path):
    with pytest.raises(FFmpegError, match="not found"):
        with video.VideoWriter(tmp_path / "clip.mp4", audio=tmp_path / "gone.wav") as writer:
            writer.write(smooth_frames(1, 16, 16))
    assert listing(tmp_path) == []


def test_unsupported_extension():
    with pytest.raises(ValueError, match="unsupported"):
        video.VideoWriter("clip.gif")


# ---------------------------------------------------------------------------------------------------------
# reading reference videos


def test_reference_video_info_and_frames():
    info = video.video_info(REFERENCE_VIDEO)
    assert (info.width, info.height, info.fps, info.n_frames, info.has_audio) == (512, 512, 25.0, 200, True)
    assert info.duration == pytest.approx(8.0)
    frames = list(video.read_video_frames(REFERENCE_VIDEO, max_frames=3))
    assert len(frames) == 3
    assert all(f.shape == (512, 512, 3) and f.dtype == np.uint8 and f.flags.writeable for f in frames)
    assert frames[0].std() > 10  # real picture content


def test_stopping_early_releases_ffmpeg():
    frames = video.read_video_frames(REFERENCE_VIDEO)
    first = next(frames)
    frames.close()
    assert first.shape == (512, 512, 3)


def test_probe_reference_video():
    summary = media_probe.probe_streams(REFERENCE_VIDEO)
    assert summary["video"]["codec"] == "mpeg4" and summary["video"]["frames"] == 200
    assert summary["audio"]["codec"] == "aac" and summary["audio"]["sample_rate"] == 16000
    assert summary["audio"]["duration"] == pytest.approx(8.0, abs=0.05)


def test_video_errors(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        video.read_video_frames(tmp_path / "gone.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        video.video_info(tmp_path / "empty.mp4")
    (tmp_path / "text.mp4").write_text("hello\n" * 50)
    with pytest.raises(VideoError, match="not a readable video"):
        video.video_info(tmp_path / "text.mp4")
    with pytest.raises(VideoError, match="no video stream"):
        video.read_video_frames(CLIP)
    assert issubclass(VideoError, ValueError)
