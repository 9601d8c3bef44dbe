"""Face-render speed per frame: the official loop vs ``sadtalker_core.render.animate.render_frames``.

    .venv/bin/python bench/bench_render.py [--checkpoint_dir DIR] [--size 256|512] [--batch-sizes 1,2,4]
        [--frames 4] [--repeats 1] [--threads N] [--dtype float32|bfloat16] [--modes official,ours] [--plain]

official: the ``make_animation`` loop: KPDetector and the source MappingNet once on B copies of the source, then
    per batch of B frames MappingNet on the driving windows and the full ``generator(source, kp_source,
    kp_driving)``, which re-encodes the B source copies every step.
ours: ``render_frames`` (source encoded once at batch 1 and broadcast, frames yielded batch by batch).

Both render the same ``--frames`` frames (random semantic windows) with the same networks. Times cover the whole
call, one-time source work included; the minimum over ``--repeats`` is reported with the load average seen.
Peak RSS is sampled while the mode runs. ``--plain`` skips the load-time inference transforms
(``optimize_for_inference``) to show their effect.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from _common import DTYPES, RssSampler, load_average, peak_rss_mb, render_networks, set_threads

from sadtalker_core.render import animate  # noqa: E402
from sadtalker_core.runtime.models import RenderPrecision  # noqa: E402


def official_loop(nets, source_image, source_semantics, windows, batch_size: int, dtype) -> list[torch.Tensor]:
    """The official per-step loop; frame order and padding as ``batch_layout`` (padded frames are rendered,
    as in the original, then dropped)."""
    precision = RenderPrecision(source_image.device, dtype)
    total = windows.shape[0]
    layout = animate.batch_layout(windows, batch_size)  # (B, L, C, 27)
    sources = source_image.expand(batch_size, -1, -1, -1)
    with torch.inference_mode():
        kp_canonical = nets["kp_detector"](sources)
        kp_source = animate.transform_keypoints(kp_canonical, nets["mapping_net"](
            torch.as_tensor(source_semantics).expand(batch_size, -1, -1)))
        steps = []
        for step in range(layout.shape[1]):
            kp_driving = animate.driving_keypoints(nets["mapping_net"], kp_canonical, layout[:, step])
            with precision.autocast():
                steps.append(nets["generator"](sources, kp_source, kp_driving)["prediction"].float())
    frames = torch.stack(steps, dim=1).reshape(-1, *steps[0].shape[1:])
    return list(frames[:total])


def ours(nets, source_image, source_semantics, windows, batch_size: int, dtype) -> list[torch.Tensor]:
    generator = RenderPrecision(source_image.device, dtype).generator(nets["generator"])
    return [frames for _, frames in animate.render_frames(
        nets["kp_detector"], nets["mapping_net"], generator, source_image, source_semantics, windows,
        batch_size=batch_size)]


MODES = {"official": official_loop, "ours": ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint_dir", default=None, help="official (or synthetic) checkpoint folder")
    parser.add_argument("--size", type=int, default=256, choices=(256, 512))
    parser.add_argument("--batch-sizes", default="1,2,4")
    parser.add_argument("--frames", type=int, default=4, help="frames rendered per measurement")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--modes", default="official,ours")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--plain", action="store_true", help="no optimize_for_inference (the 'before' numbers)")
    args = parser.parse_args()

    threads = set_threads(args.threads)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    nets, note = render_networks(args.checkpoint_dir, args.size, optimize=not args.plain)
    nets = {name: net.to(device) for name, net in nets.items()}
    gen = torch.Generator().manual_seed(0)
    source_image = torch.rand(1, 3, args.size, args.size, generator=gen).to(device)
    source_semantics = animate.source_semantics(torch.randn(1, 73, generator=gen).numpy() * 0.1, "crop")
    windows = animate.semantic_windows(torch.randn(args.frames, 70, generator=gen) * 0.1).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    print(f"# render benchmark: size {args.size}, {args.frames} frames per run, dtype {args.dtype}, "
          f"{threads} threads, device {device}, torch {torch.__version__}, "
          f"{'plain nets' if args.plain else 'optimize_for_inference'}")
    print(f"# {note}; RSS after loading {peak_rss_mb():.0f} MB")
    print(f"{'mode':9} {'batch':>5} {'s/frame':>8} {'frames/s':>9} {'peak RSS MB':>12}  runs (s/frame) @ load")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        for mode in args.modes.split(","):
            runs = []
            with RssSampler() as rss:
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    MODES[mode](nets, source_image, source_semantics, windows, batch, dtype)
                    sync()
                    runs.append(((time.perf_counter() - start) / args.frames, load_average()))
            best = min(r[0] for r in runs)
            rendered = math.ceil(args.frames / batch) * batch if mode == "official" else args.frames
            detail = "; ".join(f"{t:.2f} @ {load}" for t, load in runs)
            print(f"{mode:9} {batch:5d} {best:8.2f} {1 / best:9.3f} {rss.peak_mb:12.0f}  {detail}"
                  + (f" ({rendered} rendered incl. padding)" if rendered != args.frames else ""), flush=True)


if __name__ == "__main__":
    main()
