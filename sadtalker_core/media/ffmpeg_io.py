"""The ffmpeg binary shipped in the ``imageio-ffmpeg`` wheel: locating it, draining its log, reading its
``-i`` report (there is no ffprobe next to it) and turning its error log into one readable line.

Shared by ``audio.py`` (decoding) and ``video.py`` (encoding, reference videos).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import threading
from pathlib import Path

from ..errors import FFmpegError

#: flags every call uses: no stdin prompts, no banner, only real errors in the log
QUIET = ("-nostdin", "-hide_banner", "-nostats", "-loglevel", "error")


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of imageio-ffmpeg's ffmpeg (or ``$IMAGEIO_FFMPEG_EXE`` when the user set it)."""
    try:
        import imageio_ffmpeg
    except ImportError as error:
        raise FFmpegError("the imageio-ffmpeg package is not installed; install it with "
                          "`pip install imageio-ffmpeg` (it ships the ffmpeg binary used for audio and video).") \
            from error
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as error:
        raise FFmpegError(f"imageio-ffmpeg found no ffmpeg binary ({error}); reinstall it with "
                          "`pip install --force-reinstall imageio-ffmpeg` or set IMAGEIO_FFMPEG_EXE.") from error


class LogDrain:
    """Reads a child's stderr in a thread (a full pipe would block ffmpeg) and keeps the last ``limit``
    bytes for error messages."""

    def __init__(self, pipe, limit: int = 64 * 1024):
        self._pipe, self._limit = pipe, limit
        self._chunks: list[bytes] = []
        self._size = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for chunk in iter(lambda: self._pipe.read1(8192), b""):
                self._chunks.append(chunk)
                self._size += len(chunk)
                while self._size > self._limit and len(self._chunks) > 1:
                    self._size -= len(self._chunks.pop(0))
        except (OSError, ValueError):  # the child vanished mid-read: keep what arrived
            pass
        finally:
            self._pipe.close()

    def text(self, timeout: float = 5.0) -> str:
        self._thread.join(timeout)
        return b"".join(self._chunks).decode("utf-8", "replace")


_ADDRESS_PREFIX = re.compile(r"^\s*(\[[^\]]*@ 0x[0-9a-f]+\]\s*)+")
#: lines ffmpeg adds after the real cause; they carry no information of their own
_GENERIC = ("Error opening input file", "Error opening output file", "Error parsing options",
            "To ignore this, add a trailing", "Conversion failed", "Exiting with exit code",
            "Terminating thread", "Task finished with error", "Error closing file", "Error writing trailer",
            "Last message repeated", "Nothing was written into output file")


