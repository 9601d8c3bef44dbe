"""Paste-back speed: batched spectral blend ("seamless") vs the official per-frame cv2.seamlessClone.

    .venv/bin/python bench/bench_paste.py [--frames 16] [--batch 8]

A 512x768 (W x H) picture like the kit's full3.png, a 400x400 box, 256x256 rendered frames.
Prints ms per frame (median of the repeats) on the CPU, and on CUDA when available.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sadtalker_core.render.paste import Paster  # noqa: E402

HEIGHT, WIDTH = 768, 512
BOX = (56, 184, 456, 584)


def _picture() -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    base = np.stack([60 + 0.3 * xx, 80 + 0.2 * yy, 200 - 0.1 * (xx + yy)], -1)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def _frames(count: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(count, 3, 16, 16, generator=gen), size=(256, 256),
                                             mode="bilinear", align_corners=False)
    return (smooth + 0.05 * torch.rand(count, 3, 256, 256, generator=gen)).clamp(0, 1)


def _time_per_frame(run, frames: torch.Tensor, batch: int, repeats: int, sync=lambda: None) -> float:
    run(frames[:batch])  # warm-up: FFT plans, allocations
    sync()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, frames.shape[0], batch):
            run(frames[i:i + batch])
        sync()
        timings.append((time.perf_counter() - start) / frames.shape[0] * 1000)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    picture, frames = _picture(), _frames(args.frames)
    print(f"picture {WIDTH}x{HEIGHT}, box {BOX[2] - BOX[0]}x{BOX[3] - BOX[1]}, frames 256x256, "
          f"{args.frames} frames, batch {args.batch}, torch threads {torch.get_num_threads()}")
    rows = []
    for blend in ("poisson", "seamless", "none"):
        paster = Paster(picture, BOX, blend)
        rows.append((f"cpu  {blend:9s}" + (" (cv2.seamlessClone per frame)" if blend == "poisson" else ""),
                     _time_per_frame(paster.paste, frames, 1 if blend == "poisson" else args.batch, args.repeats)))
    if torch.cuda.is_available():
        gpu_frames = frames.cuda()
        for blend in ("seamless", "none"):
            paster = Paster(picture, BOX, blend, device="cuda")
            rows.append((f"cuda {blend:9s} ({torch.cuda.get_device_name()})",
                         _time_per_frame(paster.paste, gpu_frames, args.batch, args.repeats, torch.cuda.synchronize)))
    for name, ms in rows:
        print(f"{name:60s} {ms:8.2f} ms/frame  ({1000 / ms:7.1f} fps)")


if __name__ == "__main__":
    main()
