"""Optional face restoration (GFPGAN v1.4, RestoreFormer, CodeFormer) and background upscaling
(Real-ESRGAN x2) through spandrel, batched on the device.

The official enhancer re-decodes the finished video and, per frame, detects the face again, aligns it to
512, restores it, parses it and pastes it back. Here the face's location is known: the
rendered frames *are* the face crop (crop/full modes: the FFHQ-style quad box that the 512 restorers are
trained on; ext modes: a larger box with the quad inside). So frames are restored before paste-back:
the face region is resampled to 512, restored, resampled back (or to a larger ``out_size``, which is the
point of restoring before pasting into a large box) and, for a sub-region, feathered into the frame.

GFPGAN injects noise in its StyleGAN decoder; the official code draws fresh noise per frame, which makes
the result flicker and unreproducible. Here one set of noise maps is used for every frame: the
checkpoint's stored maps, or maps drawn from ``seed``.

spandrel imports torchvision (used only by two architectures); torch CPU wheels have none, so a minimal
stand-in is put in place only while spandrel is imported and only when torchvision is missing.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from ..errors import (CheckpointMismatchError, CheckpointNotFoundError, CorruptCheckpointError, OptionError,
                      SadTalkerError)
from ..runtime.weight_files import torch_load_weights


@dataclass(frozen=True)
class EnhancerSpec:
    files: tuple[str, ...]  # accepted file names, first = the official one
    url: str
    architectures: tuple[str, ...]  # spandrel architecture ids this enhancer may hold
    face: bool  # True: 512 face restorer; False: whole-picture upscaler


ENHANCER_SPECS: dict[str, EnhancerSpec] = {
    "gfpgan": EnhancerSpec(("GFPGANv1.4.pth", "GFPGANv1.4.safetensors"),
                           "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
                           ("GFPGAN",), True),
    "RestoreFormer": EnhancerSpec(("RestoreFormer.pth", "RestoreFormer.safetensors"),
                                  "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.4/RestoreFormer.pth",
                                  ("RestoreFormer",), True),
    "codeformer": EnhancerSpec(("codeformer.pth", "codeformer-v0.1.0.pth", "codeformer.safetensors"),
                               "https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
                               ("CodeFormer",), True),
    "realesrgan": EnhancerSpec(("RealESRGAN_x2plus.pth", "RealESRGAN_x2plus.safetensors"),
                               "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
                               ("ESRGAN", "Compact"), False),
}

FACE_SIZE = 512


@contextlib.contextmanager
def _torchvision_stand_in() -> Iterator[None]:
    """Make ``from torchvision.transforms.functional import ...`` work while spandrel is imported, when
    torchvision is absent; removed afterwards so nothing else believes torchvision is installed."""
    try:
        importlib.import_module("torchvision")
        yield
        return
    except ImportError:
        pass
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    package, transforms, functional = (types.ModuleType(name) for name in names)

    class InterpolationMode(enum.Enum):
        NEAREST = "nearest"
        BILINEAR = "bilinear"
        BICUBIC = "bicubic"

    def normalize(tensor, mean, std, inplace=False):
        mean = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return tensor.sub_(mean).div_(std) if inplace else (tensor - mean) / std

    def rotate(*args, **kwargs):
        raise NotImplementedError("torchvision is not installed; rotate is only used by spandrel's LaMa")

    functional.InterpolationMode, functional.normalize, functional.rotate = InterpolationMode, normalize, rotate
    package.transforms, transforms.functional = transforms, functional
    sys.modules.update(zip(names, (package, transforms, functional)))
    try:
        yield
    finally:
        for name in names:
            sys.modules.pop(name, None)


def import_spandrel() -> types.ModuleType:
    """spandrel, with ``spandrel_extra_arches`` (CodeFormer...) registered when that package is installed."""
    try:
        with _torchvision_stand_in():
            spandrel = importlib.import_module("spandrel")
    except ImportError as error:
        raise SadTalkerError(f"face enhancement needs spandrel ({error}); install it with "
                             "'pip install --no-deps spandrel einops'.") from error
    try:
        extra = importlib.import_module("spandrel_extra_arches")
    except ImportError:
        return spandrel
    if "CodeFormer" not in spandrel.MAIN_REGISTRY:
        if hasattr(extra, "install"):
            extra.install()
        else:  # 0.1.1 (Forge's pin) has only the registry to add
            spandrel.MAIN_REGISTRY.add(*extra.EXTRA_REGISTRY)
    return spandrel


def _search_folders(checkpoint_dir: str | os.PathLike | None) -> tuple[Path, ...]:
    if checkpoint_dir is None:
        from ..runtime.checkpoint_files import default_checkpoint_dir

        checkpoint_dir = default_checkpoint_dir()
    root = Path(checkpoint_dir)
    # the official code looks in gfpgan/weights first (next to the checkpoints folder), then checkpoints/
    return (root, root / "gfpgan" / "weights", root.parent / "gfpgan" / "weights")


def find_enhancer_file(name: str, checkpoint_dir: str | os.PathLike | None = None) -> Path:
    """Path of the weight file of enhancer ``name``; ``CheckpointNotFoundError`` names file, folders, URL."""
    spec = _spec(name)
    folders = _search_folders(checkpoint_dir)
    for folder in folders:
        for file_name in spec.files:
            if (folder / file_name).is_file():
                return folder / file_name
    shown = ", ".join(str(f) for f in folders)
    raise CheckpointNotFoundError(
        f"enhancer '{name}' needs {spec.files[0]}, which is not in {shown}. Download it from {spec.url} "
        f"into {folders[0]} (or {folders[1]}), or run without the enhancer.")


def _spec(name: str) -> EnhancerSpec:
    if name not in ENHANCER_SPECS:
        raise OptionError(f"unknown enhancer {name!r}; choose one of {', '.join(ENHANCER_SPECS)}.")
    return ENHANCER_SPECS[name]


def _read_state_dict(path: Path) -> dict[str, Any]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch_load_weights(path)
    except Exception as error:  # noqa: BLE001 - any reader failure means the file is unusable
        raise CorruptCheckpointError(f"cannot read enhancer weights {path}: {error}. The file is damaged, "
                                     "truncated or not a weights file; download it again.") from error


def architecture_id(descriptor: Any) -> str:
    """The spandrel architecture id of a loaded model: ``descriptor.architecture`` is an object with ``.id``
    in spandrel 0.3+ and the id string itself in 0.1/0.2 (A1111 1.8 pins spandrel 0.1.6)."""
    architecture = descriptor.architecture
    return str(getattr(architecture, "id", architecture))


class Enhancer:
    """A loaded restorer or upscaler. Use :func:`load_enhancer`."""

    def __init__(self, name: str, descriptor: Any, device: torch.device, seed: int | None = None,
                 batch_size: int = 4, fidelity: float = 0.5):
        self.name = name
        self.descriptor = descriptor
        self.device = device
        self.architecture = architecture_id(descriptor)
        self.scale = int(descriptor.scale)
        self.face = _spec(name).face
        self.batch_size = batch_size
        self.fidelity = fidelity
        descriptor.model.eval()
        # the checkpoint's own noise maps, kept so a loaded enhancer can go back to them for a later job
        self._stored_noise = None
        if self.architecture == "GFPGAN":
            self._stored_noise = [b.clone() for b in self._noise_buffers()]
        self.use_seed(seed)

    def _noise_buffers(self) -> list[torch.Tensor]:
        return list(self.descriptor.model.stylegan_decoder.noises.buffers())

    def use_seed(self, seed: int | None) -> None:
        """The noise maps used for every frame of the next job (GFPGAN only; other models have none): drawn
        from ``seed``, or the checkpoint's stored maps for ``None``."""
        if self._stored_noise is None:
            return
        generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        with torch.no_grad():
            for buffer, stored in zip(self._noise_buffers(), self._stored_noise):
                drawn = stored if generator is None else torch.randn(buffer.shape, generator=generator,
                                                                     dtype=torch.float32)
                buffer.copy_(drawn.to(device=buffer.device, dtype=buffer.dtype))

    def _restore_512(self, faces: torch.Tensor) -> torch.Tensor:
        """(B, 3, 512, 512) in [0, 1] -> restored, same shape and range."""
        model = self.descriptor.model
        if self.architecture in ("GFPGAN", "RestoreFormer", "CodeFormer"):
            signed = faces * 2.0 - 1.0
            if self.architecture == "GFPGAN":
                out = model(signed, return_rgb=False, randomize_noise=False)[0]
            elif self.architecture == "CodeFormer":
                out = model(signed, weight=self.fidelity, adain=True)[0]
            else:
                out = model(signed)[0]
            return ((out + 1.0) * 0.5).clamp_(0, 1)
        return self.descriptor(faces).clamp_(0, 1)

    @torch.no_grad()
    def enhance_frames(self, frames: torch.Tensor, face_box: Sequence[float] | None = None,
                       out_size: tuple[int, int] | None = None) -> torch.Tensor:
        """Restore a batch of frames: float ``(N, 3, H, W)`` in [0, 1] -> float ``(N, 3, h, w)``.

        Face restorers: ``face_box`` ``(x1, y1, x2, y2)`` in frame pixels is the face region (``None``: the
        whole frame, right for crop/full renders); ``out_size`` ``(h, w)`` defaults to the input size.
        Upscalers ignore both and return the frames ``scale`` times larger (tiled).
        """
        frames = frames.to(self.device, torch.float32)
        if not self.face:
            return torch.cat([self._upscale(frames[i:i + 1]) for i in range(frames.shape[0])])
        height, width = frames.shape[-2:]
        out_h, out_w = out_size or (height, width)
        outputs = []
        for start in range(0, frames.shape[0], self.batch_size):
            chunk = frames[start:start + self.batch_size]
            if face_box is None:
                restored = self._restore_512(_resize(chunk, (FACE_SIZE, FACE_SIZE)))
                outputs.append(_resize(restored, (out_h, out_w)))
            else:
                outputs.append(self._restore_region(chunk, face_box, (out_h, out_w)))
        return torch.cat(outputs).clamp_(0, 1)

    def _restore_region(self, frames: torch.Tensor, face_box: Sequence[float], out_size: tuple[int, int]
                        ) -> torch.Tensor:
        """Restore the box, then feather it into the frame (both resampled to ``out_size``)."""
        height, width = frames.shape[-2:]
        x1, y1 = max(int(face_box[0]), 0), max(int(face_box[1]), 0)
        x2, y2 = min(int(round(face_box[2])), width), min(int(round(face_box[3])), height)
        if x2 - x1 < 8 or y2 - y1 < 8:
            raise OptionError(f"face box {tuple(face_box)} leaves no face region in a {width}x{height} frame.")
        restored = self._restore_512(_resize(frames[..., y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE)))
        sy, sx = out_size[0] / height, out_size[1] / width
        ox1, oy1, ox2, oy2 = round(x1 * sx), round(y1 * sy), round(x2 * sx), round(y2 * sy)
        canvas = _resize(frames, out_size).clone()  # never write into the caller's frames
        face = _resize(restored, (oy2 - oy1, ox2 - ox1))
        alpha = _feather(oy2 - oy1, ox2 - ox1, frames.device)
        region = canvas[..., oy1:oy2, ox1:ox2]
        canvas[..., oy1:oy2, ox1:ox2] = region + alpha * (face - region)
        return canvas

    def _upscale(self, image: torch.Tensor, tile: int = 512, pad: int = 16) -> torch.Tensor:
        """Tiled super-resolution of one (1, 3, H, W) picture (bounded memory for large images)."""
        height, width = image.shape[-2:]
        s = self.scale
        out = image.new_empty(1, 3, height * s, width * s)
        for y in range(0, height, tile):
            for x in range(0, width, tile):
                y0, x0 = max(y - pad, 0), max(x - pad, 0)
                y1, x1 = min(y + tile + pad, height), min(x + tile + pad, width)
                result = self.descriptor(image[..., y0:y1, x0:x1])
                ty, tx = min(tile, height - y), min(tile, width - x)
                out[..., y * s:(y + ty) * s, x * s:(x + tx) * s] = \
                    result[..., (y - y0) * s:(y - y0 + ty) * s, (x - x0) * s:(x - x0 + tx) * s]
        return out.clamp_(0, 1)


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrinking = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def _feather(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Alpha 1 inside, ramping to 0 over the outer 1/8 of the box (a hard box edge would show)."""
    def ramp(n: int) -> torch.Tensor:
        margin = max(n // 8, 1)
        position = torch.arange(n, device=device, dtype=torch.float32)
        return torch.clamp(torch.minimum(position + 0.5, n - position - 0.5) / margin, 0, 1)

    return ramp(height)[:, None] * ramp(width)[None, :]


def load_enhancer(name: str, checkpoint_dir: str | os.PathLike | None = None,
                  device: str | torch.device | None = None, *, seed: int | None = None,
                  batch_size: int = 4) -> Enhancer:
    """Find, read (safetensors or ``torch.load(weights_only=True)``) and build enhancer ``name``.

    ``name``: ``gfpgan``, ``RestoreFormer``, ``codeformer`` (needs ``spandrel_extra_arches``) or
    ``realesrgan``. Raises ``CheckpointNotFoundError`` (file, folders, URL), ``CorruptCheckpointError`` or
    ``CheckpointMismatchError`` (the file holds another architecture).
    """
    spec = _spec(name)
    path = find_enhancer_file(name, checkpoint_dir)
    spandrel = import_spandrel()
    state_dict = spandrel.canonicalize_state_dict(_read_state_dict(path))
    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_state_dict(state_dict)
    except spandrel.UnsupportedModelError as error:
        hint = " CodeFormer needs 'pip install --no-deps spandrel_extra_arches'." if name == "codeformer" else ""
        raise CheckpointMismatchError(f"{path} is not a model spandrel knows ({error}).{hint}") from error
    if architecture_id(descriptor) not in spec.architectures:
        raise CheckpointMismatchError(
            f"{path} holds a {architecture_id(descriptor)} model, but enhancer '{name}' expects "
            f"{' or '.join(spec.architectures)}; download {spec.url}.")
    device = torch.device(device or "cpu")
    descriptor.to(device)
    return Enhancer(name, descriptor, device, seed=seed, batch_size=batch_size)