def summarise_log(log: str, path: str | os.PathLike | None = None, limit: int = 300) -> str:
    """ffmpeg's error log as one line: address prefixes and boilerplate dropped, duplicates merged, the
    input path shortened to its file name."""
    seen: list[str] = []
    for line in log.splitlines():
        line = _ADDRESS_PREFIX.sub("", line).strip()
        if not line or line.startswith(_GENERIC):
            continue
        if path is not None:
            line = line.replace(str(path), Path(path).name)
        if line not in seen:
            seen.append(line)
    text = "; ".join(seen) or "ffmpeg gave no reason"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_quiet(args: list[str], timeout: float | None = 120) -> subprocess.CompletedProcess:
    """Runs ffmpeg with ``args`` to completion, stdout discarded, stderr captured as text."""
    return subprocess.run([ffmpeg_exe(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=timeout, check=False, text=True, errors="replace")


# --------------------------------------------------------------------------------------------------------
# `ffmpeg -i` report


def read_report(path: str | os.PathLike) -> str:
    """The stream report ffmpeg prints for ``-i path`` (it exits with an error because no output is given)."""
    return run_quiet(["-nostdin", "-hide_banner", "-i", os.fspath(path)], timeout=60).stderr


_INPUT = re.compile(r"^Input #0, (?P<format>[^ ]+), from ")
_DURATION = re.compile(r"Duration: (?:(?P<h>\d+):(?P<m>\d+):(?P<s>[\d.]+)|N/A)")
_STREAM = re.compile(r"^\s*Stream #0:(?P<index>\d+)\S*: (?P<kind>Video|Audio|Subtitle|Data|Attachment): "
                     r"(?P<desc>.*)$")
_ROTATION = re.compile(r"rotation of (?P<deg>-?[\d.]+) degrees")


def _split_top_level(text: str) -> list[str]:
    """Splits a stream description at the commas that are not inside parentheses or brackets."""
    parts, depth, current = [], 0, []
    for char in text:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def _rate(value: str) -> float:
    value = value.strip()
    return float(value[:-1]) * 1000 if value.endswith("k") else float(value)


def _video_stream(desc: str) -> dict:
    parts = _split_top_level(desc)
    head = parts[0]
    info: dict = {"codec": head.split()[0], "profile": None, "pix_fmt": None, "width": None, "height": None,
                  "fps": None, "attached_pic": "(attached pic)" in desc, "rotation": 0}
    profile = re.match(r"\S+ \(([^)/]+)\)", head)
    if profile:
        info["profile"] = profile.group(1)
    if len(parts) > 1:
        info["pix_fmt"] = parts[1].split("(")[0].strip()
    tbr = None
    for part in parts[1:]:
        size = re.match(r"^(\d+)x(\d+)", part)
        if size and info["width"] is None:
            info["width"], info["height"] = int(size.group(1)), int(size.group(2))
        fps = re.match(r"^([\d.]+k?) fps$", part)
        if fps:
            info["fps"] = _rate(fps.group(1))
        tb = re.match(r"^([\d.]+k?) tbr$", part)
        if tb:
            tbr = _rate(tb.group(1))
    if info["fps"] is None:
        info["fps"] = tbr
    return info


def _audio_stream(desc: str) -> dict:
    parts = _split_top_level(desc)
    head = parts[0]
    info: dict = {"codec": head.split()[0], "profile": None, "sample_rate": None, "channels": None,
                  "layout": None}
    profile = re.match(r"\S+ \(([^)/]+)\)", head)
    if profile:
        info["profile"] = profile.group(1)
    for part in parts[1:]:
        rate = re.match(r"^(\d+) Hz$", part)
        if rate:
            info["sample_rate"] = int(rate.group(1))
            continue
        if info["sample_rate"] is not None and info["layout"] is None:
            info["layout"] = part.split("(")[0].strip()
            count = re.match(r"^(\d+) channels", part)
            info["channels"] = (int(count.group(1)) if count else
                                {"mono": 1, "stereo": 2}.get(info["layout"], None))
            if info["channels"] is None:
                layout = re.match(r"^(\d+)\.(\d+)", info["layout"])
                if layout:
                    info["channels"] = int(layout.group(1)) + int(layout.group(2))
    return info


def parse_report(report: str) -> dict:
    """``{"format", "duration", "video": [...], "audio": [...]}`` from an ``ffmpeg -i`` report; empty lists
    when ffmpeg could not open the file. Durations in seconds (None when unknown)."""
    result: dict = {"format": None, "duration": None, "video": [], "audio": []}
    last_stream = None
    for line in report.splitlines():
        match = _INPUT.match(line)
        if match:
            result["format"] = match.group("format").rstrip(",")
            continue
        match = _DURATION.search(line)
        if match and result["duration"] is None and match.group("h") is not None:
            result["duration"] = (int(match.group("h")) * 3600 + int(match.group("m")) * 60
                                  + float(match.group("s")))
            continue
        match = _STREAM.match(line)
        if match:
            kind, desc = match.group("kind"), match.group("desc")
            last_stream = None
            if kind == "Video":
                last_stream = _video_stream(desc)
                result["video"].append(last_stream)
            elif kind == "Audio":
                result["audio"].append(_audio_stream(desc))
            continue
        match = _ROTATION.search(line)
        if match and last_stream is not None:
            last_stream["rotation"] = int(round(float(match.group("deg")))) % 360
    return result


_MUXED_VIDEO = re.compile(r"Output stream #\d+:\d+ \(video\): (?P<packets>\d+) packets muxed")
_MUXED_AUDIO = re.compile(r"Output stream #\d+:\d+ \(audio\): \d+ frames encoded \((?P<samples>\d+) samples\)")


def count_streams(path: str | os.PathLike, video: bool = True, audio: bool = True) -> dict:
    """Exact video frame count (packets, no decoding) and decoded audio sample count of the first video
    and audio streams, from one pass into ffmpeg's null muxer: ``{"frames": int|None, "samples": int|None}``."""
    args = ["-nostdin", "-hide_banner", "-nostats", "-loglevel", "verbose", "-i", os.fspath(path)]
    if video:
        args += ["-map", "0:v:0?", "-c:v", "copy"]
    if audio:
        args += ["-map", "0:a:0?", "-c:a", "pcm_f32le"]
    done = run_quiet(args + ["-f", "null", "-"], timeout=600)
    if done.returncode != 0:
        raise FFmpegError(f"ffmpeg could not read {Path(path).name}: {summarise_log(done.stderr, path)}")
    frames = _MUXED_VIDEO.search(done.stderr)
    samples = _MUXED_AUDIO.search(done.stderr)
    return {"frames": int(frames.group("packets")) if frames else None,
            "samples": int(samples.group("samples")) if samples else None}
