"""Generation options: one typed table shared by the Python API, the CLI, the Gradio UIs, the REST API, the
batch files and the ComfyUI nodes.

``GenerationConfig`` *is* the table: each field is one option, its type, default, help text and limits.
Names are the official ``inference.py`` flag names plus the new ones. ``GenerationConfig.from_options``
turns any mapping (keyword arguments, parsed CLI flags, a JSON body, widget values) into a frozen, typed
config, or raises ``OptionError`` naming the option and what it accepts; front ends validate once, at their
edge, and hand the config on. ``OPTIONS`` describes the fields for front ends that build their controls
from the table.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence

from .errors import OptionError


class Choice(str, enum.Enum):
    """A closed set of option values. Members compare, hash, print and serialise (JSON) as their text, so
    ``config.preprocess == "full"`` holds and a config's dict is plain JSON."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Preprocess(Choice):
    """How the face is cut from the image (the official ``--preprocess``)."""

    CROP = "crop"
    EXTCROP = "extcrop"
    RESIZE = "resize"
    FULL = "full"
    EXTFULL = "extfull"

    # What each mode means for the pipeline, stated once: crop renders the tight face box, extcrop the face with
    # a margin, resize the whole picture squashed to a square; full / extfull render like crop / extcrop and
    # paste the face back into the whole picture.
    @property
    def pastes_back(self) -> bool:
        """full / extfull: the rendered face goes back into the original picture (and the coefficient rows
        carry the 3 crop parameters the full-mode MappingNet reads)."""
        return self in (Preprocess.FULL, Preprocess.EXTFULL)

    @property
    def shows_margin(self) -> bool:
        """extcrop / extfull: the frame shows the crop box with its margin around the face."""
        return self in (Preprocess.EXTCROP, Preprocess.EXTFULL)


class Enhancer(Choice):
    GFPGAN = "gfpgan"
    RESTOREFORMER = "RestoreFormer"
    CODEFORMER = "codeformer"


class BackgroundEnhancer(Choice):
    REALESRGAN = "realesrgan"


class RefInfo(Choice):
    """What a reference video (``ref_video``) gives."""

    POSE = "pose"
    BLINK = "blink"
    POSE_BLINK = "pose+blink"
    ALL = "all"


class FaceDetector(Choice):
    AUTO = "auto"
    FAN = "fan"
    DLIB = "dlib"


class Blend(Choice):
    SEAMLESS = "seamless"
    POISSON = "poisson"
    NONE = "none"


class WatermarkPosition(Choice):
    BOTTOM_RIGHT = "bottom-right"
    BOTTOM_LEFT = "bottom-left"
    TOP_RIGHT = "top-right"
    TOP_LEFT = "top-left"


SIZES = (256, 512)
NUM_POSE_STYLES = 46
# the value lists front ends show, derived from the enums above
PREPROCESS_MODES = tuple(m.value for m in Preprocess)
ENHANCERS = tuple(m.value for m in Enhancer)
BACKGROUND_ENHANCERS = tuple(m.value for m in BackgroundEnhancer)
REF_INFO = tuple(m.value for m in RefInfo)
FACE_DETECTORS = tuple(m.value for m in FaceDetector)
BLEND_MODES = tuple(m.value for m in Blend)
WATERMARK_POSITIONS = tuple(m.value for m in WatermarkPosition)


@dataclass(frozen=True)
class Option:
    """One field of ``GenerationConfig`` as front ends see it."""

    name: str
    default: Any
    help: str
    kind: str  # "bool" | "int" | "float" | "str" | "path" | "angles" | "box" | "landmarks"
    choices: tuple | None = None  # the accepted values (text for enum options)
    minimum: float | None = None
    maximum: float | None = None
    optional: bool = False  # None is an accepted value
    also_unset: int | None = None  # a number that means None as well (seed -1: the WebUIs' "random")
    enum: type[Choice] | None = None  # the values are members of this enum


def _option(default: Any, help: str, kind: str, *, choices: Any = None, minimum: float | None = None,
            maximum: float | None = None, optional: bool = False, also_unset: int | None = None):
    """A ``GenerationConfig`` field carrying its option description; ``choices`` may be a ``Choice`` enum."""
    enum_type = choices if isinstance(choices, type) and issubclass(choices, Choice) else None
    values = tuple(m.value for m in enum_type) if enum_type else (tuple(choices) if choices else None)
    spec = dict(help=help, kind=kind, choices=values, minimum=minimum, maximum=maximum, optional=optional,
                also_unset=also_unset, enum=enum_type)
    return dataclasses.field(default=default, metadata={"option": spec})


Angles = Optional[tuple[float, ...]]


