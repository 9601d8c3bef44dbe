"""Audio decoding (every common container, through the bundled ffmpeg), frame maths, mel windows, and the
errors users get for bad input. Test files are made on the fly from the real speech clip."""

from __future__ import annotations

import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from golden import MEDIA
from sadtalker_core.motion import audio
from sadtalker_core.media import ffmpeg_io
from sadtalker_core.errors import AudioError, OptionError

SPEECH = MEDIA / "RD_Radio31_000.wav"
SECONDS = 2.0
FRAMES = int(SECONDS * 25)


def ffmpeg(*args: str) -> None:
    done = subprocess.run([ffmpeg_io.ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    """16-bit PCM wav of float samples in [-1, 1] (mono (n,) or (n, channels)), written by ffmpeg."""
    samples = np.asarray(samples, dtype="<f4")
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    done = subprocess.run([ffmpeg_io.ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "f32le",
                           "-ar", str(rate), "-ac", str(channels), "-i", "pipe:0", "-c:a", "pcm_s16le", str(path)],
                          input=samples.tobytes(), capture_output=True)
    assert done.returncode == 0, done.stderr
    return path


# name -> ffmpeg output arguments; all made from the first 2 s of the speech clip
FORMATS = {
    "mp3": ("-c:a", "libmp3lame", "-b:a", "128k"),
    "m4a": ("-c:a", "aac", "-b:a", "128k"),
    "ogg": ("-c:a", "libvorbis"),
    "flac": ("-c:a", "flac"),
    "extensible.wav": ("-c:a", "pcm_s24le"),  # > 16 bits per sample -> WAVE_FORMAT_EXTENSIBLE header
    "8k_mono.wav": ("-ar", "8000", "-ac", "1", "-c:a", "pcm_s16le"),
    "44k_stereo.wav": ("-ar", "44100", "-c:a", "pcm_s16le"),
    "48k_mono.wav": ("-ar", "48000", "-ac", "1", "-c:a", "pcm_s16le"),
    "48k_stereo.flac": ("-ar", "48000", "-c:a", "flac"),
    "16k_mono.wav": ("-ac", "1", "-c:a", "pcm_s16le"),
}
LOSSY = ("mp3", "m4a", "ogg", "8k_mono.wav")


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio_formats")
    files = {}
    for name, args in FORMATS.items():
        files[name] = folder / f"speech.{name}"
        ffmpeg("-t", str(SECONDS), "-i", str(SPEECH), *args, str(files[name]))
    files["with_audio.mp4"] = folder / "with_audio.mp4"
    ffmpeg("-f", "lavfi", "-i", f"color=c=gray:s=64x64:r=25:d={SECONDS}", "-t", str(SECONDS), "-i", str(SPEECH),
           "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
           "-shortest", str(files["with_audio.mp4"]))
    files["no_audio.mp4"] = folder / "no_audio.mp4"
    ffmpeg("-f", "lavfi", "-i", f"color=c=gray:s=64x64:r=25:d={SECONDS}", "-c:v", "libx264", "-preset",
           "ultrafast", str(files["no_audio.mp4"]))
    return files


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    """The first 2 s of the speech clip, decoded directly (16 kHz stereo 16-bit: int16/32768, averaged)."""
    return audio.load_audio(SPEECH)[: int(SECONDS * 16000)]


def _similarity(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))
    a, b = a[:n].astype(np.float64), b[:n].astype(np.float64)
    return float(a @ b / np.sqrt((a @ a) * (b @ b)))


@pytest.mark.parametrize("name", [*FORMATS, "with_audio.mp4"])
def test_every_format_decodes_to_the_same_speech(made, reference, name):
    wav = audio.load_audio(made[name])
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(audio.num_video_frames(len(wav)) - FRAMES) <= 1, len(wav)
    similarity = _similarity(wav, reference)
    assert similarity > (0.98 if name in LOSSY or name.endswith("mp4") else 0.999), similarity


def test_extensible_wav_header_really_is_extensible(made):
    header = made["extensible.wav"].read_bytes()[:64]
    fmt = header.index(b"fmt ")
    assert int.from_bytes(header[fmt + 8:fmt + 10], "little") == 0xFFFE


def test_lossless_formats_are_exact(made, reference):
    """FLAC and 24-bit WAV keep the 16-bit samples; mono files hold the same channel mean (within the
    int16 rounding of the mono encode)."""
    for name in ("flac", "extensible.wav"):
        np.testing.assert_array_equal(audio.load_audio(made[name]), reference)
    mono = audio.load_audio(made["16k_mono.wav"])
    assert np.abs(mono - reference).max() <= 1.01 / 32768


def test_resampling_is_soxr_hq(made):
    """Other rates go through libsoxr at 20-bit precision, the resampler librosa >= 0.10 uses by default."""
    soxr = pytest.importorskip("soxr")
    native = audio.load_audio(made["48k_stereo.flac"], sample_rate=48000)
    ours = audio.load_audio(made["48k_stereo.flac"])
    theirs = soxr.resample(native, 48000, 16000, quality="soxr_hq")
    assert len(ours) == len(theirs)
    assert np.abs(ours - theirs).max() < 1e-5


def test_other_output_rate(made):
    wav = audio.load_audio(made["16k_mono.wav"], sample_rate=8000)
    assert abs(len(wav) - SECONDS * 8000) <= 8000 / 25


# ---------------------------------------------------------------------------------------------------------
# bad input


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        audio.load_audio(tmp_path / "nope.wav")


def test_folder(tmp_path):
    with pytest.raises(AudioError, match="folder"):
        audio.load_audio(tmp_path)


def test_zero_bytes(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        audio.load_audio(tmp_path / "empty.wav")


def test_corrupt_bytes(tmp_path):
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="cannot decode audio from noise.wav") as error:
        audio.load_audio(path)
    assert "\n" not in str(error.value)


def test_truncated_wav_header(tmp_path):
    path = tmp_path / "cut.wav"
    path.write_bytes(SPEECH.read_bytes()[:30])
    with pytest.raises(AudioError, match="cut.wav"):
        audio.load_audio(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.mp3"
    path.write_text("this is not audio at all\n" * 20)
    with pytest.raises(AudioError, match="cannot decode audio from notes.mp3"):
        audio.load_audio(path)


def test_png_renamed_to_wav(tmp_path):
    path = tmp_path / "picture.wav"
    path.write_bytes((MEDIA / "happy.png").read_bytes())
    with pytest.raises(AudioError, match="is an image"):
        audio.load_audio(path)


def test_video_without_audio(made):
    with pytest.raises(AudioError, match="no audio track"):
        audio.load_audio(made["no_audio.mp4"])


def test_wav_with_zero_samples(tmp_path):
    path = write_wav(tmp_path / "nothing.wav", np.zeros(0, np.float32))
    with pytest.raises(AudioError, match="no audio samples"):
        audio.prepare_audio(path)


def test_shorter_than_one_frame(tmp_path):
    path = write_wav(tmp_path / "blip.wav", np.full(600, 0.1, np.float32))
    with pytest.raises(AudioError, match="too short"):
        audio.prepare_audio(path)


@pytest.mark.parametrize("frames", [1, 2, 21])
def test_very_short_clips_work(tmp_path, reference, frames):
    """1 and 2 frames, and exactly 21 frames (the official blink sampler crashes there)."""
    path = write_wav(tmp_path / f"{frames}.wav", reference[: frames * 640 + 100])
    features = audio.prepare_audio(path)
    assert features.num_frames == frames
    assert features.wav.shape == (frames * 640,)
    assert features.mel.shape == (1 + frames * 640 // 200, 80)
    assert features.windows.shape == (frames, 80, 16)
    assert features.duration_s == pytest.approx(frames / 25)
    assert np.isfinite(features.windows).all()


def test_silence(tmp_path):
    features = audio.prepare_audio(write_wav(tmp_path / "silence.wav", np.zeros(16000, np.float32)))
    assert features.num_frames == 25
    assert (features.mel == -4.0).all() and (features.windows == -4.0).all()


def test_long_audio_memory(tmp_path):
    """Three minutes: the STFT runs in blocks, so peak memory stays below twice the outputs' size."""
    path = tmp_path / "long.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:sample_rate=16000:duration=180", "-ac", "2", str(path))
    tracemalloc.start()
    try:
        features = audio.prepare_audio(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert features.num_frames == 180 * 25
    outputs = features.wav.nbytes + features.mel.nbytes + features.windows.nbytes
    assert peak < 2 * outputs, (peak, outputs)


# ---------------------------------------------------------------------------------------------------------
# frame maths and windows


def test_frame_counts():
    assert audio.num_video_frames(38400) == 60
    assert audio.num_video_frames(38399) == 59
    assert audio.num_video_frames(16000, fps=30) == 30
    assert audio.num_video_frames(0) == 0
    with pytest.raises(OptionError):
        audio.num_video_frames(100, fps=0)


def test_crop_or_pad():
    wav = np.arange(1000, dtype=np.float32)
    np.testing.assert_array_equal(audio.crop_or_pad(wav, 1), wav[:640])
    padded = audio.crop_or_pad(wav, 2)
    assert padded.shape == (1280,) and (padded[1000:] == 0).all()
    np.testing.assert_array_equal(padded[:1000], wav)
    assert audio.crop_or_pad(wav, 1, fps=30).shape == (533,)


def test_window_starts_official_formula():
    starts = audio.window_starts(10)
    np.testing.assert_array_equal(starts, [-6, -3, 0, 3, 6, 9, 12, 16, 19, 22])
    i = np.arange(100000)
    np.testing.assert_array_equal(audio.window_starts(len(i)), np.trunc(16 * (i - 2) / 5))


def _windows_by_loop(mel: np.ndarray, num_frames: int, fps: float) -> np.ndarray:
    out = []
    for i in range(num_frames):
        start = int(80.0 * ((i - 2) / float(fps)))
        rows = [min(max(start + k, 0), len(mel) - 1) for k in range(16)]
        out.append(mel[rows, :].T)
    return np.asarray(out, dtype=np.float32)


@pytest.mark.parametrize("n_mel, num_frames, fps", [(193, 60, 25), (7, 2, 25), (4, 1, 25), (300, 90, 30),
                                                     (5, 40, 25)])
def test_mel_windows_match_the_official_loop(n_mel, num_frames, fps):
    mel = np.random.default_rng(n_mel).normal(size=(n_mel, 80))
    windows = audio.mel_windows(mel, num_frames, fps)
    assert windows.dtype == np.float32 and windows.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(windows, _windows_by_loop(mel, num_frames, fps))


def test_silent_windows_and_idle_features():
    windows = audio.silent_mel_windows(7)
    assert windows.shape == (7, 80, 16) and windows.dtype == np.float32 and not windows.any()
    idle = audio.idle_features(50, fps=25)
    assert idle.silent and idle.num_frames == 50 and idle.windows.shape == (50, 80, 16)
    assert idle.duration_s == pytest.approx(2.0) and idle.wav.shape == (32000,)
    with pytest.raises(OptionError):
        audio.idle_features(0)


def test_mel_of_a_tone_peaks_in_the_right_band():
    """A 1 kHz tone lights the band whose centre is nearest 1 kHz (independent of the golden kit)."""
    t = np.arange(16000) / 16000
    mel = audio.mel_spectrogram((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    assert mel.shape == (81, 80)
    centres = audio._mel_to_hz(np.linspace(audio._hz_to_mel(55.0), audio._hz_to_mel(7600.0), 82))[1:-1]
    assert int(np.argmax(mel[40])) == int(np.argmin(np.abs(centres - 1000)))
    assert mel.max() <= 4.0 and mel.min() >= -4.0
