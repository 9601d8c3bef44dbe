"""Access to the golden parity kit and the synthetic-weight tool in ../shared.

The kit folder is ``$SADTALKER_GOLDEN_DIR`` when set, else ``../shared/golden`` next to the repo. Parity tests
discover the kit's sidecars (``modules/*.json``, ``stages/s<N>_*.json``) and take kind, weights and parameters
from them: nothing here hard-codes a file list, a seed or a size.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SADTALKER_SHARED_DIR", REPO.parent / "shared"))
MEDIA = SHARED / "media"

#: (golden file, array, statistic text) for every comparison made; printed in the pytest terminal summary.
CHECKED: list[tuple[str, str, str]] = []


def kit_dir() -> Path:
    return Path(os.environ.get("SADTALKER_GOLDEN_DIR", SHARED / "golden")).resolve()


@functools.lru_cache(maxsize=1)
def synth_weights():
    """The shared ``synth_weights`` module (builds the kit's deterministic weights from a manifest)."""
    path = SHARED / "tools" / "synth_weights.py"
    spec = importlib.util.spec_from_file_location("synth_weights", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sidecars(subfolder: str, pattern: str = "*.json") -> list[Path]:
    return sorted((kit_dir() / subfolder).glob(pattern))


def load_sidecar(json_path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The sidecar's metadata and the arrays of its ``.npz`` (loaded eagerly, so the file is closed)."""
    meta = json.loads(Path(json_path).read_text())
    npz_path = Path(json_path).with_suffix(".npz")
    arrays = {}
    if npz_path.exists():
        with np.load(npz_path) as npz:
            arrays = {k: npz[k] for k in npz.files}
    return meta, arrays


@functools.lru_cache(maxsize=1)
def manifest_paths() -> tuple[Path, ...]:
    return tuple(sidecars("manifests", "*.json"))


@functools.lru_cache(maxsize=16)
def load_manifest(relative: str):
    return synth_weights().load_manifest(str(kit_dir() / relative))


@functools.lru_cache(maxsize=8)
def _state_dict(manifest: str, seed: int, section: str, strip_prefix: str | None):
    sw = synth_weights()
    return sw.synth_state_dict(load_manifest(manifest), seed, section, strip_prefix)


def synth_state(weights: dict):
    """The synthetic state dict a sidecar's ``weights`` entry describes (cached; do not mutate)."""
    return _state_dict(weights["manifest"], int(weights["seed"]), weights.get("section") or "",
                       weights.get("strip_prefix"))


def record(golden_file: str | Path, array: str, stats: str) -> None:
    CHECKED.append((Path(golden_file).name, array, stats))