@dataclass(frozen=True)
class GenerationConfig:
    """Every option of one generation, checked and typed. Build it with ``from_options`` (which validates);
    ``replace`` gives a changed copy, validated again; ``to_dict`` the JSON form (parameters files)."""

    preprocess: Preprocess = _option(
        Preprocess.CROP, "How the face is cut from the image: crop (face only), extcrop (face with margin), "
        "resize (whole image squashed), full / extfull (animate the face, paste it back into the whole image).",
        "str", choices=Preprocess)
    still: bool = _option(False, "Keep the head pose of the source (less head motion); recommended with full.",
                          "bool")
    size: int = _option(256, "Render resolution of the face: 256 or 512 (needs the 512 checkpoint).", "int",
                        choices=SIZES)
    pose_style: int = _option(0, "Head-motion style of the pose generator, 0..45.", "int", minimum=0,
                              maximum=NUM_POSE_STYLES - 1)
    expression_scale: float = _option(1.0, "Strength of the lip/expression motion (1 = as trained).", "float",
                                      minimum=0.0, maximum=10.0)
    head_motion_scale: float = _option(1.0, "Scales the generated head motion around the source pose (0 = none).",
                                       "float", minimum=0.0, maximum=10.0)
    blink: bool = _option(True, "Add eye blinks.", "bool")
    ref_eyeblink: Optional[str] = _option(None, "Reference video whose eye blinks (and brows) are copied.", "path",
                                          optional=True)
    ref_pose: Optional[str] = _option(None, "Reference video whose head motion is copied.", "path", optional=True)
    ref_video: Optional[str] = _option(None, "Reference video used as ref_info says (alternative to "
                                       "ref_eyeblink/ref_pose).", "path", optional=True)
    ref_info: Optional[RefInfo] = _option(
        None, "What to take from ref_video: pose, blink, pose+blink, or all (re-enact the video's whole face "
        "motion and use its audio when no audio is given).", "str", choices=RefInfo, optional=True)
    input_yaw: Angles = _option(None, "Free-view yaw angles in degrees, e.g. [-20, 20] sweeps left to right.",
                                "angles", optional=True)
    input_pitch: Angles = _option(None, "Free-view pitch angles in degrees.", "angles", optional=True)
    input_roll: Angles = _option(None, "Free-view roll angles in degrees.", "angles", optional=True)
    batch_size: int = _option(2, "Frames rendered per network call (higher = faster on GPU, more memory).", "int",
                              minimum=1, maximum=256)
    enhancer: Optional[Enhancer] = _option(None, "Face restoration after rendering: gfpgan, RestoreFormer or "
                                           "codeformer.", "str", choices=Enhancer, optional=True)
    background_enhancer: Optional[BackgroundEnhancer] = _option(
        None, "Background upscaler (with an enhancer): realesrgan.", "str", choices=BackgroundEnhancer,
        optional=True)
    seed: Optional[int] = _option(
        None, "Random seed: the same seed reproduces the same video on the same machine (-1 or empty: random; "
        "the seed used is reported).", "int", minimum=0, maximum=2**63 - 1, optional=True, also_unset=-1)
    fps: int = _option(25, "Frames per second of the video.", "int", minimum=1, maximum=60)
    face_detector: FaceDetector = _option(
        FaceDetector.AUTO, "Landmark backend: auto (fan when its weights are present or can be downloaded, else "
        "dlib), fan (face-alignment) or dlib (offline).", "str", choices=FaceDetector)
    face_index: Optional[int] = _option(None, "Which face to animate when the image has several (0 = largest).",
                                        "int", minimum=0, maximum=1000, optional=True)
    face_box: Optional[tuple[float, float, float, float]] = _option(
        None, "Face box x0 y0 x1 y1 in image pixels (skips face detection).", "box", optional=True)
    landmarks: Optional[tuple[tuple[float, float], ...]] = _option(
        None, "68 (x, y) face landmarks in image pixels (skips detection).", "landmarks", optional=True)
    idle_seconds: Optional[float] = _option(None, "Idle mode: make a video of this many seconds without speech.",
                                            "float", minimum=0.04, maximum=3600.0, optional=True)
    blend: Blend = _option(Blend.SEAMLESS, "Paste-back blending for full/extfull: seamless (fast), poisson "
                           "(original look, slow on CPU) or none.", "str", choices=Blend)
    crf: int = _option(18, "Video quality (x264 CRF: lower = better and larger).", "int", minimum=0, maximum=51)
    watermark: Optional[str] = _option(None, "Visible text drawn in a corner of every frame, e.g. 'AI-generated' "
                                       "(empty = none).", "str", optional=True)
    watermark_position: WatermarkPosition = _option(WatermarkPosition.BOTTOM_RIGHT, "Corner of the watermark text.",
                                                    "str", choices=WatermarkPosition)
    watermark_opacity: float = _option(0.6, "Watermark strength: 0 = invisible, 1 = opaque.", "float",
                                       minimum=0.0, maximum=1.0)
    mouth_only: bool = _option(True, "Dubbing a video: replace only a feathered region around the mouth, so the "
                               "video's own eyes, blinks and brows stay; off re-renders the whole face with "
                               "generated blinks.", "bool")
    video_audio_volume: float = _option(0.0, "Dubbing a video: volume of the video's own sound mixed under the new "
                                        "speech (0 = replaced by the speech, 1 = full).", "float", minimum=0.0,
                                        maximum=1.0)

    @classmethod
    def from_options(cls, raw: Mapping[str, Any] | None = None, **overrides: Any) -> GenerationConfig:
        """The config of ``raw`` updated by ``overrides``, every value checked and typed, the rest defaults.

        A ``GenerationConfig`` given as ``raw`` is taken as it is (it was checked when it was made). Unknown
        names raise ``OptionError`` (a typo must not be silently ignored).
        """
        if isinstance(raw, GenerationConfig):
            return raw.replace(**overrides) if overrides else raw
        given = dict(raw or {})
        given.update(overrides)
        unknown = sorted(set(given) - set(OPTIONS_BY_NAME))
        if unknown:
            # named by the first unknown one, so a front end can point at the field it came from
            problem = f"not an option. Known options: {', '.join(OPTIONS_BY_NAME)}."
            raise OptionError(f"unknown option(s): {', '.join(unknown)}. Known options: "
                              f"{', '.join(OPTIONS_BY_NAME)}.", option=unknown[0], problem=problem)
        config = cls(**{name: _convert(OPTIONS_BY_NAME[name], value) for name, value in given.items()})
        config._check_together()
        return config

    def replace(self, **changes: Any) -> GenerationConfig:
        """A copy with ``changes`` applied, each checked as ``from_options`` checks it."""
        return GenerationConfig.from_options({**self.to_dict(), **changes})

    @property
    def needs_audio(self) -> bool:
        """Whether a job needs driving audio: idle mode makes a video without speech, and re-enacting a
        reference video (ref_info all) takes that video's audio."""
        return self.idle_seconds is None and self.ref_info != RefInfo.ALL

    def with_seed(self) -> GenerationConfig:
        """This config with a seed: its own, or a random 48-bit one drawn now. Runs vary like the original's,
        but the seed a run used is known, so any run can be repeated."""
        if self.seed is not None:
            return self
        # dataclasses.replace, not replace(): a 48-bit seed is within the option's range, nothing to check
        return dataclasses.replace(self, seed=int.from_bytes(os.urandom(6), "little"))

    def to_dict(self) -> dict[str, Any]:
        """Every option by name as plain JSON values (enum members are text, tuples lists)."""
        return {o.name: _plain(getattr(self, o.name)) for o in OPTIONS}

    def _check_together(self) -> None:
        """Rules between options (each value alone was checked by ``_convert``)."""
        if self.face_box is not None:
            x0, y0, x1, y1 = self.face_box
            if x1 <= x0 or y1 <= y0:
                raise _fail(OPTIONS_BY_NAME["face_box"], list(self.face_box), "x0 < x1 and y0 < y1")
        if self.ref_info is not None and self.ref_video is None:
            raise OptionError("option 'ref_info' needs 'ref_video': give the reference video to take "
                              f"{self.ref_info} from.", option="ref_info",
                              problem=f"needs a reference video to take {self.ref_info} from; give one.")


