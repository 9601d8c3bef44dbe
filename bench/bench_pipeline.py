"""End-to-end ``SadTalker.generate`` on a real portrait and real speech: seconds per stage, frames/s, peak RSS.

    .venv/bin/python bench/bench_pipeline.py --checkpoint_dir DIR [--seconds 1] [--image art_0.png]
        [--audio RD_Radio31_000.wav] [--preprocess crop] [--size 256] [--batch_size 2] [--runs 1]
        [--dtype float32|bfloat16] [--threads N] [--device cpu]

The audio is cut to its first ``--seconds``; landmarks come from dlib (offline). Run 1 includes loading the
networks ("load"); later runs reuse them (warm). Each run prints ``result.info["seconds"]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from _common import DTYPES, MEDIA, cut_audio, load_average, peak_rss_mb, set_threads

from sadtalker_core import SadTalker  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--image", type=Path, default=MEDIA / "art_0.png")
    parser.add_argument("--audio", type=Path, default=MEDIA / "RD_Radio31_000.wav")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--preprocess", default="crop")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="render dtype (default: the "
                        "pipeline's choice, float32 on CPU)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    threads = set_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="sadtalker_bench_") as tmp:
        speech, seconds = cut_audio(args.audio, args.seconds, Path(tmp))
        talker = SadTalker(args.checkpoint_dir, device=args.device,
                           dtype=DTYPES[args.dtype] if args.dtype else None, download=False)
        print(f"# pipeline benchmark: {args.image.name} + {seconds:.2f} s of {args.audio.name}, preprocess "
              f"{args.preprocess}, size {args.size}, batch {args.batch_size}, device {talker.device}, render "
              f"dtype {talker.runtime.render_dtype}, {threads} threads, face_detector dlib")
        for run in range(1, args.runs + 1):
            before = load_average()
            start = time.perf_counter()
            result = talker.generate(str(args.image), str(speech), output_path=Path(tmp) / f"run{run}.mp4",
                                     preprocess=args.preprocess, size=args.size, batch_size=args.batch_size,
                                     face_detector="dlib", seed=0)
            total = time.perf_counter() - start
            frames = result.info["num_frames"]
            render = result.info["seconds"].get("render", float("nan"))
            print(f"run {run}: {frames} frames, total {total:.1f} s ({total / seconds:.1f} s per s of audio), "
                  f"{frames / total:.3f} frames/s end to end, render {frames / render:.3f} frames/s, peak RSS "
                  f"{peak_rss_mb():.0f} MB, {before} -> {load_average()}")
            print(f"  stages (s): {json.dumps(result.info['seconds'])}", flush=True)


if __name__ == "__main__":
    main()
