"""Video files through imageio-ffmpeg's ffmpeg: a streaming H.264 + AAC writer, and readers for reference
videos (frames and basic info; there is no ffprobe, so ffmpeg's own report is parsed).

The writer differs from the official one on purpose: frames are piped to the encoder as they are made
(flat memory), the audio is muxed by the same ffmpeg process at the source file's own rate (not
re-sampled to 16 kHz), odd frame sizes are padded by one edge-replicated row/column instead of being
stretched to multiples of 16, and the output appears only when complete.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FFmpegError, VideoError
from . import ffmpeg_io

_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


def _even(n: int) -> int:
    return n + (n & 1)


class VideoWriter:
    """Streams RGB uint8 frames into an H.264 (libx264, yuv420p, BT.709 tagged) file with an optional AAC
    audio track, written by one ffmpeg process.

    ``audio``: a file path (its first audio stream is used, trimmed to ``duration`` seconds when given),
    a float32/int16 array of shape (n,) or (n, channels) at ``audio_sample_rate``, or None for no sound.
    Without ``duration`` the sound is cut where the video ends (``-shortest``).
    ``metadata``: container tags written by the same encode (``-metadata key=value``).
    ``finalize(encoded, dest)``: called once ffmpeg has finished, before the file gets its final name, to
    write a transformed copy of the encoded file to ``dest`` (C2PA signing); a failure discards both.
    Frames of odd width/height get one extra column/row copied from the edge (yuv420p needs even sizes).

    The file is written to a hidden ``.<name>.*.partial<ext>`` in the destination folder and renamed when
    ffmpeg has finished; an exception inside the ``with`` block (e.g. ``Cancelled``) or a failed encode
    kills ffmpeg and deletes the partial file.

    >>> with VideoWriter("out.mp4", fps=25, audio="speech.wav", duration=2.4) as writer:
    ...     for batch in batches:          # (N, H, W, 3) or (H, W, 3) uint8
    ...         writer.write(batch)
    """

    def __init__(self, path: str | os.PathLike, frame_size: tuple[int, int] | None = None, *, fps: float = 25.0,
                 audio: str | os.PathLike | np.ndarray | None = None, duration: float | None = None,
                 audio_sample_rate: int = 16000, crf: int = 18, preset: str = "medium",
                 audio_bitrate: str = "160k", metadata: dict[str, str] | None = None,
                 finalize: Callable[[Path, Path], None] | None = None):
        self.path = Path(path)
        self._muxer = _MUXERS.get(self.path.suffix.lower())
        if self._muxer is None:
            raise ValueError(f"unsupported video file type {self.path.suffix!r} for {self.path.name}; use one of "
                             f"{', '.join(_MUXERS)}.")
        if not fps or fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if not 0 <= int(crf) <= 51:
            raise ValueError(f"crf must be in 0..51 (lower is better quality), got {crf}")
        #: (width, height); taken from the first frame when not given
        self.frame_size = tuple(int(v) for v in frame_size) if frame_size is not None else None
        self.fps, self.duration, self.crf, self.preset = float(fps), duration, int(crf), preset
        self.audio, self.audio_sample_rate, self.audio_bitrate = audio, int(audio_sample_rate), audio_bitrate
        self.metadata, self.finalize = dict(metadata or {}), finalize
        self._finalized: Path | None = None
        self.frames_written = 0
        self._process: subprocess.Popen | None = None
        self._log: ffmpeg_io.LogDrain | None = None
        self._partial: Path | None = None
        self._audio_file: Path | None = None
        self._audio_thread: threading.Thread | None = None
        self._audio_write_fd: int | None = None
        self._finished = False

    # -- context manager ------------------------------------------------------------------------------
    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None:
            self.abort()
        else:
            self.close()
        return False

    def __del__(self):
        # a writer dropped without close() must not leave a half-written partial file behind
        if not getattr(self, "_finished", True) and self._process is not None:
            self.abort()

    # -- public ---------------------------------------------------------------------------------------
    @property
    def encoded_size(self) -> tuple[int, int] | None:
        """(width, height) of the video in the file: the frame size rounded up to even numbers."""
        return None if self.frame_size is None else (_even(self.frame_size[0]), _even(self.frame_size[1]))

    def write(self, frames) -> None:
        """Appends one frame (H, W, 3) or a batch (N, H, W, 3) of RGB uint8 (numpy or torch; torch batches
        may also be (N, 3, H, W))."""
        if self._finished:
            raise ValueError(f"the writer of {self.path.name} is already closed")
        batch = _as_uint8_batch(frames)
        height, width = batch.shape[1:3]
        if self.frame_size is None:
            self.frame_size = (width, height)
        if (width, height) != self.frame_size:
            raise ValueError(f"frame size {width}x{height} differs from the video's {self.frame_size[0]}x"
                             f"{self.frame_size[1]}")
        if len(batch) == 0:
            return
        if self._process is None:
            self._start()
        try:
            self._process.stdin.write(memoryview(np.ascontiguousarray(batch)).cast("B"))
        except (BrokenPipeError, OSError, ValueError):
            raise self._failure("ffmpeg stopped while receiving frames") from None
        self.frames_written += len(batch)

    def close(self) -> Path:
        """Finishes the file and moves it to its final name; returns that path."""
        if self._finished:
            return self.path
        if self._process is None:
            self.abort()
            raise FFmpegError(f"no frames were written to {self.path.name}; nothing to encode.")
        try:
            self._process.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        try:
            returncode = self._process.wait()
            if self._audio_thread is not None:
                self._audio_thread.join()
            if returncode != 0:
                raise self._failure("ffmpeg failed while finishing the video")
            if self.finalize is not None:
                self._finalized = self._partial.with_suffix(".final" + self.path.suffix)
                self.finalize(self._partial, self._finalized)
                os.replace(self._finalized, self._partial)
                self._finalized = None
            os.replace(self._partial, self.path)
        except BaseException:
            self.abort()
            raise
        self._partial = None
        self._cleanup()
        return self.path

    def abort(self) -> None:
        """Stops ffmpeg and deletes everything written so far (idempotent)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        if self._process is not None:
            self._process.wait()
        self._cleanup()

    # -- internals ------------------------------------------------------------------------------------
    def _failure(self, what: str) -> FFmpegError:
        if self._process is not None and self._process.poll() is None:
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        log = self._log.text() if self._log is not None else ""
        self.abort()
        return FFmpegError(f"{what} ({self.path.name}): {ffmpeg_io.summarise_log(log)}. Check free disk space "
                           "and that the audio file is readable.")

    def _cleanup(self) -> None:
        self._finished = True
        if self._process is not None and self._process.stdin is not None:
            try:
                self._process.stdin.close()
            except (BrokenPipeError, OSError):
                pass
        if self._audio_thread is not None:
            self._audio_thread.join()
            self._audio_thread = None
        for leftover in (self._partial, self._audio_file, self._finalized):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        self._partial = self._audio_file = self._finalized = None

    def _start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # a random sibling name (not mkstemp: ffmpeg creates the file, so it gets the usual permissions)
        self._partial = self.path.with_name(f".{self.path.stem}.{secrets.token_hex(6)}.partial{self.path.suffix}")
        pass_fds: tuple[int, ...] = ()
        try:
            audio_args, pass_fds, samples = self._audio_input()
            self._process = subprocess.Popen(self._command(audio_args), stdin=subprocess.PIPE,
                                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, pass_fds=pass_fds)
        except BaseException:
            for fd in (*pass_fds, self._audio_write_fd):
                if fd is not None:
                    os.close(fd)
            self._audio_write_fd = None
            self._cleanup()
            raise
        self._log = ffmpeg_io.LogDrain(self._process.stderr)
        if pass_fds:
            os.close(pass_fds[0])
            self._audio_thread = threading.Thread(target=_feed, args=(self._audio_write_fd, samples), daemon=True)
            self._audio_write_fd = None  # owned by the feeding thread from here on
            self._audio_thread.start()

    def _command(self, audio_args: list[str]) -> list[str]:
        width, height = self.frame_size
        command = [ffmpeg_io.ffmpeg_exe(), *ffmpeg_io.QUIET, "-y",
                   "-f", "rawvideo", "-pix_fmt", "rgb24", "-video_size", f"{width}x{height}",
                   "-framerate", format(self.fps, ".10g"), "-i", "pipe:0", *audio_args]
        filters = []
        if width % 2 or height % 2:
            filters.append(f"pad={_even(width)}:{_even(height)}:0:0")
            filters.append(f"fillborders=right={width % 2}:bottom={height % 2}:mode=smear")
        # sRGB frames -> BT.709 limited range, tagged, so players do not guess the matrix
        filters.append("scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,"
                       "setparams=colorspace=bt709:color_primaries=bt709:color_trc=bt709:range=tv")
        command += ["-map", "0:v:0", "-vf", ",".join(filters), "-c:v", "libx264", "-preset", self.preset,
                    "-crf", str(self.crf), "-pix_fmt", "yuv420p"]
        if audio_args:
            command += ["-map", "1:a:0", "-c:a", "aac", "-b:a", self.audio_bitrate]
            if self.duration is None:
                command += ["-shortest"]
        for key, value in self.metadata.items():
            command += ["-metadata", f"{key}={value}"]
        if self._muxer in ("mp4", "mov"):
            command += ["-movflags", "+faststart"]
        return command + ["-f", self._muxer, os.fspath(self._partial)]

    def _audio_input(self) -> tuple[list[str], tuple[int, ...], np.ndarray | None]:
        """ffmpeg input arguments for the audio, inherited fds, and the samples to feed (array audio)."""
        if self.audio is None:
            return [], (), None
        trim = ["-t", format(self.duration, ".6f")] if self.duration is not None else []
        if not isinstance(self.audio, np.ndarray):
            source = Path(self.audio)
            if not source.is_file():
                raise FFmpegError(f"audio file to mux not found: {source}")
            return [*trim, "-i", os.fspath(source)], (), None
        samples = np.asarray(self.audio)
        if samples.dtype == np.int16:
            samples = samples.astype(np.float32) / 32768.0
        samples = np.ascontiguousarray(samples, dtype="<f4")
        channels = 1 if samples.ndim == 1 else samples.shape[1]
        raw = ["-f", "f32le", "-ar", str(self.audio_sample_rate), "-ac", str(channels), *trim]
        if os.name == "nt":  # no fd inheritance for subprocess on Windows: a sibling file, deleted afterwards
            self._audio_file = self._partial.with_suffix(".f32")
            samples.tofile(self._audio_file)
            return [*raw, "-i", os.fspath(self._audio_file)], (), None
        read_end, self._audio_write_fd = os.pipe()
        return [*raw, "-i", f"pipe:{read_end}"], (read_end,), samples


