"""68-point face landmarks behind one interface, and the choice of face.

Backends (imported lazily). The loaded detector and landmark models live in a :class:`Detectors` store that
its owner keeps (``models.ModelRuntime`` keeps one per pipeline and empties it in ``unload()``); a call
without a store builds the models it needs for that call only:

* ``"auto"`` (default): ``"fan"`` when face-alignment imports and its weights are present or can be downloaded,
  else ``"dlib"`` when installed; ``resolve_backend`` says which one and why.
* ``"fan"``: face-alignment's 2D FAN (4 hourglass modules) with its S3FD detector. The weights are
  looked up under their face-alignment file names (``FAN_LANDMARKER_FILES``, ``FAN_DETECTOR_FILE``) in the
  checkpoint folder, then in torch.hub's cache (where face-alignment itself keeps them); if absent they are
  downloaded into that cache, unless ``download=False``.
* ``"dlib"``: dlib's HOG frontal detector (``detector="hog"``, default) or MMOD CNN (``detector="mmod"``) and the
  68-point shape predictor, fully offline with the files of the ``face_recognition_models`` package (or the same
  file names in the checkpoint folder).

The official SadTalker uses RetinaFace + a 98-point WFLW FAN reduced to the same 68-point (iBUG 300-W) layout;
its weights are not redistributable here, so either backend stands in for it.
"""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import CheckpointError, CheckpointNotFoundError, CorruptCheckpointError, NoFaceError, OptionError
from ..runtime.weight_files import torch_load_weights

BACKENDS = ("auto", "fan", "dlib")
DLIB_DETECTORS = ("hog", "mmod")

#: face-alignment file names: the state dict of face-alignment >= 1.4 first, the TorchScript file of 1.3.
FAN_LANDMARKER_FILES = ("2DFAN4-11f355bf06.pth.tar", "2DFAN4-cd938726ad.zip")
FAN_DETECTOR_FILE = "s3fd-619a316812.pth"
_FAN_URLS = {
    FAN_LANDMARKER_FILES[0]: "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
    FAN_DETECTOR_FILE: "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
}
DLIB_LANDMARKER_FILE = "shape_predictor_68_face_landmarks.dat"
DLIB_MMOD_FILE = "mmod_human_face_detector.dat"

#: Detectors run on a copy downscaled to this long side (boxes are mapped back; landmarks use full resolution).
DEFAULT_DETECT_MAX_SIDE = 1280

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Face:
    box: Box  # (x0, y0, x1, y1) image pixels
    landmarks68: np.ndarray  # (68, 2) float32 (x, y) image pixels, iBUG 300-W order
    score: Optional[float]  # detector confidence (higher = surer; scale depends on the detector); None if given

    @property
    def area(self) -> float:
        return max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0)


def as_landmarks68(value, what: str = "landmarks") -> np.ndarray:
    """``value`` as a finite (68, 2) float array (float32 stays float32, anything else becomes float64)."""
    try:
        array = np.asarray(value)
        if array.dtype != np.float32:
            array = array.astype(np.float64)
    except (TypeError, ValueError) as error:
        raise OptionError(f"{what} must be 68 (x, y) pixel coordinates, got {type(value).__name__}.") from error
    if array.shape == (136,):
        array = array.reshape(68, 2)
    if array.shape != (68, 2):
        raise OptionError(f"{what} must have shape (68, 2) (x, y per point, iBUG 300-W order), got "
                          f"{array.shape}.")
    if not np.all(np.isfinite(array)):
        raise OptionError(f"{what} contain NaN or infinite values; pass finite pixel coordinates.")
    return array


class Detectors:
    """The loaded face detectors and landmark models (FAN, S3FD, dlib predictor / HOG / MMOD), each built on
    first use and kept until :meth:`clear`. Keyed by file and device, so one store serves any backend."""

    def __init__(self):
        self._loaded: dict[tuple, object] = {}

    def _get(self, key: tuple, build):
        if key not in self._loaded:
            self._loaded[key] = build()
        return self._loaded[key]

    def fan(self, path: Path, device: str):
        return self._get(("fan", path, device), lambda: _load_fan(path, device))

    def sfd(self, path: Path, device: str):
        return self._get(("sfd", path, device), lambda: _load_sfd(path, device))

    def dlib_predictor(self, path: Path):
        return self._get(("dlib_predictor", path), lambda: _dlib().shape_predictor(str(path)))

    def dlib_hog(self):
        return self._get(("dlib_hog",), lambda: _dlib().get_frontal_face_detector())

    def dlib_mmod(self, path: Path):
        return self._get(("dlib_mmod", path), lambda: _dlib().cnn_face_detection_model_v1(str(path)))

    def loaded(self) -> list[str]:
        return sorted(str(key[0]) for key in self._loaded)

    def clear(self) -> None:
        self._loaded.clear()


