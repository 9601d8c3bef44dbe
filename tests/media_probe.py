"""What the tests read back from a written media file: codecs, sizes, exact frame and sample counts.

Only tests need these summaries (the package asks ffmpeg for what it uses through ``video.video_info``), so they
live here, built on the package's ffmpeg report parser and stream counter.
"""

from __future__ import annotations

import os
from pathlib import Path

from sadtalker_core.media import ffmpeg_io


def probe_streams(path: str | os.PathLike) -> dict:
    """Summary of a media file's first video and audio streams:
    ``{"format", "duration", "video": {codec, profile, pix_fmt, width, height, fps, frames} | None,
    "audio": {codec, profile, sample_rate, channels, samples, duration} | None}``.

    The video size is the display size (a 90/270 degree rotation swaps width and height)."""
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 0, f"no media file at {path}"
    report = ffmpeg_io.parse_report(ffmpeg_io.read_report(path))
    assert report["video"] or report["audio"], f"ffmpeg finds no streams in {path.name}"
    counts = ffmpeg_io.count_streams(path)
    video_streams = [v for v in report["video"] if not v["attached_pic"]]
    video = None
    if video_streams:
        stream = video_streams[0]
        width, height = stream["width"], stream["height"]
        if stream["rotation"] in (90, 270):
            width, height = height, width
        video = {"codec": stream["codec"], "profile": stream["profile"], "pix_fmt": stream["pix_fmt"],
                 "width": width, "height": height, "fps": stream["fps"], "frames": counts["frames"]}
    audio = None
    if report["audio"]:
        stream = report["audio"][0]
        samples, rate = counts["samples"], stream["sample_rate"]
        audio = {"codec": stream["codec"], "profile": stream["profile"], "sample_rate": rate,
                 "channels": stream["channels"], "samples": samples,
                 "duration": samples / rate if samples is not None and rate else None}
    return {"format": report["format"], "duration": report["duration"], "video": video, "audio": audio}


def describe_streams(summary: dict) -> str:
    """One line for a :func:`probe_streams` summary (for assertion messages), e.g.
    ``h264 (High) yuv420p 256x256 25 fps 60 frames; aac (LC) 16000 Hz 1 ch 2.40 s``."""
    parts = []
    video, audio = summary.get("video"), summary.get("audio")
    if video:
        profile = f" ({video['profile']})" if video["profile"] else ""
        parts.append(f"{video['codec']}{profile} {video['pix_fmt']} {video['width']}x{video['height']} "
                     f"{video['fps']:g} fps {video['frames']} frames")
    if audio:
        profile = f" ({audio['profile']})" if audio["profile"] else ""
        duration = f" {audio['duration']:.2f} s" if audio["duration"] is not None else ""
        parts.append(f"{audio['codec']}{profile} {audio['sample_rate']} Hz {audio['channels']} ch{duration}")
    return "; ".join(parts) or "no streams"
