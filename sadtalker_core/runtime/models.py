"""Everything one SadTalker instance holds in memory: networks, face detectors, enhancers, device, precision.

``ModelRuntime`` is the single owner. Weights load lazily, the first time a job needs them, and stay loaded
between jobs until ``unload()``: the 3DMM regressor, ExpNet and PoseVAE once; the renderer (KPDetector +
generator) once per size (256/512); MappingNet once per semantics width (70 for crop/extcrop/resize, 73 for
full/extfull); each landmark detector and each enhancer once. Every other module receives what it needs
from the runtime's primitives (one method per network call) and never loads weights itself.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import numpy as np
import torch

from ..errors import OptionError
from ..face import landmarks
from ..motion import coeffs
from ..nets.inference import optimize_for_inference
from ..options import Preprocess
from ..render import animate
from .checkpoint_files import default_checkpoint_dir, locate_checkpoints
from .network_loading import build_networks


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


class RenderPrecision:
    """The generator's precision: autocast to ``dtype`` on ``device`` (float32 runs as it is)."""

    def __init__(self, device: torch.device, dtype: torch.dtype):
        self.device, self.dtype = device, dtype

    def autocast(self):
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        try:
            return torch.autocast(self.device.type, dtype=self.dtype)
        except RuntimeError:
            # Devices without autocast on this torch version render in float32 (slower, same result).
            return contextlib.nullcontext()

    def generator(self, generator: torch.nn.Module) -> "PrecisionGenerator":
        return PrecisionGenerator(generator, self)