def _feed(fd: int, samples: np.ndarray) -> None:
    """Writes the samples into ffmpeg's audio pipe; a dead ffmpeg simply ends the feed."""
    try:
        with open(fd, "wb", closefd=True) as pipe:
            pipe.write(memoryview(samples).cast("B"))
    except (BrokenPipeError, OSError):
        pass


def _as_uint8_batch(frames) -> np.ndarray:
    if hasattr(frames, "detach"):  # torch tensor: renderer batches come as (N, 3, H, W)
        if frames.ndim == 4 and frames.shape[1] == 3 and frames.shape[-1] != 3:
            frames = frames.permute(0, 2, 3, 1)
        frames = frames.detach().cpu().contiguous().numpy()
    batch = np.asarray(frames)
    if batch.ndim == 3:
        batch = batch[None]
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"frames must be RGB (H, W, 3) or (N, H, W, 3), got shape {batch.shape}")
    if batch.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, got {batch.dtype}; convert with rint(255 * x).clip(0, 255)")
    return batch


# ------------------------------------------------------------------------------------------------------
# reading


def _check_video_file(path: Path) -> None:
    if not path.exists():
        raise VideoError(f"video file not found: {path}. Check the path (or upload the video again).")
    if path.is_dir():
        raise VideoError(f"{path} is a folder, not a video file; give the path of an MP4/MOV/MKV/AVI file.")
    if path.stat().st_size == 0:
        raise VideoError(f"video file {path} is empty (0 bytes); the upload or copy probably failed.")