def detect_faces(image: np.ndarray, backend: str = "fan", *, face_box: Optional[Sequence[float]] = None,
                 detector: Optional[str] = None, weights_dir: Optional[str | os.PathLike] = None,
                 device: str = "cpu", download: bool = True,
                 detect_max_side: int = DEFAULT_DETECT_MAX_SIDE, detectors: Optional[Detectors] = None
                 ) -> list[Face]:
    """Every face in ``image`` (uint8 H x W x 3 RGB), largest first; an empty list when there is none.

    With ``face_box`` (x0, y0, x1, y1) no detector runs: the landmarker runs inside that box only.
    ``detector`` picks the dlib detector (``"hog"`` or ``"mmod"``); FAN always uses S3FD. ``detectors``
    keeps the loaded models between calls (``None``: built for this call only).
    """
    detectors = detectors if detectors is not None else Detectors()
    backend, _ = resolve_backend(backend, weights_dir, download)
    image = _check_image(image)
    height, width = image.shape[:2]
    if backend == "fan":
        if detector not in (None, "sfd", "s3fd"):
            raise OptionError(f"The fan backend uses the S3FD detector; detector={detector!r} is not available. "
                              "Leave detector unset, or use backend='dlib' with detector 'hog' or 'mmod'.")
        model = detectors.fan(_fan_file(FAN_LANDMARKER_FILES, weights_dir, download), str(device))
    else:
        detector = detector or "hog"
        if detector not in DLIB_DETECTORS:
            raise OptionError(f"Unknown dlib detector {detector!r}. Use one of: {', '.join(DLIB_DETECTORS)}.")
        model = detectors.dlib_predictor(_dlib_file(DLIB_LANDMARKER_FILE, weights_dir))

    if face_box is not None:
        boxes, scores = [_check_box(face_box, width, height)], [None]
    else:
        scale = min(1.0, detect_max_side / max(width, height))
        small = _downscaled(image, scale)
        if backend == "fan":
            found = detectors.sfd(_fan_file((FAN_DETECTOR_FILE,), weights_dir, download), str(device))
            rows = found.detect_from_image(small.copy())
            detections = [(tuple(float(v) for v in row[:4]), float(row[4])) for row in rows]
        else:
            detections = _dlib_detect(detectors, small, detector, weights_dir)
        boxes = [tuple(v / scale for v in box) for box, _ in detections]
        scores = [score for _, score in detections]
        if not boxes:
            return []

    if backend == "fan":
        points = _fan_landmarks(model, image, boxes, str(device))
    else:
        points = [_dlib_landmarks(model, image, box) for box in boxes]
    faces = [Face(tuple(float(v) for v in box), lm, score) for box, lm, score in zip(boxes, points, scores)]
    return sorted(faces, key=lambda face: face.area, reverse=True)


def resolve_backend(backend: str, weights_dir: Optional[str | os.PathLike] = None,
                    download: bool = True) -> tuple[str, str]:
    """(the backend that will run, why): ``"auto"`` becomes ``"fan"`` or ``"dlib"``, others stay.

    Raises ``CheckpointNotFoundError`` when ``"auto"`` finds neither usable, naming what each one lacks.
    """
    backend = _check_backend(backend)
    if backend != "auto":
        return backend, ""
    try:
        _face_alignment()
        for names in (FAN_LANDMARKER_FILES, (FAN_DETECTOR_FILE,)):
            _fan_file(names, weights_dir, download)
        return "fan", "auto: fan (face-alignment and its weights are available)"
    except (CheckpointNotFoundError, OptionError) as error:
        fan_problem = str(error)
    try:
        _dlib()
        _dlib_file(DLIB_LANDMARKER_FILE, weights_dir)
        return "dlib", f"auto: dlib, because fan is unavailable ({_first_sentence(fan_problem)})"
    except (CheckpointNotFoundError, OptionError) as error:
        raise CheckpointNotFoundError(f"No face detector can run. fan: {fan_problem} dlib: {error}") from None