def _plain(value: Any) -> Any:
    if isinstance(value, Choice):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


OPTIONS: tuple[Option, ...] = tuple(
    Option(name=f.name, default=_plain(f.default), **f.metadata["option"])
    for f in dataclasses.fields(GenerationConfig))
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
    """Every option's default by name, as plain JSON values."""
    return GenerationConfig().to_dict()


def _fail(option: Option, value: Any, expected: str) -> OptionError:
    shown = repr(_plain(value) if isinstance(value, (tuple, Choice)) else value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    problem = f"got {shown}, expected {expected}."
    return OptionError(f"option '{option.name}': {problem}", option=option.name, problem=problem)


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
    return tuple(out)


def _landmarks(option: Option, value: Any) -> tuple[tuple[float, float], ...]:
    if isinstance(value, Mapping) and "landmarks" in value:
        value = value["landmarks"]
    try:
        points = tuple((float(x), float(y)) for x, y in value)
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
        return option.enum(value) if option.enum is not None else value
    value = _CONVERTERS[option.kind](option, value)
    if option.choices is not None and value not in option.choices:
        raise _fail(option, value, "one of " + ", ".join(str(c) for c in option.choices))
    return value


def validate_options(raw: Mapping[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """``GenerationConfig.from_options(raw, **overrides).to_dict()``: the checked options as plain JSON values."""
    return GenerationConfig.from_options(raw, **overrides).to_dict()


def describe_options() -> list[dict[str, Any]]:
    """JSON-friendly description of every option (for ``GET /sadtalker/v1/options`` and UIs)."""
    return [
        {"name": o.name, "default": o.default, "type": o.kind, "help": o.help,
         "choices": list(o.choices) if o.choices else None, "minimum": o.minimum, "maximum": o.maximum,
         "optional": o.optional}
        for o in OPTIONS
    ]
