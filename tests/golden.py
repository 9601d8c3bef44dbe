"""Access to the golden parity kit and the synthetic-weight tool in ../shared.

The kit folder is ``$SADTALKER_GOLDEN_DIR`` when set, else ``../shared/golden`` next to the repo. Parity tests
discover the kit's sidecars (``modules/*.json``, ``stages/s<N>_*.json``) and take kind, weights and parameters
from them: nothing here hard-codes a file list, a seed or a size.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sadtalker_core.face.crop import CropInfo

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
    """The sidecar's metadata and the arrays of its ``.npz`` (loaded eagerly, so the file is closed).

    ``meta["_name"]`` is the sidecar's file name, for messages."""
    meta = json.loads(Path(json_path).read_text())
    meta["_name"] = Path(json_path).name
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


# -- expectations from the recorded official calls ---------------------------------------------------------------
#
# A sidecar records how the official code was called (``official_call(s)`` text plus the parameters it names).
# The helpers below turn that record into what the official code computes, so a parity test holds for any
# official run, not only the public kit's. A setting they do not model fails the test with its name
# (:class:`UnsupportedSidecar`) instead of being ignored.

class UnsupportedSidecar(AssertionError):
    """A recorded setting the parity tests do not model; the message names the sidecar and the setting."""


def unsupported(meta: dict, setting: str, value, why: str):
    raise UnsupportedSidecar(f"{meta.get('_name', 'sidecar')}: recorded {setting}={value!r} is not understood "
                             f"by the parity tests ({why}); extend tests/golden.py for it")


def official_calls(meta: dict) -> str:
    calls = meta.get("official_calls") or meta.get("official_call") or ""
    return " ".join(calls) if isinstance(calls, list) else str(calls)


def recorded_seed(meta: dict, call: str) -> int | None:
    """N of the first ``call(N)`` (e.g. ``random.seed(0)``) in the recorded official calls."""
    match = re.search(re.escape(call) + r"\((\d+)\)", official_calls(meta))
    return None if match is None else int(match.group(1))


def call_arguments(meta: dict, function: str, parameters: tuple[str, ...]) -> dict[str, str] | None:
    """The arguments of the first recorded call of ``function``, by official parameter name (source text).

    Positional arguments are named after ``parameters`` (the official signature, in order); a keyword that is
    not a parameter, or more positional arguments than parameters, is unsupported. None if not recorded.
    """
    text = official_calls(meta)
    match = re.search(r"(?<!\w)" + re.escape(function) + r"\(", text)
    if match is None:
        return None
    arguments, depth, current, quote = [], 0, "", None
    for char in text[match.end():]:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                break
            depth -= 1
        elif char == "," and depth == 0:
            arguments.append(current.strip())
            current = ""
            continue
        current += char
    if current.strip():
        arguments.append(current.strip())
    named: dict[str, str] = {}
    for position, argument in enumerate(arguments):
        keyword = re.fullmatch(r"([A-Za-z_]\w*)\s*=(?!=)\s*(.*)", argument, re.S)
        if keyword:
            name, value = keyword.groups()
            if name not in parameters:
                unsupported(meta, f"{function}({name}=...)", value, f"not a parameter of the official {function}")
            named[name] = value.strip()
        elif position < len(parameters):
            named[parameters[position]] = argument
        else:
            unsupported(meta, f"{function} argument {position + 1}", argument, "more arguments than parameters")
    return named


def _flag(meta: dict, function: str, arguments: dict, name: str, default: bool) -> bool:
    value = arguments.get(name)
    if value is None:
        return default
    if value not in ("True", "False"):
        unsupported(meta, f"{function}({name})", value, "expected True or False")
    return value == "True"


# (a) stage 1 / 3: the blink ratio of the official ``get_data``

GET_DATA_PARAMETERS = ("first_coeff_path", "audio_path", "device", "ref_eyeblink_coeff_path", "still", "idlemode",
                       "length_of_audio", "use_blink")


@dataclass(frozen=True)
class BlinkPlan:
    seed: int  #: python ``random`` seed of the draws (made even when the ratio is zeroed afterwards)
    ref_eyeblink: bool  #: a reference blink video was given: its expression rows replace ``ref[..., :64]``
    use_blink: bool

    @property
    def zeroed(self) -> bool:
        """The official code zeroes the ratio for a reference blink video and for ``use_blink=False``."""
        return self.ref_eyeblink or not self.use_blink

    def ratio(self, num_frames: int) -> np.ndarray:
        """The expected ``ratio_gt`` (T, 1) float32."""
        import random

        from sadtalker_core.motion import coeffs

        ratio = coeffs.blink_ratio(num_frames, random.Random(self.seed))
        return np.zeros_like(ratio) if self.zeroed else ratio


