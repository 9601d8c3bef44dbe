"""Throughput of N short jobs: one ``python -m sadtalker_core batch`` (networks loaded once) against N separate
``python -m sadtalker_core`` runs (python, torch and the networks loaded N times).

    .venv/bin/python bench/bench_batch.py --checkpoint_dir DIR [--jobs 3] [--seconds 0.12]
        [--image happy.png] [--audio RD_Radio31_000.wav] [--device cpu] [--ray auto]

Both sides run as fresh processes on the same inputs (one portrait, the audio cut to ``--seconds``, dlib
landmarks, the same seed per job) and write into a temporary folder. Prints wall seconds per side, jobs per
minute and the ratio. ``--ray`` adds a third run of the batch spread over Ray.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import MEDIA, REPO, cut_audio, load_average


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint_dir", required=True)
    parser.add_argument("--jobs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.12)
    parser.add_argument("--image", type=Path, default=MEDIA / "happy.png")
    parser.add_argument("--audio", type=Path, default=MEDIA / "RD_Radio31_000.wav")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ray", default=None, help="also run the batch with --ray ADDRESS (e.g. auto)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_batch_") as tmp:
        tmp = Path(tmp)
        audio, seconds = cut_audio(args.audio, args.seconds, tmp)
        common = ["--checkpoint_dir", args.checkpoint_dir, "--device", args.device, "--face_detector", "dlib",
                  "--quiet"]
        spec = tmp / "jobs.jsonl"
        spec.write_text("\n".join(json.dumps({"key": f"job{i}", "source_image": str(args.image),
                                              "driven_audio": str(audio), "seed": i}) for i in range(args.jobs)))
        print(f"{args.jobs} jobs of {seconds:.2f} s audio on {args.device}; {load_average()}")

        separate = 0.0
        for i in range(args.jobs):
            separate += _timed([sys.executable, "-m", "sadtalker_core", "--source_image", str(args.image),
                                "--driven_audio", str(audio), "--result_dir", str(tmp / "separate" / str(i)),
                                "--seed", str(i), *common])
        batched = _timed([sys.executable, "-m", "sadtalker_core", "batch", str(spec), "--result_dir",
                          str(tmp / "batch"), *common])
        rows = [("separate runs", separate), ("one batch", batched)]
        if args.ray:
            rows.append((f"batch --ray {args.ray}", _timed([sys.executable, "-m", "sadtalker_core", "batch",
                                                            str(spec), "--result_dir", str(tmp / "ray"), *common,
                                                            "--ray", args.ray])))
        for name, wall in rows:
            print(f"{name:24} {wall:8.1f} s  {60 * args.jobs / wall:6.2f} jobs/min")
        print(f"batch speed-up over separate runs: {separate / batched:.2f}x; {load_average()}")


if __name__ == "__main__":
    main()
