"""Dubbing a video: seconds of compute per second of output against image mode, and memory vs video length.

    .venv/bin/python bench/bench_dub.py --checkpoint_dir DIR [--speed-seconds 0.2] [--lengths 1,4,8]
        [--video WDA_KatieHill_000.mp4] [--width 256] [--batch_size 2] [--render-all]

Speed: the first ``--speed-seconds`` of speech dub the video (every frame a source: landmarks, 3DMM,
per-frame source encoding, paste-back) and, for comparison, animate art_0.png in ``full`` mode (one source,
the same paste-back); both render every frame. Reported: compute seconds per second of output and the stages.

Memory: each length (seconds of video = seconds of speech, so every frame is used) runs in its own process
(``ru_maxrss`` is that run's peak). The video is the clip scaled to ``--width`` and looped to the length.
Decoding, face tracking, 3DMM fits, ExpNet, paste-back and the encoder are real for every frame; without
``--render-all`` only the first render batch runs the generator and its result is reused for later batches
(a 256 frame takes seconds on a CPU; the render loop holds one batch at a time whatever the length).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import MEDIA, RssSampler, cut_audio, load_average, peak_rss_mb, rss_mb

from sadtalker_core import SadTalker  # noqa: E402
from sadtalker_core.render import animate  # noqa: E402
from sadtalker_core.media import ffmpeg_io  # noqa: E402

_real_render = animate.render_batch_per_source


def _reuse_first_batch():
    """``render_batch_per_source`` that runs the generator once and hands out copies of that batch after."""
    first = []

    def render(*args, **kwargs):
        batch = args[3].shape[0]
        if not first:
            first.append(_real_render(*args, **kwargs))
        return first[0][:1].expand(batch, -1, -1, -1).clone()

    return render


def make_video(source: Path, seconds: float, width: int, folder: Path) -> Path:
    """``source`` scaled to ``width`` (even height), looped to ``seconds``, H.264 with its sound."""
    path = folder / f"video_{seconds:g}s_{width}.mp4"
    subprocess.run([ffmpeg_io.ffmpeg_exe(), "-v", "error", "-y", "-stream_loop", "-1", "-i", str(source),
                    "-t", f"{seconds}", "-vf", f"scale={width}:-2", "-c:v", "libx264", "-crf", "12", "-c:a", "aac",
                    str(path)], check=True, capture_output=True)
    return path


def child(args) -> None:
    with tempfile.TemporaryDirectory(prefix="sadtalker_dub_bench_") as tmp:
        tmp = Path(tmp)
        seconds = float(args.length)
        speech, _ = cut_audio(args.audio, seconds, tmp)
        talker = SadTalker(args.checkpoint_dir, download=False)
        common = dict(batch_size=args.batch_size, face_detector="dlib", seed=0)
        if args.mode == "image":
            talker.runtime.prepare(256, "full")
            start = time.perf_counter()
            result = talker.generate(str(MEDIA / "art_0.png"), str(speech), output_path=tmp / "out.mp4",
                                     preprocess="full", **common)
        else:
            video = make_video(args.video, seconds, args.width, tmp)
            talker.runtime.prepare(256, "full")
            if not args.render_all:
                animate.render_batch_per_source = _reuse_first_batch()
            loaded = rss_mb()
            start = time.perf_counter()
            with RssSampler() as during:
                result = talker.generate(source_video=video, driven_audio=str(speech),
                                         output_path=tmp / "out.mp4", **common)
        wall = time.perf_counter() - start
    info = result.info
    out = {"mode": args.mode, "seconds": round(info["duration_s"], 2), "frames": info["num_frames"],
           "wall_s": round(wall, 2), "compute_per_output_s": round(wall / info["duration_s"], 1),
           "stages": info["seconds"], "ru_maxrss_mb": round(peak_rss_mb()), "load": load_average()}
    if args.mode == "dub":
        out.update(rss_loaded_mb=round(loaded), rss_peak_generate_mb=round(during.peak_mb))
    print(json.dumps(out))


def run_child(args, mode: str, length: float, render_all: bool) -> dict | None:
    command = [sys.executable, __file__, "--checkpoint_dir", args.checkpoint_dir, "--mode", mode, "--length",
               str(length), "--video", str(args.video), "--audio", str(args.audio), "--width", str(args.width),
               "--batch_size", str(args.batch_size)] + (["--render-all"] if render_all else [])
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{mode} {length}: failed\n{done.stderr[-3000:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--speed-seconds", type=float, default=0.2)
    parser.add_argument("--lengths", default="1,4,8", help="video (= speech) seconds of the memory runs")
    parser.add_argument("--video", type=Path, default=MEDIA / "WDA_KatieHill_000.mp4")
    parser.add_argument("--audio", type=Path, default=MEDIA / "japanese.wav")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--render-all", action="store_true", help="memory runs render every frame too")
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # set in the child processes
    parser.add_argument("--length", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode is not None:
        return child(args)

    print(f"# speed: {args.speed_seconds:g} s of {args.audio.name}; dub {args.video.name} at width {args.width} vs "
          f"image mode (art_0.png, full); every frame rendered; batch {args.batch_size}")
    for mode in ("image", "dub"):
        r = run_child(args, mode, args.speed_seconds, render_all=True)
        if r:
            print(f"{mode:>5}: {r['frames']} frames, {r['wall_s']:.1f} s -> {r['compute_per_output_s']:.1f} s of "
                  f"compute per second of output; stages {json.dumps(r['stages'])} @ {r['load']}", flush=True)
    how = "every frame rendered" if args.render_all else "first render batch reused for later batches"
    print(f"# memory vs video length ({how}; everything else real for every frame)")
    print(f"{'video s':>8} {'frames':>7} {'RSS loaded':>11} {'peak in generate':>17} {'generate s':>11}  stages (s)")
    for length in args.lengths.split(","):
        r = run_child(args, "dub", float(length), render_all=args.render_all)
        if r:
            print(f"{r['seconds']:8.2f} {r['frames']:7d} {r['rss_loaded_mb']:8d} MB {r['rss_peak_generate_mb']:14d} MB "
                  f"{r['wall_s']:11.1f}  {json.dumps(r['stages'])} @ {r['load']}", flush=True)


if __name__ == "__main__":
    main()