class PrecisionGenerator:
    """A generator whose calls run under a :class:`RenderPrecision` (the render loop stays precision-free)."""

    def __init__(self, generator: torch.nn.Module, precision: RenderPrecision):
        self.module, self.precision = generator, precision

    def encode_source(self, source_image: torch.Tensor) -> torch.Tensor:
        with self.precision.autocast():
            return self.module.encode_source(source_image)

    def animate(self, feature_3d: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> dict:
        with self.precision.autocast():
            return self.module.animate(feature_3d, kp_source, kp_driving)

    def __call__(self, source_image: torch.Tensor, kp_source: torch.Tensor, kp_driving: torch.Tensor) -> dict:
        with self.precision.autocast():
            return self.module(source_image, kp_source, kp_driving)


def _family(preprocess: str) -> str:
    return "full" if Preprocess(preprocess).pastes_back else "crop"


class ModelRuntime:
    """Loads and keeps every weight of the pipeline on one device at one render precision.

    ``device=None`` picks cuda, mps or cpu (:func:`pick_device`); ``dtype=None`` half precision on GPUs
    (:func:`pick_render_dtype`). Call :meth:`prepare` before the network primitives of a job.
    """

    def __init__(self, checkpoint_dir: str | Path | None = None, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, old_version: bool = False, download: bool = True):
        self.checkpoint_dir = Path(checkpoint_dir if checkpoint_dir is not None
                                   else default_checkpoint_dir())
        self.device = pick_device(device)
        self.render_dtype = pick_render_dtype(self.device, dtype)
        self.precision = RenderPrecision(self.device, self.render_dtype)
        self.old_version = old_version
        self.download = download
        self.detectors = landmarks.Detectors()
        self._nets: dict[str, torch.nn.Module] = {}
        self._enhancers: dict[str, object] = {}
        self._lock = threading.Lock()

    # -- loading -------------------------------------------------------------------------------------------
    def _load(self, size: int, preprocess: str, wanted: tuple[str, ...], progress) -> None:
        checkpoint_set = locate_checkpoints(
            self.checkpoint_dir, size=size, preprocess=preprocess, old_version=self.old_version,
            download=self.download, progress=progress)
        nets = build_networks(checkpoint_set, names=wanted)
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
        """What is held now: networks, detectors (``detector:<kind>``) and enhancers (``enhancer:<name>``)."""
        return sorted([*self._nets, *(f"detector:{d}" for d in self.detectors.loaded()),
                       *(f"enhancer:{name}" for name in self._enhancers)])

    def unload(self) -> None:
        """Frees every network, detector and enhancer (and the CUDA cache); the next job loads them again."""
        with self._lock:
            self._nets.clear()
            self._enhancers.clear()
            self.detectors.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _get(self, key: str) -> torch.nn.Module:
        try:
            return self._nets[key]
        except KeyError:
            raise RuntimeError(f"network {key} is not loaded; call prepare() first") from None

    # -- motion networks ------------------------------------------------------------------------------------
    def recon_coefficients(self, batch: torch.Tensor) -> np.ndarray:
        """The 3DMM regressor on aligned faces (N, 3, 224, 224) in [0, 1] -> (N, 257) float32 on the CPU."""
        with torch.inference_mode():
            return self._get("face_recon")(batch.to(self.device)).float().cpu().numpy()

    def expnet(self) -> torch.nn.Module:
        return self._get("expnet")

    def posevae(self) -> torch.nn.Module:
        return self._get("posevae")

    def expression(self, windows: torch.Tensor, ref_exp: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
        """ExpNet: expression (1, T, 64) for mel windows (1, T, 1, 80, 16), reference expressions (1, T, 64)
        and blink ratios (1, T, 1), all on the runtime's device."""
        with torch.inference_mode():
            return coeffs.expression_coeffs(self.expnet(), windows, ref_exp, ratio)

    def pose(self, windows: torch.Tensor, ref_pose: torch.Tensor, pose_style: int,
             latents: torch.Tensor) -> torch.Tensor:
        """PoseVAE: head motion (1, T, 6) for mel windows, the source pose (1, 6), a style and latents."""
        with torch.inference_mode():
            return coeffs.pose_coeffs(self.posevae(), windows, ref_pose, pose_style, latents)

    # -- renderer -------------------------------------------------------------------------------------------
    def render_networks(self, size: int, preprocess: str) -> tuple:
        """(KPDetector, MappingNet, generator under the render precision) for this size and mode."""
        return (self._get(f"kp_detector@{size}"), self._get(f"mapping_net@{_family(preprocess)}"),
                self.precision.generator(self._get(f"generator@{size}")))

    def encode_source(self, source_image: torch.Tensor, source_semantics: torch.Tensor, size: int,
                      preprocess: str) -> animate.EncodedSource:
        """Keypoints and generator feature of source images (B, 3, S, S) with their semantics (B, C, 27)."""
        return animate.encode_source(*self.render_networks(size, preprocess), source_image.to(self.device),
                                     source_semantics.to(self.device).float())

    def render(self, source_image: torch.Tensor, source_semantics, target_windows, size: int, preprocess: str,
               **loop_options):
        """``animate.RenderedBatch`` after batch: one source rendered for every target window
        (``animate.render_frames``: ``yaw`` / ``pitch`` / ``roll``, ``batch_size``, ``progress``, ``cancel``)."""
        return animate.render_frames(*self.render_networks(size, preprocess), source_image.to(self.device),
                                     source_semantics, target_windows, **loop_options)

    def render_per_source(self, source_images: torch.Tensor, source_semantics: torch.Tensor,
                          target_windows: torch.Tensor, size: int, preprocess: str) -> torch.Tensor:
        """One batch where every frame has its own source (dubbing): frames (b, 3, S, S) float32 in (0, 1)."""
        return animate.render_batch_per_source(*self.render_networks(size, preprocess),
                                               source_images.to(self.device), source_semantics.to(self.device),
                                               target_windows.to(self.device))

    # -- faces ----------------------------------------------------------------------------------------------
    def landmark_backend(self, backend: str) -> tuple[str, str]:
        """(the backend that will run, how "auto" chose it); see ``landmarks.resolve_backend``."""
        return landmarks.resolve_backend(backend, self.checkpoint_dir, download=self.download)

    def faces(self, image: np.ndarray, backend: str, **options) -> list[landmarks.Face]:
        """Every face in ``image`` with its 68 landmarks (``landmarks.detect_faces``), detectors kept loaded."""
        return landmarks.detect_faces(image, backend, **self._detect_options(options))

    def landmarks(self, image: np.ndarray, backend: str, **options) -> landmarks.Face:
        """The one face to animate (``landmarks.locate_face``: ``landmarks``, ``face_box``, ``face_index``)."""
        return landmarks.locate_face(image, backend=backend, **self._detect_options(options))

    def _detect_options(self, options: dict) -> dict:
        return dict(weights_dir=self.checkpoint_dir, device=str(self.device), detectors=self.detectors, **options)

    # -- enhancers ------------------------------------------------------------------------------------------
    def enhancer(self, name: str, seed: int | None = None):
        """Enhancer ``name``, read from disk once and kept; ``seed`` sets its noise for this job (GFPGAN)."""
        from ..render import enhance

        with self._lock:
            if name not in self._enhancers:
                self._enhancers[name] = enhance.load_enhancer(name, self.checkpoint_dir, self.device)
            found = self._enhancers[name]
        found.use_seed(seed)
        return found