def blink_plan(meta: dict) -> BlinkPlan:
    """How a stage-1 sidecar's recorded ``get_data`` call made ``ratio_gt``."""
    arguments = call_arguments(meta, "get_data", GET_DATA_PARAMETERS)
    if arguments is None:
        unsupported(meta, "official_calls", official_calls(meta)[:80], "no get_data call recorded")
    seed = recorded_seed(meta, "random.seed")
    if seed is None:
        unsupported(meta, "random.seed", None, "the blink draws need the recorded python seed")
    if _flag(meta, "get_data", arguments, "idlemode", False):
        unsupported(meta, "get_data(idlemode)", "True", "idle mode is not modelled here")
    if arguments.get("length_of_audio", "False") not in ("False", "0"):
        unsupported(meta, "get_data(length_of_audio)", arguments["length_of_audio"], "only read in idle mode")
    return BlinkPlan(seed=seed, ref_eyeblink=arguments.get("ref_eyeblink_coeff_path", "None") != "None",
                     use_blink=_flag(meta, "get_data", arguments, "use_blink", True))


# (b) stage 4: which frames ``make_animation`` rendered, in which batch layout

MAKE_ANIMATION_PARAMETERS = ("source_image", "source_semantics", "target_semantics", "generator", "kp_detector",
                             "he_estimator", "mapping", "yaw_c_seq", "pitch_c_seq", "roll_c_seq", "use_exp",
                             "use_half")
RENDER_SIZES = (256, 512)
PREPROCESS_MODES = ("crop", "extcrop", "resize", "full", "extfull")


@dataclass(frozen=True)
class RenderPlan:
    size: int
    batch_size: int  #: B of the render call: source keypoints are computed per batch row (B identical copies)
    steps: int  #: loop steps rendered; each renders one frame per batch row
    padded_frames: int  #: T padded to a multiple of the batch size the targets were built with
    frame_indices: tuple[int, ...]  #: padded frame index of each rendered frame, batch row major (b*L + step)
    cameras: dict  #: axis -> recorded keyframe degrees or None (``input_yaw`` / ``input_pitch`` / ``input_roll``)

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        b, s, size = self.batch_size, self.steps, self.size
        return {"kp_canonical": (b, 15, 3), "kp_source": (b, 15, 3), "kp_driving_per_step": (b, s, 15, 3),
                "rendered_frames": (b * s, 3, size, size), "rendered_frames_uint8_hwc": (b * s, size, size, 3)}

    def per_frame(self, values: np.ndarray) -> np.ndarray:
        """Rows of a per-frame array (T, ...) for the rendered frames: frames past T (batch padding) repeat
        the last row, as the official batch construction does."""
        return np.asarray(values)[np.minimum(np.asarray(self.frame_indices), len(values) - 1)]

    def camera_per_frame(self, num_frames: int) -> list:
        """Free-view degrees (yaw, pitch, roll) of the rendered frames, each (n,) float32 or None."""
        from sadtalker_core.render import animate

        sequences = [animate.camera_sequence(self.cameras[axis], num_frames) for axis in ("yaw", "pitch", "roll")]
        return [None if seq is None else self.per_frame(seq) for seq in sequences]


def _keyframes(meta: dict, key: str):
    value = meta.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, (int, float)) for v in value):
        unsupported(meta, key, value, "expected null or a non-empty list of degrees")
    return value


def render_plan(meta: dict) -> RenderPlan:
    """Batch layout, rendered frames and camera keyframes of a stage-4 sidecar's ``make_animation`` call.

    ``render_layout`` (or ``render_batch_size``) gives B; ``render_layout`` names the ``target_semantics_bs<N>``
    batch the targets came from (its padding); ``rendered_frame_indices`` must be the first steps of every
    batch row (b * L + step, L = padded T / B), which is what slicing ``ts[:, :steps]`` renders.
    """
    size = meta.get("size")
    if size not in RENDER_SIZES:
        unsupported(meta, "size", size, f"render sizes are {RENDER_SIZES}")
    if meta.get("preprocess") not in PREPROCESS_MODES:
        unsupported(meta, "preprocess", meta.get("preprocess"), f"official modes are {PREPROCESS_MODES}")
    if not isinstance(meta.get("still"), bool):
        unsupported(meta, "still", meta.get("still"), "expected true or false")
    if isinstance(meta.get("expression_scale"), bool) or not isinstance(meta.get("expression_scale"), (int, float)):
        unsupported(meta, "expression_scale", meta.get("expression_scale"), "expected a number")
    arguments = call_arguments(meta, "make_animation", MAKE_ANIMATION_PARAMETERS) or {}
    if not _flag(meta, "make_animation", arguments, "use_exp", True):
        unsupported(meta, "make_animation(use_exp)", "False", "rendering without expression is not modelled")
    if _flag(meta, "make_animation", arguments, "use_half", False):
        unsupported(meta, "make_animation(use_half)", "True", "half precision renders are not compared")
    layout = str(meta.get("render_layout", ""))
    batch_size = meta.get("render_batch_size")
    if batch_size is None:
        found = re.search(r"batch_size\s*=\s*(\d+)", layout)
        if found is None:
            unsupported(meta, "render_layout", layout, "it must state the render's batch_size=B (or give "
                        "render_batch_size)")
        batch_size = int(found.group(1))
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        unsupported(meta, "render_batch_size", batch_size, "expected an integer")
    built = re.search(r"target_semantics_bs(\d+)", layout)
    built_with = int(built.group(1)) if built else int(batch_size)
    num_frames = int(meta["frame_num"])
    padded = math.ceil(num_frames / built_with) * built_with
    if batch_size < 1 or padded % batch_size:
        unsupported(meta, "render_layout", layout, f"batch size {batch_size} does not split {padded} frames")
    indices = [int(i) for i in meta.get("rendered_frame_indices", [])]
    steps, remainder = divmod(len(indices), int(batch_size))
    length = padded // batch_size
    expected = [b * length + s for b in range(batch_size) for s in range(steps)]
    if not indices or remainder or sorted(indices) != expected:
        unsupported(meta, "rendered_frame_indices", indices, f"expected the first steps of each of the "
                    f"{batch_size} batch rows of length {length}, e.g. {expected[:8]}")
    cameras = {axis: _keyframes(meta, f"input_{axis}") for axis in ("yaw", "pitch", "roll")}
    return RenderPlan(size=int(size), batch_size=int(batch_size), steps=steps, padded_frames=padded,
                      frame_indices=tuple(expected), cameras=cameras)