def _video_report(path: Path) -> dict:
    _check_video_file(path)
    report = ffmpeg_io.parse_report(ffmpeg_io.read_report(path))
    streams = [v for v in report["video"] if not v["attached_pic"]]
    if not report["video"] and not report["audio"]:
        raise VideoError(f"{path.name} is not a readable video (ffmpeg found no streams); convert it to MP4 "
                         "(H.264) and try again.")
    if not streams:
        raise VideoError(f"{path.name} has no video stream (audio only?); give a video of a face.")
    report["stream"] = streams[0]
    return report


def _display_size(stream: dict) -> tuple[int, int]:
    width, height = stream["width"], stream["height"]
    return (height, width) if stream["rotation"] in (90, 270) else (width, height)


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float | None
    n_frames: int | None
    duration: float | None
    has_audio: bool


def video_info(path: str | os.PathLike) -> VideoInfo:
    """Display size (rotation applied), frame rate, frame count (packets, no decoding), container duration
    and whether an audio track exists."""
    path = Path(path)
    report = _video_report(path)
    stream = report["stream"]
    width, height = _display_size(stream)
    try:
        frames = ffmpeg_io.count_streams(path, video=True, audio=False)["frames"]
    except FFmpegError as error:
        raise VideoError(f"cannot read {path.name}: {error}") from None
    return VideoInfo(width, height, stream["fps"], frames, report["duration"], bool(report["audio"]))


