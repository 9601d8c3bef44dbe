"""Peak memory of the streaming pipeline vs audio length: it must stay flat.

    .venv/bin/python bench/bench_memory.py --checkpoint_dir DIR [--lengths 2,8,40] [--audio japanese.wav]
        [--preprocess crop] [--batch_size 2] [--render-all]

Each length runs ``SadTalker.generate`` in its own process (so ``ru_maxrss`` is that run's peak) on
art_0.png + the first N seconds of the audio (``full`` = all of it; japanese.wav is 9.1 s, so longer lengths
repeat it: 40 s = 1000 frames).
Everything that scales with the length is real: audio decoding and mel windows, ExpNet/PoseVAE coefficients
for the whole clip, the per-frame keypoints' inputs, aspect restore / paste-back, uint8 conversion and the
streaming H.264 + AAC encoder receiving every frame.

Without ``--render-all`` only the first batch is rendered by the real generator (a 256 frame takes seconds on a
CPU); that batch is re-submitted (as a fresh copy) for every later batch. The render loop's own memory does not
depend on the length (one batch at a time), which is what this checks for the rest of the path.
``--render-all`` renders every frame (for a GPU machine).
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
from sadtalker_core.errors import Cancelled  # noqa: E402
from sadtalker_core.progress import Stage  # noqa: E402

_real_render_frames = animate.render_frames


def replay_first_batch(*args, batch_size: int = 2, progress=None, cancel=None, **kwargs):
    """``render_frames`` that renders its first batch for real and re-yields copies of it for the rest."""
    total = len(args[5])
    frames = None
    for start, frames in _real_render_frames(*args, batch_size=batch_size, progress=progress, cancel=cancel,
                                             **kwargs):
        yield animate.RenderedBatch(start, frames)
        break
    for start in range(batch_size, total, batch_size):
        stop = min(start + batch_size, total)
        if cancel is not None and cancel.is_set():
            raise Cancelled(f"Rendering was cancelled after {start} of {total} frames.")
        if progress is not None:
            progress(Stage.RENDER, stop, total)
        yield animate.RenderedBatch(start, frames[:stop - start].clone())


def child(args) -> None:
    if not args.render_all:
        animate.render_frames = replay_first_batch
    with tempfile.TemporaryDirectory(prefix="sadtalker_mem_") as tmp:
        speech, seconds = cut_audio(args.audio, None if args.length == "full" else float(args.length), Path(tmp))
        talker = SadTalker(args.checkpoint_dir, download=False)
        talker.runtime.prepare(256, args.preprocess)
        loaded = rss_mb()
        start = time.perf_counter()
        with RssSampler() as during:
            result = talker.generate(str(args.image), str(speech), output_path=Path(tmp) / "out.mp4",
                                     preprocess=args.preprocess, batch_size=args.batch_size,
                                     face_detector="dlib", seed=0)
        size_mb = result.video_path.stat().st_size / 2 ** 20
    print(json.dumps({"seconds": round(seconds, 2), "frames": result.info["num_frames"],
                      "rss_loaded_mb": round(loaded), "rss_peak_generate_mb": round(during.peak_mb),
                      "ru_maxrss_mb": round(peak_rss_mb()), "wall_s": round(time.perf_counter() - start, 1),
                      "video_mb": round(size_mb, 2), "stages": result.info["seconds"], "load": load_average()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--lengths", default="2,8,40", help="seconds per run ('full' = the file as it is)")
    parser.add_argument("--image", type=Path, default=MEDIA / "art_0.png")
    parser.add_argument("--audio", type=Path, default=MEDIA / "japanese.wav")
    parser.add_argument("--preprocess", default="crop")
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--render-all", action="store_true", help="render every frame with the generator")
    parser.add_argument("--length", help=argparse.SUPPRESS)  # set in the per-length child process
    args = parser.parse_args()
    if args.length is not None:
        return child(args)

    how = ("every frame rendered" if args.render_all else
           "first batch rendered by the real generator, re-submitted for every later batch")
    print(f"# memory benchmark: {args.image.name} + {args.audio.name} (repeated where a length exceeds it), "
          f"preprocess {args.preprocess}, batch {args.batch_size}; {how}; audio, coefficients, paste/aspect and "
          f"encoder real for the whole length")
    print(f"{'audio s':>8} {'frames':>7} {'RSS loaded':>11} {'peak in generate':>17} {'ru_maxrss':>10} "
          f"{'generate s':>11}  stages (s) @ load")
    for length in args.lengths.split(","):
        command = [sys.executable, __file__, "--checkpoint_dir", args.checkpoint_dir, "--length", length,
                   "--image", str(args.image), "--audio", str(args.audio), "--preprocess", args.preprocess,
                   "--batch_size", str(args.batch_size)] + (["--render-all"] if args.render_all else [])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{length}: failed\n{done.stderr[-3000:]}")
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{r['seconds']:8.2f} {r['frames']:7d} {r['rss_loaded_mb']:8d} MB {r['rss_peak_generate_mb']:14d} MB "
              f"{r['ru_maxrss_mb']:7d} MB {r['wall_s']:11.1f}  {json.dumps(r['stages'])} @ {r['load']}", flush=True)


if __name__ == "__main__":
    main()