def detector_status(weights_dir: Optional[str | os.PathLike] = None) -> dict[str, str | None]:
    """{backend: None when it can run offline now, else what it lacks and the fix}; nothing is downloaded."""
    status: dict[str, str | None] = {}
    try:
        _face_alignment()
        missing = [names[0] for names in (FAN_LANDMARKER_FILES, (FAN_DETECTOR_FILE,))
                   if _find_fan_file(names, weights_dir) is None]
        status["fan"] = None if not missing else (
            f"weights {', '.join(missing)} not found in {' or '.join(map(str, _fan_folders(weights_dir)))}; they "
            "are downloaded on first use (needs internet), or put them in the checkpoint folder.")
    except OptionError as error:
        status["fan"] = str(error)
    try:
        _dlib()
        _dlib_file(DLIB_LANDMARKER_FILE, weights_dir)
        status["dlib"] = None
    except (CheckpointNotFoundError, OptionError) as error:
        status["dlib"] = str(error)
    return status


def _first_sentence(text: str) -> str:
    return text.split(". ")[0].rstrip(".")


def select_face(faces: Sequence[Face], face_index: Optional[int] = None) -> Face:
    """The largest face, or ``faces[face_index]`` (faces are sorted largest first)."""
    if not faces:
        raise NoFaceError("No face was found in the source image. Use a photo with a clearly visible face, or "
                          "give a face box (x0 y0 x1 y1, pixels) around the face to skip detection.")
    if face_index is None:
        return faces[0]
    if isinstance(face_index, bool) or not isinstance(face_index, (int, np.integer)):
        raise OptionError(f"face_index must be an integer (0 = largest face), got {face_index!r}.",
                          option="face_index", problem=f"got {face_index!r}, expected an integer (0 = largest face).")
    if not 0 <= face_index < len(faces):
        problem = (f"{face_index} is out of range: {len(faces)} face(s) found, so use 0..{len(faces) - 1} "
                   "(0 = largest), or give a face box to pick a face by position.")
        raise OptionError(f"face_index {problem}", option="face_index", problem=problem)
    return faces[int(face_index)]


def locate_face(image: np.ndarray, *, backend: str = "fan", landmarks=None,
                face_box: Optional[Sequence[float]] = None, face_index: Optional[int] = None,
                **backend_options) -> Face:
    """The one face to animate: given ``landmarks`` win, else ``face_box``, else detection + ``face_index``.

    ``backend_options`` go to ``detect_faces`` (detector, weights_dir, device, download, detect_max_side,
    detectors).
    Raises ``NoFaceError`` when nothing is found.
    """
    if landmarks is not None:
        lm = as_landmarks68(landmarks).astype(np.float32)
        box = (float(lm[:, 0].min()), float(lm[:, 1].min()), float(lm[:, 0].max()), float(lm[:, 1].max()))
        return Face(box, lm, None)
    faces = detect_faces(image, backend, face_box=face_box, **backend_options)
    if not faces:
        height, width = np.shape(image)[:2]
        hint = ", or try the fan face detector" if backend == "dlib" else ""
        raise NoFaceError(f"No face found in the {width}x{height} source image by the {backend} backend. Use a "
                          "photo with a clearly visible, roughly frontal face, or give a face box (x0 y0 x1 y1, "
                          f"pixels) around the face{hint}.")
    return select_face(faces, face_index)


# ----------------------------------------------------------------------------------------------- checks


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise OptionError(f"Unknown landmark backend {backend!r}. Use one of: {', '.join(BACKENDS)}.",
                          option="face_detector", problem=f"got {backend!r}, expected one of {', '.join(BACKENDS)}.")
    return backend


def _check_image(image) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise OptionError(f"Face detection needs a uint8 (H, W, 3) RGB array, got {array.dtype} {array.shape}. "
                          "Load the picture with sadtalker_core.media.image_io.load_image first.")
    return np.ascontiguousarray(array)


def _check_box(face_box, width: int, height: int) -> Box:
    try:
        x0, y0, x1, y1 = (float(v) for v in face_box)
    except (TypeError, ValueError) as error:
        raise OptionError(f"face_box must be four numbers (x0, y0, x1, y1) in pixels, got {face_box!r}.",
                          option="face_box", problem=f"got {face_box!r}, expected four numbers x0 y0 x1 y1 in "
                          "pixels.") from error
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        problem = f"{list(face_box)} is empty or invalid: it needs x0 < x1 and y0 < y1 (pixels)."
        raise OptionError(f"face_box {problem}", option="face_box", problem=problem)
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height))
    if x1 - x0 < 2 or y1 - y0 < 2:
        problem = (f"{list(face_box)} lies outside the {width}x{height} image. Give the box in this image's pixel "
                   "coordinates.")
        raise OptionError(f"face_box {problem}", option="face_box", problem=problem)
    return (x0, y0, x1, y1)


