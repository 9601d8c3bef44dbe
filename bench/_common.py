"""Shared by the benchmarks: machine load, memory, thread setup, render networks, synthetic checkpoints.

Every number a benchmark prints comes with the 1-minute load average: on a shared machine a busy core makes
any timing meaningless, so repeat and take the minimum.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SADTALKER_SHARED_DIR", REPO.parent / "shared"))
MEDIA = SHARED / "media"
sys.path.insert(0, str(REPO))

from sadtalker_core.runtime import checkpoint_files, network_loading  # noqa: E402

RENDER_NETWORKS = ("kp_detector", "mapping_net", "generator")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_average() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f}/{five:.2f} on {os.cpu_count()} cpus"


def rss_mb() -> float:
    """Resident set size now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    except OSError:
        return 0.0


def peak_rss_mb() -> float:
    """Highest resident set size of this process so far (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 2 ** 10


class RssSampler:
    """Peak resident memory inside a ``with`` block, sampled every few milliseconds (ru_maxrss only knows the
    peak of the whole process, which an earlier phase may have set)."""

    def __init__(self, interval_s: float = 0.005):
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, rss_mb())
            time.sleep(self.interval_s)

    def __enter__(self) -> "RssSampler":
        self.peak_mb = rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb())


def set_threads(threads: int | None) -> int:
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def render_networks(checkpoint_dir: str | None, size: int, coeff_nc: int = 70,
                    optimize: bool = True) -> tuple[dict[str, torch.nn.Module], str]:
    """KPDetector, MappingNet, generator in eval mode, and a note saying where the weights came from.

    With ``checkpoint_dir`` the official files are located and strictly loaded as the pipeline does; without
    it the networks keep their random initialisation (timings do not depend on the values). ``optimize``
    applies the same load-time inference transforms as ``models.ModelRuntime``.
    """
    if checkpoint_dir:
        preprocess = "full" if coeff_nc == 73 else "crop"
        found = checkpoint_files.locate_checkpoints(checkpoint_dir, size=size, preprocess=preprocess, download=False)
        nets = network_loading.build_networks(found, names=RENDER_NETWORKS)
        note = f"weights: {', '.join(sorted({p.name for p in found.files}))} from {checkpoint_dir}"
    else:
        nets = {name: network_loading.new_network(name, coeff_nc).eval().requires_grad_(False)
                for name in RENDER_NETWORKS}
        note = "weights: random init (no --checkpoint_dir; speed does not depend on the values)"
    if optimize:
        from sadtalker_core.nets.inference import optimize_for_inference

        nets = {name: optimize_for_inference(net) for name, net in nets.items()}
    return nets, note


def write_synthetic_checkpoints(folder: Path, sizes=(256,), seed: int = 0) -> Path:
    """The golden kit's deterministic synthetic weights under the official file names (about 0.8 GB per
    size), written once; needs ``../shared`` (tools + manifests)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("synth_weights", SHARED / "tools" / "synth_weights.py")
    sw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sw)
    names = [f"SadTalker_V0.0.2_{size}.safetensors" for size in sizes]
    names += ["mapping_00229-model.pth.tar", "mapping_00109-model.pth.tar"]
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        target = folder / name
        if target.exists():
            continue
        manifest = sw.load_manifest(str(SHARED / "golden" / "manifests" / f"{name}.json"))
        partial = target.with_name(name + ".partial")
        sw.save_checkpoint(manifest, str(partial), seed=seed)
        partial.rename(target)
    return folder


def cut_audio(source: Path, seconds: float | None, folder: Path) -> tuple[Path, float]:
    """The first ``seconds`` of ``source`` (all of it for None; a shorter clip is repeated to reach
    ``seconds``) as a 16 kHz mono WAV in ``folder``, and its length in seconds."""
    import wave

    import numpy as np

    from sadtalker_core.motion import audio

    samples = audio.load_audio(source)
    if seconds is not None:
        wanted = int(round(seconds * audio.SAMPLE_RATE))
        samples = np.tile(samples, -(-wanted // len(samples)))[:wanted]
    path = folder / f"{source.stem}_{len(samples)}.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(audio.SAMPLE_RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return path, len(samples) / audio.SAMPLE_RATE