# (c) stage 5: the paste-back's box, aspect-restored frame size and background of the official ``paste_pic``

PASTE_PIC_PARAMETERS = ("video_path", "pic_path", "crop_info", "new_audio_path", "full_video_path", "extended_crop")
#: ``paste_pic`` reads these extensions (exact, lower case) with cv2.imread; anything else as a video
IMREAD_EXTENSIONS = ("jpg", "png", "jpeg")


@dataclass(frozen=True)
class PastePlan:
    mode: str  #: "full" (quad box) or "extfull" (crop box), from ``extended_crop``
    size: int  #: render size S: the aspect restore keeps the width S
    crop_info: CropInfo
    original_image: str | None

    @property
    def video_frame_shape(self) -> tuple[int, int, int]:
        """``cv2.resize(frame, (S, int(S * h / w)))`` with ``(w, h) = crop_info.size_wh``: (height, width, 3)."""
        w, h = self.crop_info.size_wh
        return int(self.size * h / w), self.size, 3


def paste_plan(meta: dict, rendered_shape: tuple[int, ...]) -> PastePlan:
    """What a stage-5 sidecar's official calls paste: mode from ``extended_crop`` (which is what ``paste_pic``
    reads; ``mode`` must agree), render size (recorded ``size``, else the rendered frame's width), crop_info."""
    arguments = call_arguments(meta, "paste_pic", PASTE_PIC_PARAMETERS) or {}
    extended = meta.get("extended_crop")
    if "extended_crop" in arguments:
        recorded = _flag(meta, "paste_pic", arguments, "extended_crop", False)
        if extended is not None and bool(extended) != recorded:
            unsupported(meta, "extended_crop", extended, f"the recorded paste_pic call says {recorded}")
        extended = recorded
    if extended not in (None, True, False):
        unsupported(meta, "extended_crop", extended, "expected true or false")
    mode = meta.get("mode")
    if mode not in ("full", "extfull"):
        unsupported(meta, "mode", mode, "paste-back runs in the full and extfull preprocess modes")
    if extended is not None and (mode == "extfull") != extended:
        unsupported(meta, "extended_crop", extended, f"mode {mode!r} pastes with extended_crop={mode == 'extfull'}")
    height, width = rendered_shape[:2]
    size = meta.get("size", width)
    if size not in RENDER_SIZES or (height, width) != (size, size):
        unsupported(meta, "size", size, f"rendered frames are S x S with S in {RENDER_SIZES}, got {height}x{width}")
    info = meta.get("crop_info") or {}
    if not {"original_size_wh", "crop_box_clx_cly_crx_cry", "quad_lx_ly_rx_ry"} <= set(info):
        unsupported(meta, "crop_info", info, "the size, crop box and quad of the official crop are needed")
    w, h = info["original_size_wh"]
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        unsupported(meta, "crop_info.original_size_wh", [w, h], "expected two positive integers")
    original = meta.get("original_image")
    if original is not None and Path(original).suffix[1:] not in IMREAD_EXTENSIONS:
        unsupported(meta, "original_image", original, "paste_pic reads only .jpg/.png/.jpeg (exact case) with "
                    "cv2.imread; other files are read as a video's first frame")
    # the package's typed form of the official tuple ((w, h), crop box, quad)
    crop_info = CropInfo((w, h), tuple(info["crop_box_clx_cly_crx_cry"]), tuple(info["quad_lx_ly_rx_ry"]))
    return PastePlan(mode=mode, size=int(size), crop_info=crop_info, original_image=original)