def _downscaled(image: np.ndarray, scale: float) -> np.ndarray:
    if scale >= 1.0:
        return image
    import cv2

    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


# ------------------------------------------------------------------------------------------------- fan


def _fan_folders(weights_dir) -> list[Path]:
    """Where FAN weights are looked for: the checkpoint folder, then torch.hub's cache (face-alignment's own)."""
    import torch.hub

    folders = [Path(weights_dir)] if weights_dir is not None else []
    return folders + [Path(torch.hub.get_dir()) / "checkpoints"]


def _find_fan_file(names: Sequence[str], weights_dir) -> Path | None:
    return next((folder / name for folder in _fan_folders(weights_dir) for name in names
                 if (folder / name).is_file()), None)


def _fan_file(names: Sequence[str], weights_dir, download: bool) -> Path:
    """The first of ``names`` in the checkpoint folder or torch.hub's cache, downloaded there if allowed."""
    found = _find_fan_file(names, weights_dir)
    if found is not None:
        return found
    folders = _fan_folders(weights_dir)
    hub = folders[-1]
    primary = names[0]
    where = " or ".join(str(folder) for folder in folders)
    fix = (f"Download {_FAN_URLS[primary]} and put it in the checkpoint folder, or choose the dlib face detector "
           "(offline). ")
    if download:
        from ..runtime.download import fetch_file  # the checkpoints' downloader: resumes a cut transfer next time

        hub.mkdir(parents=True, exist_ok=True)
        try:
            return fetch_file(_FAN_URLS[primary], hub / primary)
        except (OSError, CheckpointError) as error:  # URLError and socket errors are OSErrors
            raise CheckpointNotFoundError(f"The fan face backend needs {' or '.join(names)}, not found in {where}, "
                                          f"and the download failed ({error}). {fix}") from error
    raise CheckpointNotFoundError(f"The fan face backend needs {' or '.join(names)}, not found in {where} "
                                  f"(downloads are off). {fix}")


def _face_alignment():
    """The face-alignment package; an ``OptionError`` with the fix when it (or numba, which it imports) is missing."""
    try:
        import face_alignment
    except ImportError as error:
        problem = (f"the fan face backend needs face-alignment ({error}): pip install face-alignment numba, or "
                   "choose dlib.")
        raise OptionError(f"face_detector: {problem}", option="face_detector", problem=problem) from None
    return face_alignment


def _load_fan(path: Path, device: str):
    import torch

    _face_alignment()
    from face_alignment.models import FAN

    try:
        if path.suffix == ".zip":  # face-alignment 1.3 shipped a TorchScript archive
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            state = torch_load_weights(path)
            state = state.get("state_dict", state)
    except Exception as error:  # torch raises RuntimeError/UnpicklingError/zip errors for damaged files
        raise CorruptCheckpointError(f"Cannot read the FAN landmark weights {path} ({error}). Delete the file "
                                     "and download it again.") from error
    net = FAN(4)
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        raise CorruptCheckpointError(f"{path} is not a 2D FAN-4 landmark model ({str(error)[:300]}). Use "
                                     f"{FAN_LANDMARKER_FILES[0]} from face-alignment.") from error
    return net.to(device).eval()


def _load_sfd(path: Path, device: str):
    from face_alignment.detection.sfd.sfd_detector import SFDDetector

    try:
        return SFDDetector(device, path_to_detector=str(path))
    except Exception as error:  # damaged file or wrong keys
        raise CorruptCheckpointError(f"Cannot load the S3FD face detector {path} ({str(error)[:300]}). Delete the "
                                     f"file and download {FAN_DETECTOR_FILE} again.") from error