def read_video_frames(path: str | os.PathLike, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Decoded RGB uint8 frames (H, W, 3) of the first video stream, one at a time (rotation applied, every
    decoded frame kept: no frame-rate conversion). The file is checked now; frames come lazily."""
    path = Path(path)
    _video_report(path)
    if max_frames is not None and max_frames < 1:
        return iter(())
    return _frames(path, max_frames)


def _frames(path: Path, max_frames: int | None) -> Iterator[np.ndarray]:
    command = [ffmpeg_io.ffmpeg_exe(), *ffmpeg_io.QUIET, "-i", os.fspath(path), "-map", "0:v:0", "-an", "-sn",
               "-fps_mode", "passthrough"]
    if max_frames is not None:
        command += ["-frames:v", str(int(max_frames))]
    # PPM frames carry their own size, so nothing depends on parsing the report's geometry
    command += ["-c:v", "ppm", "-pix_fmt", "rgb24", "-f", "image2pipe", "pipe:1"]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = ffmpeg_io.LogDrain(process.stderr)
    count = 0
    try:
        while True:
            frame = _read_ppm(process.stdout)
            if frame is None:
                break
            count += 1
            yield frame
        if process.wait() != 0:
            raise VideoError(f"cannot decode {path.name} after {count} frames: "
                             f"{ffmpeg_io.summarise_log(log.text(), path)}. Re-encode it to MP4 (H.264).")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()


def _read_ppm(stream) -> np.ndarray | None:
    magic = stream.readline()
    if not magic:
        return None
    if magic.strip() != b"P6":
        raise VideoError(f"unexpected data from ffmpeg's frame pipe ({magic[:16]!r})")
    width, height = (int(v) for v in stream.readline().split())
    stream.readline()  # maxval, always 255 for rgb24
    frame = bytearray(width * height * 3)
    view, filled = memoryview(frame), 0
    while filled < len(frame):
        got = stream.readinto(view[filled:])
        if not got:
            return None
        filled += got
    return np.frombuffer(frame, dtype=np.uint8).reshape(height, width, 3)
