"""Driving audio -> what the motion networks read: 16 kHz mono samples, the official normalised log-mel
spectrogram, and one (80, 16) mel window per video frame.

Decoding goes through imageio-ffmpeg's ffmpeg (any container or codec it knows; the audio track of a
video too), piped as float32 WAV: no temporary files. The channel mean is taken here, in float32, as
librosa does, so a 16 kHz 16-bit file gives exactly the official samples (int16 / 32768, averaged).
Other rates are resampled inside ffmpeg with libsoxr at its default 20-bit precision, the same filter as
librosa >= 0.10's default ``soxr_hq`` (agreement about 3e-7 on speech).

The mel spectrogram (pre-emphasis, STFT, Slaney filterbank, dB, symmetric normalisation) is the official
one, re-written in numpy without librosa (whose first call spends ~10 s compiling with numba).
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import AudioError, OptionError
from ..media import ffmpeg_io

SAMPLE_RATE = 16000
N_FFT = 800
HOP_LENGTH = 200
N_MELS = 80
F_MIN, F_MAX = 55.0, 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB, REF_LEVEL_DB, MAX_ABS_VALUE = -100.0, 20.0, 4.0
#: mel frames per second (16000 / 200)
MEL_RATE = SAMPLE_RATE // HOP_LENGTH
#: mel frames per per-video-frame window (200 ms)
WINDOW_STEPS = 16

_READ_CHUNK = 1 << 20
_IMAGE_FORMATS = ("image2", "_pipe", "gif", "apng", "webp")


@dataclass
class AudioFeatures:
    """Everything the pipeline takes from the driving audio.

    ``wav``: samples cropped/padded to whole video frames (float32, mono, ``sample_rate``);
    ``mel``: (n_mel_frames, 80) float64 normalised log-mel; ``windows``: (num_frames, 80, 16) float32 mel
    window per video frame; ``duration_s`` = num_frames / fps, the length of the video to make."""

    wav: np.ndarray
    num_frames: int
    mel: np.ndarray
    windows: np.ndarray
    duration_s: float
    fps: float = 25.0
    sample_rate: int = SAMPLE_RATE
    silent: bool = False


# --------------------------------------------------------------------------------------------------------
# decoding


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"audio file not found: {path}. Check the path (or upload the audio again).")
    if path.is_dir():
        raise AudioError(f"{path} is a folder, not an audio file; give the path of a WAV, MP3, M4A, OGG or "
                         "FLAC file.")
    if path.stat().st_size == 0:
        raise AudioError(f"audio file {path} is empty (0 bytes); the upload or copy probably failed, provide "
                         "the file again.")


def _diagnose(path: Path, log: str) -> AudioError:
    """Why ffmpeg produced no audio, in words: the file's own stream report tells image/video/garbage apart."""
    report = ffmpeg_io.parse_report(ffmpeg_io.read_report(path))
    has_streams = report["video"] or report["audio"]
    if has_streams and not report["audio"]:
        fmt = report["format"] or ""
        if any(key in fmt for key in _IMAGE_FORMATS):
            return AudioError(f"{path.name} is an image ({fmt.replace('_pipe', '')}), not audio; give a speech "
                              "file (WAV, MP3, M4A, OGG, FLAC) or a video with a sound track.")
        return AudioError(f"{path.name} has no audio track (its streams: "
                          f"{', '.join(v['codec'] for v in report['video']) or 'none'}); give a file that "
                          "contains speech.")
    return AudioError(f"cannot decode audio from {path.name}: {ffmpeg_io.summarise_log(log, path)}. The file is "
                      "damaged or not audio; convert it to WAV or MP3 and try again.")


def _read_exact(stream, size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) != size:
        raise EOFError
    return data


