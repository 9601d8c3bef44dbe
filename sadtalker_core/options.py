"""Generation options: one table shared by the Python API, the CLI, the Gradio UIs and the REST API.

Names are the official ``inference.py`` flag names plus the new ones. ``validate_options`` turns any
mapping (keyword arguments, parsed CLI flags, a JSON body) into a complete, typed options dict, or raises
``OptionError`` naming the field and what it accepts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .errors import OptionError

PREPROCESS_MODES = ("crop", "extcrop", "resize", "full", "extfull")
SIZES = (256, 512)
ENHANCERS = ("gfpgan", "RestoreFormer", "codeformer")
BACKGROUND_ENHANCERS = ("realesrgan",)
REF_INFO = ("pose", "blink", "pose+blink", "all")
FACE_DETECTORS = ("auto", "fan", "dlib")
BLEND_MODES = ("seamless", "poisson", "none")
NUM_POSE_STYLES = 46
WATERMARK_POSITIONS = ("bottom-right", "bottom-left", "top-right", "top-left")


@dataclass(frozen=True)
class Option:
    name: str
    default: Any
    help: str
    kind: str  # "bool" | "int" | "float" | "str" | "path" | "angles" | "box" | "landmarks"
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False  # None is an accepted value
    also_unset: int | None = None  # a number that means None as well (seed -1: the WebUIs' "random")


OPTIONS: tuple[Option, ...] = (
    Option("preprocess", "crop", "How the face is cut from the image: crop (face only), extcrop (face with "
           "margin), resize (whole image squashed), full / extfull (animate the face, paste it back into the "
           "whole image).", "str", choices=PREPROCESS_MODES),
    Option("still", False, "Keep the head pose of the source (less head motion); recommended with full.", "bool"),
    Option("size", 256, "Render resolution of the face: 256 or 512 (needs the 512 checkpoint).", "int",
           choices=SIZES),
    Option("pose_style", 0, "Head-motion style of the pose generator, 0..45.", "int", minimum=0,
           maximum=NUM_POSE_STYLES - 1),
    Option("expression_scale", 1.0, "Strength of the lip/expression motion (1 = as trained).", "float",
           minimum=0.0, maximum=10.0),
    Option("head_motion_scale", 1.0, "Scales the generated head motion around the source pose (0 = none).",
           "float", minimum=0.0, maximum=10.0),
    Option("blink", True, "Add eye blinks.", "bool"),
    Option("ref_eyeblink", None, "Reference video whose eye blinks (and brows) are copied.", "path",
           optional=True),
    Option("ref_pose", None, "Reference video whose head motion is copied.", "path", optional=True),
    Option("ref_video", None, "Reference video used as ref_info says (alternative to ref_eyeblink/ref_pose).",
           "path", optional=True),
    Option("ref_info", None, "What to take from ref_video: pose, blink, pose+blink, or all (re-enact the "
           "video's whole face motion and use its audio when no audio is given).", "str", choices=REF_INFO,
           optional=True),
    Option("input_yaw", None, "Free-view yaw angles in degrees, e.g. [-20, 20] sweeps left to right.",
           "angles", optional=True),
    Option("input_pitch", None, "Free-view pitch angles in degrees.", "angles", optional=True),
    Option("input_roll", None, "Free-view roll angles in degrees.", "angles", optional=True),
    Option("batch_size", 2, "Frames rendered per network call (higher = faster on GPU, more memory).", "int",
           minimum=1, maximum=256),
    Option("enhancer", None, "Face restoration after rendering: gfpgan, RestoreFormer or codeformer.", "str",
           choices=ENHANCERS, optional=True),
    Option("background_enhancer", None, "Background upscaler (with an enhancer): realesrgan.", "str",
           choices=BACKGROUND_ENHANCERS, optional=True),
    Option("seed", None, "Random seed: the same seed reproduces the same video on the same machine (-1 or "
           "empty: random; the seed used is reported).", "int", minimum=0, maximum=2**63 - 1, optional=True,
           also_unset=-1),
    Option("fps", 25, "Frames per second of the video.", "int", minimum=1, maximum=60),
    Option("face_detector", "auto", "Landmark backend: auto (fan when its weights are present or can be "
           "downloaded, else dlib), fan (face-alignment) or dlib (offline).", "str", choices=FACE_DETECTORS),
    Option("face_index", None, "Which face to animate when the image has several (0 = largest).", "int",
           minimum=0, maximum=1000, optional=True),
    Option("face_box", None, "Face box x0 y0 x1 y1 in image pixels (skips face detection).", "box",
           optional=True),
    Option("landmarks", None, "68 (x, y) face landmarks in image pixels (skips detection).", "landmarks",
           optional=True),
    Option("idle_seconds", None, "Idle mode: make a video of this many seconds without speech.", "float",
           minimum=0.04, maximum=3600.0, optional=True),
    Option("blend", "seamless", "Paste-back blending for full/extfull: seamless (fast), poisson (original "
           "look, slow on CPU) or none.", "str", choices=BLEND_MODES),
    Option("crf", 18, "Video quality (x264 CRF: lower = better and larger).", "int", minimum=0, maximum=51),
    Option("watermark", None, "Visible text drawn in a corner of every frame, e.g. 'AI-generated' (empty = "
           "none).", "str", optional=True),
    Option("watermark_position", "bottom-right", "Corner of the watermark text.", "str",
           choices=WATERMARK_POSITIONS),
    Option("watermark_opacity", 0.6, "Watermark strength: 0 = invisible, 1 = opaque.", "float", minimum=0.0,
           maximum=1.0),
    Option("mouth_only", True, "Dubbing a video: replace only a feathered region around the mouth, so the "
           "video's own eyes, blinks and brows stay; off re-renders the whole face with generated blinks.",
           "bool"),
    Option("video_audio_volume", 0.0, "Dubbing a video: volume of the video's own sound mixed under the new "
           "speech (0 = replaced by the speech, 1 = full).", "float", minimum=0.0, maximum=1.0),
)

OPTIONS_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}

# Which options apply when the source is a video to dub (``dub.py``) rather than a portrait. Front ends that
# show one form per source (the ComfyUI nodes) derive their fields from these, so each list lives only here.
#: read only when dubbing; a portrait has no video to take a mouth region or a sound track from
DUB_ONLY_OPTIONS = ("mouth_only", "video_audio_volume")
#: refused with a video (``dub.check_options``): the video itself gives the head pose, eyes and face position
#: they would set, or (enhancers) dubbing does not run them; all are optional, so "given" is "not None"
NOT_WITH_VIDEO = ("ref_eyeblink", "ref_pose", "ref_video", "ref_info", "idle_seconds", "input_yaw",
                  "input_pitch", "input_roll", "landmarks", "face_box", "enhancer", "background_enhancer")
#: always set (they have defaults, so they cannot be refused) but unused with a video: the output keeps the
#: video's own frame rate (``fps`` only stands in when the file has none) and head motion
IGNORED_WITH_VIDEO = ("fps", "still", "pose_style", "head_motion_scale")
#: the options that act on a dub, in table order
DUB_OPTIONS: tuple[Option, ...] = tuple(o for o in OPTIONS if o.name not in NOT_WITH_VIDEO + IGNORED_WITH_VIDEO)
#: the options that act on an animated portrait, in table order
PORTRAIT_OPTIONS: tuple[Option, ...] = tuple(o for o in OPTIONS if o.name not in DUB_ONLY_OPTIONS)


def default_options() -> dict[str, Any]:
    return {o.name: (list(o.default) if isinstance(o.default, list) else o.default) for o in OPTIONS}


def _fail(option: Option, value: Any, expected: str) -> OptionError:
    shown = repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return OptionError(f"option '{option.name}': got {shown}, expected {expected}.")


def _number(option: Option, value: Any, integer: bool) -> float | int:
    if isinstance(value, bool) or value is None:
        raise _fail(option, value, "an integer" if integer else "a number")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise _fail(option, value, "an integer" if integer else "a number") from None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _fail(option, value, "an integer" if integer else "a number") from None
    if not math.isfinite(number):
        raise _fail(option, value, "a finite number")
    if integer:
        if number != int(number):
            raise _fail(option, value, "a whole number")
        number = int(number)
    lo, hi = option.minimum, option.maximum
    if (lo is not None and number < lo) or (hi is not None and number > hi):
        raise _fail(option, value, f"a value from {lo:g} to {hi:g}")
    return number


def _bool(option: Option, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return value.strip().lower() in ("true", "1", "yes", "on")
    raise _fail(option, value, "true or false")


def _floats(option: Option, value: Any, count: int | None) -> list[float]:
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    if not isinstance(value, Sequence) or isinstance(value, (bytes, bytearray)):
        raise _fail(option, value, "a list of numbers")
    out = []
    for item in value:
        if isinstance(item, bool):
            raise _fail(option, value, "a list of numbers")
        try:
            number = float(item)
        except (TypeError, ValueError):
            raise _fail(option, value, "a list of numbers") from None
        if not math.isfinite(number):
            raise _fail(option, value, "finite numbers")
        out.append(number)
    if count is not None and len(out) != count:
        raise _fail(option, value, f"exactly {count} numbers")
    if not out:
        raise _fail(option, value, "at least one number")
    return out


def _landmarks(option: Option, value: Any) -> list[list[float]]:
    if isinstance(value, Mapping) and "landmarks" in value:
        value = value["landmarks"]
    try:
        points = [[float(x), float(y)] for x, y in value]
    except (TypeError, ValueError):
        raise _fail(option, value, "68 [x, y] pairs") from None
    if len(points) != 68 or not all(math.isfinite(c) for p in points for c in p):
        raise _fail(option, value, "68 [x, y] pairs of finite numbers")
    return points


_CONVERTERS: dict[str, Callable[[Option, Any], Any]] = {
    "bool": _bool,
    "int": lambda o, v: _number(o, v, integer=True),
    "float": lambda o, v: _number(o, v, integer=False),
    "angles": lambda o, v: _floats(o, v, None),
    "box": lambda o, v: _floats(o, v, 4),
    "landmarks": _landmarks,
}


def _convert(option: Option, value: Any) -> Any:
    if option.also_unset is not None and not isinstance(value, bool) and value in (option.also_unset,
                                                                                  str(option.also_unset)):
        value = None
    if value is None or (option.optional and isinstance(value, str) and value.strip() in ("", "none", "None")):
        if option.optional:
            return None
        raise _fail(option, value, "a value (it cannot be empty)")
    if option.kind in ("str", "path"):
        if hasattr(value, "__fspath__"):
            value = value.__fspath__()
        if not isinstance(value, str):
            raise _fail(option, value, "text")
        value = value.strip()
        if option.choices is not None:
            matches = [c for c in option.choices if c.lower() == value.lower()]
            if not matches:
                raise _fail(option, value, "one of " + ", ".join(option.choices))
            value = matches[0]
        return value
    value = _CONVERTERS[option.kind](option, value)
    if option.choices is not None and value not in option.choices:
        raise _fail(option, value, "one of " + ", ".join(str(c) for c in option.choices))
    return value


def validate_options(raw: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """A complete options dict: defaults, updated by ``raw`` and ``overrides``, each value checked and typed.

    Unknown names raise ``OptionError`` (a typo must not be silently ignored).
    """
    given = dict(raw or {})
    given.update(overrides)
    unknown = sorted(set(given) - set(OPTIONS_BY_NAME))
    if unknown:
        raise OptionError(f"unknown option(s): {', '.join(unknown)}. Known options: "
                          f"{', '.join(OPTIONS_BY_NAME)}.")
    options = default_options()
    for name, value in given.items():
        options[name] = _convert(OPTIONS_BY_NAME[name], value)
    if options["face_box"] is not None:
        x0, y0, x1, y1 = options["face_box"]
        if x1 <= x0 or y1 <= y0:
            raise OptionError(f"option 'face_box': got {options['face_box']}, expected x0 < x1 and y0 < y1.")
    if options["ref_info"] is not None and options["ref_video"] is None:
        raise OptionError("option 'ref_info' needs 'ref_video': give the reference video to take "
                          f"{options['ref_info']} from.")
    return options


def describe_options() -> list[dict[str, Any]]:
    """JSON-friendly description of every option (for ``GET /sadtalker/v1/options`` and UIs)."""
    return [
        {"name": o.name, "default": o.default, "type": o.kind, "help": o.help,
         "choices": list(o.choices) if o.choices else None, "minimum": o.minimum, "maximum": o.maximum,
         "optional": o.optional}
        for o in OPTIONS
    ]
