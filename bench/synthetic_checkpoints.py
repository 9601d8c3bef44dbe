"""Write the golden kit's synthetic weights under the official file names, for benchmarks without real weights.

    .venv/bin/python bench/synthetic_checkpoints.py DIR [--sizes 256,512] [--seed 0]

Files already in DIR are kept. About 0.8 GB per size; the values are deterministic (``shared/tools``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import write_synthetic_checkpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--sizes", default="256")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = write_synthetic_checkpoints(args.folder, tuple(int(s) for s in args.sizes.split(",")), args.seed)
    for path in sorted(folder.iterdir()):
        print(f"{path.stat().st_size / 2 ** 20:9.1f} MB  {path}")


if __name__ == "__main__":
    main()