def _read_wav_header(stream) -> int:
    """Consumes the WAV header ffmpeg writes into a pipe (sizes unknown there) and returns the channel count."""
    riff = _read_exact(stream, 12)
    if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise EOFError
    channels = None
    while True:
        chunk_id, size = _read_exact(stream, 4), int.from_bytes(_read_exact(stream, 4), "little")
        if chunk_id == b"data":
            if channels is None:
                raise EOFError
            return channels
        body = _read_exact(stream, size + (size & 1))
        if chunk_id == b"fmt ":
            channels = int.from_bytes(body[2:4], "little")


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decodes the first audio stream of any file ffmpeg reads -> float32 mono at ``sample_rate``.

    The channel mean is computed in float32 from ffmpeg's float32 samples (the librosa/official way);
    resampling (only when the file's rate differs) uses libsoxr at 20-bit precision (= soxr_hq)."""
    path = Path(path)
    _check_file(path)
    command = [ffmpeg_io.ffmpeg_exe(), *ffmpeg_io.QUIET, "-i", os.fspath(path), "-map", "0:a:0",
               "-vn", "-sn", "-dn", "-af", f"aresample={int(sample_rate)}:resampler=soxr",
               "-c:a", "pcm_f32le", "-map_metadata", "-1", "-fflags", "+bitexact", "-f", "wav", "pipe:1"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = ffmpeg_io.LogDrain(process.stderr)
    pieces: list[np.ndarray] = []
    channels = None
    try:
        try:
            channels = _read_wav_header(process.stdout)
        except EOFError:
            pass
        if channels:
            frame_bytes = 4 * channels
            chunk = _READ_CHUNK - _READ_CHUNK % frame_bytes
            rest = b""
            while True:
                data = process.stdout.read(chunk)
                if not data:
                    break
                data = rest + data
                usable = len(data) - len(data) % frame_bytes
                rest = data[usable:]
                samples = np.frombuffer(data[:usable], dtype="<f4").reshape(-1, channels)
                pieces.append(samples[:, 0].copy() if channels == 1 else samples.mean(axis=1, dtype=np.float32))
        returncode = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    if returncode != 0 or not channels:
        raise _diagnose(path, log.text())
    wav = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if wav.size == 0:
        raise AudioError(f"{path.name} contains no audio samples (0 s of sound); give a file with speech in it.")
    if not np.isfinite(wav).all():
        raise AudioError(f"{path.name} contains invalid samples (NaN or infinity); re-export it as 16-bit WAV.")
    return wav.astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------------------
# frames


def _check_fps(fps: float) -> float:
    fps = float(fps)
    if not np.isfinite(fps) or fps <= 0:
        raise OptionError(f"fps must be a positive number, got {fps}; use 25 (the rate SadTalker was trained at).")
    return fps


def num_video_frames(n_samples: int, fps: float = 25.0, sample_rate: int = SAMPLE_RATE) -> int:
    """Whole video frames in ``n_samples``: official ``int(len / (sr / fps))``, written as
    ``int(len * fps / sr)`` (identical at 25 fps; avoids losing a frame to rounding at e.g. 30 fps)."""
    return int(n_samples * _check_fps(fps) / sample_rate)


def crop_or_pad(wav: np.ndarray, num_frames: int, fps: float = 25.0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``wav`` cut (or zero-padded) to exactly ``num_frames`` video frames of samples."""
    length = int(num_frames * sample_rate / _check_fps(fps))
    if len(wav) >= length:
        return wav[:length]
    return np.pad(wav, (0, length - len(wav)))


# --------------------------------------------------------------------------------------------------------
# mel spectrogram


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale: linear below 1 kHz (200/3 Hz per mel), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    mel = hz / f_sp
    log_part = hz >= min_log_hz
    return np.where(log_part, min_log_mel + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    hz = f_sp * mel
    log_part = mel >= min_log_mel
    return np.where(log_part, min_log_hz * np.exp(logstep * (np.maximum(mel, min_log_mel) - min_log_mel)), hz)


@functools.lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    """(80, 401) Slaney-normalised triangular filterbank, float32 like librosa's (rounded to float32 before
    the area normalisation, then normalised in float64 and rounded again)."""
    fft_freqs = np.fft.rfftfreq(N_FFT, d=1.0 / SAMPLE_RATE)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), N_MELS + 2))
    widths = np.diff(edges)
    offsets = edges[:, None] - fft_freqs[None, :]
    basis = np.zeros((N_MELS, len(fft_freqs)), dtype=np.float32)
    for band in range(N_MELS):
        rising = -offsets[band] / widths[band]
        falling = offsets[band + 2] / widths[band + 1]
        basis[band] = np.maximum(0.0, np.minimum(rising, falling))
    basis *= (2.0 / (edges[2:N_MELS + 2] - edges[:N_MELS]))[:, None]
    basis.setflags(write=False)
    return basis


def mel_spectrogram(wav: np.ndarray, block_frames: int = 1024) -> np.ndarray:
    """Official SadTalker/Wav2Lip normalised log-mel of 16 kHz samples -> (1 + len // 200, 80) float64.

    Pre-emphasis 0.97, STFT (n_fft 800, hop 200, periodic Hann, centred with 400 zeros each side),
    magnitude, Slaney filterbank, ``20 log10(max(1e-5, M)) - 20``, ``clip(8 (S + 100) / 100 - 4, -4, 4)``.
    Computed ``block_frames`` STFT frames at a time so long audio needs little memory."""
    x = np.asarray(wav).reshape(-1)
    # pre-emphasis in float64 straight into the zero-padded STFT input (one signal-sized buffer)
    pad = N_FFT // 2
    padded = np.zeros(len(x) + 2 * pad, dtype=np.float64)
    if x.size:
        emphasised = padded[pad:pad + len(x)]
        emphasised[0] = x[0]
        np.multiply(x[:-1], -PREEMPHASIS, out=emphasised[1:], dtype=np.float64)
        np.add(emphasised[1:], x[1:], out=emphasised[1:], dtype=np.float64)
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)
    basis_t = _mel_basis().astype(np.float64).T
    mel = np.empty((frames.shape[0], N_MELS), dtype=np.float64)
    for start in range(0, frames.shape[0], block_frames):
        spectrum = np.abs(np.fft.rfft(frames[start:start + block_frames] * window, axis=-1))
        mel[start:start + block_frames] = spectrum @ basis_t
    min_level = np.exp(MIN_LEVEL_DB / 20 * np.log(10))
    db = 20 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    return np.clip((2 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / (-MIN_LEVEL_DB)) - MAX_ABS_VALUE,
                   -MAX_ABS_VALUE, MAX_ABS_VALUE)


# --------------------------------------------------------------------------------------------------------
# per-frame windows


def window_starts(num_frames: int, fps: float = 25.0) -> np.ndarray:
    """First mel frame of each video frame's window: ``int(80 (i - 2) / fps)`` (truncation toward zero),
    i.e. 80 ms before the frame at 25 fps: -6, -3, 0, 3, 6, 9, ..."""
    fps = _check_fps(fps)
    offsets = (np.arange(num_frames, dtype=np.float64) - 2) / fps
    return np.trunc(float(MEL_RATE) * offsets).astype(np.int64)


def mel_windows(mel: np.ndarray, num_frames: int, fps: float = 25.0, block_frames: int = 1024) -> np.ndarray:
    """(num_frames, 80, 16) float32: for frame i the mel rows ``start_i .. start_i + 15`` (indices clamped
    to the spectrogram, i.e. edge rows repeated), transposed."""
    mel = np.asarray(mel)
    if mel.ndim != 2 or mel.shape[1] != N_MELS or mel.shape[0] == 0:
        raise ValueError(f"mel must have shape (n_frames > 0, {N_MELS}), got {mel.shape}")
    starts = window_starts(num_frames, fps)
    rows = np.clip(starts[:, None] + np.arange(WINDOW_STEPS), 0, mel.shape[0] - 1)
    source = mel.astype(np.float32)
    windows = np.empty((num_frames, N_MELS, WINDOW_STEPS), np.float32)
    for first in range(0, num_frames, block_frames):  # blocks keep the gathered copy small for long audio
        windows[first:first + block_frames] = source[rows[first:first + block_frames]].transpose(0, 2, 1)
    return windows


def silent_mel_windows(num_frames: int) -> np.ndarray:
    """Idle-mode windows (official Gradio idle mode): all zeros, which is -50 dB in normalised mel space,
    not silence. Zero pages cost no memory until written."""
    return np.zeros((num_frames, N_MELS, WINDOW_STEPS), np.float32)


# --------------------------------------------------------------------------------------------------------
# one call for the pipeline


def prepare_audio(path: str | os.PathLike, fps: float = 25.0) -> AudioFeatures:
    """Decode, crop to whole frames, mel spectrogram and per-frame windows of a driving-audio file."""
    fps = _check_fps(fps)
    wav = load_audio(path, SAMPLE_RATE)
    num_frames = num_video_frames(len(wav), fps)
    if num_frames == 0:
        raise AudioError(f"{Path(path).name} is too short ({1000 * len(wav) / SAMPLE_RATE:.0f} ms); at least one "
                         f"video frame ({1000 / fps:.0f} ms) of audio is needed.")
    wav = crop_or_pad(wav, num_frames, fps)
    mel = mel_spectrogram(wav)
    return AudioFeatures(wav=wav, num_frames=num_frames, mel=mel, windows=mel_windows(mel, num_frames, fps),
                         duration_s=num_frames / fps, fps=fps)


def idle_features(num_frames: int, fps: float = 25.0) -> AudioFeatures:
    """Features for idle mode (no speech): silent samples and all-zero mel windows for ``num_frames``."""
    fps = _check_fps(fps)
    if num_frames < 1:
        raise OptionError(f"idle mode needs at least one frame, got {num_frames}; give a longer idle duration.")
    wav = np.zeros(int(num_frames * (SAMPLE_RATE / fps)), np.float32)
    mel = np.zeros((1 + len(wav) // HOP_LENGTH, N_MELS), np.float64)
    return AudioFeatures(wav=wav, num_frames=num_frames, mel=mel, windows=silent_mel_windows(num_frames),
                         duration_s=num_frames / fps, fps=fps, silent=True)
