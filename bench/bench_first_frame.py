"""Time to the first finished frame (the live preview) and to the finished file, per preprocess mode.

    .venv/bin/python bench/bench_first_frame.py --checkpoint_dir DIR [--modes crop,full] [--seconds 0.4]
        [--size 256] [--batch_size 2] [--runs 2] [--threads N] [--device cpu]

Each run calls ``SadTalker.generate(..., preview=...)`` on a real portrait and real speech (dlib landmarks)
and prints, from the call: the first preview frame (pasted into the whole picture in full modes), the end of
each stage before rendering, and the finished mp4. Run 1 of the first mode includes loading the networks;
the others are warm. Synthetic weights render at the real cost: ``bench/synthetic_checkpoints.py DIR``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import MEDIA, cut_audio, load_average, set_threads

from sadtalker_core import SadTalker  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--image", type=Path, default=MEDIA / "art_0.png")
    parser.add_argument("--audio", type=Path, default=MEDIA / "RD_Radio31_000.wav")
    parser.add_argument("--seconds", type=float, default=0.4)
    parser.add_argument("--modes", default="crop,full")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    threads = set_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="sadtalker_bench_") as tmp:
        speech, seconds = cut_audio(args.audio, args.seconds, Path(tmp))
        talker = SadTalker(args.checkpoint_dir, device=args.device, download=False)
        print(f"# first-frame benchmark: {args.image.name} + {seconds:.2f} s of {args.audio.name}, size "
              f"{args.size}, batch {args.batch_size}, device {talker.device}, {threads} threads, dlib landmarks")
        for mode in args.modes.split(","):
            for run in range(1, args.runs + 1):
                marks: dict[str, float] = {}
                start = time.perf_counter()

                def progress(stage: str, done: int, total: int) -> None:
                    marks.setdefault(stage, time.perf_counter() - start)

                def preview(frame) -> None:
                    marks.setdefault("first_frame", time.perf_counter() - start)
                    marks.setdefault("frame_shape", frame.shape)

                before = load_average()
                result = talker.generate(str(args.image), str(speech), output_path=Path(tmp) / f"{mode}{run}.mp4",
                                         preprocess=mode, size=args.size, batch_size=args.batch_size,
                                         face_detector="dlib", seed=0, progress=progress, preview=preview)
                done = time.perf_counter() - start
                stages = " ".join(f"{k}@{v:.2f}" for k, v in marks.items() if k not in ("first_frame", "frame_shape"))
                height, width = marks["frame_shape"][:2]
                print(f"{mode:>7} run {run}: first frame {marks['first_frame']:.2f} s, finished file {done:.2f} s "
                      f"({result.info['num_frames']} frames, {width}x{height}); stage starts (s): {stages}; "
                      f"{before} -> {load_average()}", flush=True)


if __name__ == "__main__":
    main()