def _fan_landmarks(net, image: np.ndarray, boxes: Sequence[Box], device: str) -> list[np.ndarray]:
    """face-alignment's FAN protocol: box -> centre/scale crop at 256, heat maps + flipped pass, sub-pixel peaks."""
    import torch
    from face_alignment import utils as fa

    centre_offset = getattr(fa, "CENTER_Y_OFFSET", 0.12)
    centres, scales, crops = [], [], []
    for x0, y0, x1, y1 in boxes:
        centre = np.array([(x0 + x1) / 2.0, (y0 + y1) / 2.0 - (y1 - y0) * centre_offset])
        scale = (x1 - x0 + y1 - y0) / fa.REFERENCE_SCALE
        centres.append(centre)
        scales.append(scale)
        crops.append(fa.crop(image, centre, scale).transpose(2, 0, 1).astype(np.float32) / 255.0)
    with torch.inference_mode():
        batch = torch.from_numpy(np.stack(crops)).to(device)
        heat = _last(net(batch))
        heat = heat + fa.flip(_last(net(fa.flip(batch))), is_label=True)
        heat = heat.float().cpu().numpy()
    return [_heatmap_peaks(heat[i], centres[i], scales[i]) for i in range(len(boxes))]


def _heatmap_peaks(heat: np.ndarray, centre: np.ndarray, scale: float) -> np.ndarray:
    """(68, R, R) heat maps -> (68, 2) image pixels: arg-max, a quarter pixel towards the higher neighbour
    (interior peaks only), then the inverse of the crop transform. This is face-alignment's decoding,
    vectorised (no numba compilation, ~25 s per process on CPU) and without its final truncation to whole
    pixels, which would shift every point by half a pixel on average."""
    count, size = heat.shape[0], heat.shape[-1]
    flat = heat.reshape(count, -1).argmax(axis=1)
    px, py = flat % size, flat // size
    peaks = np.stack([px, py], axis=1).astype(np.float32) + 0.5
    inner = (px > 0) & (px < size - 1) & (py > 0) & (py < size - 1)
    rows = np.nonzero(inner)[0]
    x, y = px[rows], py[rows]
    gradient = np.stack([heat[rows, y, x + 1] - heat[rows, y, x - 1], heat[rows, y + 1, x] - heat[rows, y - 1, x]],
                        axis=1)
    peaks[rows] += np.sign(gradient).astype(np.float32) * 0.25
    side = 200.0 * scale  # face-alignment's SCALE_FACTOR: the crop spans 200 * scale image pixels
    return (peaks * (side / size) + (np.asarray(centre) - side / 2)).astype(np.float32)


def _last(output):
    return output[-1] if isinstance(output, (list, tuple)) else output


# ------------------------------------------------------------------------------------------------ dlib


def _dlib():
    try:
        import dlib
    except ImportError as error:
        problem = "the dlib face backend needs dlib: pip install dlib-bin face_recognition_models, or choose fan."
        raise OptionError(f"face_detector: {problem}", option="face_detector", problem=problem) from error
    return dlib


def _dlib_file(name: str, weights_dir) -> Path:
    folders = [Path(weights_dir)] if weights_dir is not None else []
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        # Not imported: its __init__ needs pkg_resources, which current setuptools no longer ships.
        folders.append(Path(list(spec.submodule_search_locations)[0]) / "models")
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    where = ", ".join(str(folder) for folder in folders) or "(no folder: face_recognition_models is not installed)"
    raise CheckpointNotFoundError(f"The dlib face backend needs {name}, not found in {where}. Install it with "
                                  "pip install face_recognition_models, or put the file in the checkpoint folder.")


def _dlib_detect(detectors: Detectors, image: np.ndarray, detector: str, weights_dir) -> list[tuple[Box, float]]:
    if detector == "hog":
        # One 2x upsampling finds faces down to ~40 px, the scale of a face in a full-body picture.
        rects, scores, _ = detectors.dlib_hog().run(image, 1, 0.0)
        found = zip(rects, scores)
    else:
        found = ((d.rect, d.confidence) for d in detectors.dlib_mmod(_dlib_file(DLIB_MMOD_FILE, weights_dir))(image, 0))
    # dlib boxes are inclusive pixel ranges: right/bottom + 1 gives (x1, y1) as exclusive bounds.
    return [((float(r.left()), float(r.top()), float(r.right() + 1), float(r.bottom() + 1)), float(score))
            for r, score in found]


def _dlib_landmarks(predictor, image: np.ndarray, box: Box) -> np.ndarray:
    dlib = _dlib()
    x0, y0, x1, y1 = box
    rect = dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)) - 1, int(round(y1)) - 1)
    shape = predictor(image, rect)
    return np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float32)
