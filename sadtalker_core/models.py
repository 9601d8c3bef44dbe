"""The networks of one SadTalker instance: built and loaded once, kept on one device.

``SadTalkerModels`` owns loading, device and precision; every other module receives networks as
arguments. Networks load lazily, the first time a job needs them, and stay loaded between jobs:
the 3DMM regressor, ExpNet and PoseVAE once; the renderer once per size (256/512); MappingNet once
per semantics width (70 for crop/extcrop/resize, 73 for full/extfull).
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch

from . import checkpoints
from .errors import OptionError
from .nets.inference import optimize_for_inference


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``None``: cuda if available, else mps, else cpu. An unusable device is an ``OptionError``."""
    if device is not None:
        try:
            chosen = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise OptionError(f"device {device!r} is not a torch device ({exc}); use e.g. 'cpu' or 'cuda:0'.") from None
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise OptionError(f"device {device!r} was asked for, but this torch has no usable CUDA GPU; "
                              "use device='cpu' (CLI: --cpu).")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_render_dtype(device: torch.device, dtype: torch.dtype | None = None) -> torch.dtype:
    """Half precision on GPUs (the renderer is 600 GMAC per 256 frame), float32 elsewhere."""
    if dtype is not None:
        return dtype
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def _family(preprocess: str) -> str:
    return "full" if "full" in preprocess else "crop"


class SadTalkerModels:
    def __init__(self, checkpoint_dir: str | Path, device: torch.device, render_dtype: torch.dtype,
                 old_version: bool = False, download: bool = True):
        self.checkpoint_dir = Path(checkpoint_dir)
        self.device = device
        self.render_dtype = render_dtype
        self.old_version = old_version
        self.download = download
        self._nets: dict[str, torch.nn.Module] = {}
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------------------------
    def _load(self, size: int, preprocess: str, wanted: tuple[str, ...], progress) -> None:
        checkpoint_set = checkpoints.locate_checkpoints(
            self.checkpoint_dir, size=size, preprocess=preprocess, old_version=self.old_version,
            download=self.download, progress=progress)
        nets = checkpoints.build_networks(checkpoint_set, names=wanted)
        for name, net in nets.items():
            self._nets[self._key(name, size, preprocess)] = optimize_for_inference(net.to(self.device))

    @staticmethod
    def _key(name: str, size: int, preprocess: str) -> str:
        if name in ("kp_detector", "generator"):
            return f"{name}@{size}"
        if name == "mapping_net":
            return f"{name}@{_family(preprocess)}"
        return name

    def prepare(self, size: int, preprocess: str, progress=None) -> None:
        """Loads whatever a job with this size and preprocess mode needs and is not loaded yet
        (downloading missing official files first; ``progress(stage, done, total)`` reports it)."""
        names = ("face_recon", "expnet", "posevae", "kp_detector", "generator", "mapping_net")
        with self._lock:
            missing = tuple(n for n in names if self._key(n, size, preprocess) not in self._nets)
            if missing:
                self._load(size, preprocess, missing, progress)

    def loaded(self) -> list[str]:
        return sorted(self._nets)

    def unload(self) -> None:
        with self._lock:
            self._nets.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- networks -----------------------------------------------------------------------------------------
    def _get(self, key: str) -> torch.nn.Module:
        try:
            return self._nets[key]
        except KeyError:
            raise RuntimeError(f"network {key} is not loaded; call prepare() first") from None

    def face_recon(self):
        return self._get("face_recon")

    def expnet(self):
        return self._get("expnet")

    def posevae(self):
        return self._get("posevae")

    def kp_detector(self, size: int):
        return self._get(f"kp_detector@{size}")

    def generator(self, size: int):
        return self._get(f"generator@{size}")

    def mapping_net(self, preprocess: str):
        return self._get(f"mapping_net@{_family(preprocess)}")
