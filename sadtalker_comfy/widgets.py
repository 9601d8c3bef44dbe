"""The option table (``sadtalker_core.options``) as ComfyUI widgets, and widget values back as options.

ComfyUI widgets cannot hold "not set", so an optional option is shown with a value that means unset:
``"none"`` in a combo, an empty text field, or a number just below the option's range (``-1`` for a seed or a
face index, ``0`` for idle seconds); the tooltip says which.
"""

from __future__ import annotations

import json
from typing import Any

from sadtalker_core.options import DUB_OPTIONS, PORTRAIT_OPTIONS, Option

NONE = "none"
#: options set on the Loader node: the networks loaded depend on them
LOADER_OPTIONS = ("size",)
#: options the Animate node shows: those acting on a portrait, in table order
ANIMATE_OPTIONS: tuple[Option, ...] = tuple(o for o in PORTRAIT_OPTIONS if o.name not in LOADER_OPTIONS)
#: options the Dub Video node shows: those acting on a dub (none that dubbing refuses or ignores)
DUB_VIDEO_OPTIONS: tuple[Option, ...] = tuple(o for o in DUB_OPTIONS if o.name not in LOADER_OPTIONS)
#: ComfyUI's INT widgets hold 64-bit values (its own seeds go to 0xffffffffffffffff)
_INT_LIMIT = 2**64 - 1


def unset_value(option: Option) -> Any:
    """The widget value that stands for "not set" of an optional option."""
    if option.choices is not None:
        return NONE
    if option.kind in ("int", "float"):
        below = (option.minimum or 0) - 1
        return below if option.kind == "int" else (0.0 if (option.minimum or 0) > 0 else float(below))
    return ""


def widget(option: Option) -> tuple:
    """``(type, config)`` of the widget for ``option``, as ``INPUT_TYPES`` returns it."""
    tooltip = option.help
    if option.optional:
        tooltip += f" Not set: {unset_value(option)!r}."
    config: dict[str, Any] = {"tooltip": tooltip}
    if option.choices is not None:
        choices = [str(c) for c in option.choices]
        default = str(option.default) if option.default is not None else NONE
        if option.optional:
            choices = [NONE, *choices]
        return (choices, {**config, "default": default})
    if option.kind == "bool":
        return ("BOOLEAN", {**config, "default": option.default})
    if option.kind in ("int", "float"):
        low = unset_value(option) if option.optional else option.minimum
        high = option.maximum
        if option.kind == "int":
            config.update(min=int(low), max=int(min(high, _INT_LIMIT)), step=1)
        else:
            config.update(min=float(low), max=float(high), step=0.01)
        default = option.default if option.default is not None else low
        return (option.kind.upper(), {**config, "default": default})
    # path, angles, box, landmarks: text (numbers separated by spaces or commas; landmarks as JSON)
    return ("STRING", {**config, "default": "" if option.default is None else str(option.default),
                       "multiline": option.kind == "landmarks"})


def input_types(options=ANIMATE_OPTIONS) -> dict[str, tuple]:
    return {o.name: widget(o) for o in options}


def option_value(option: Option, value: Any) -> Any:
    """The widget's value as the option table takes it (validated later by ``validate_options``)."""
    if option.optional:
        if isinstance(value, str) and value.strip() in ("", NONE):
            return None
        if option.kind in ("int", "float") and value is not None and value < (option.minimum or 0):
            return None
    if option.choices is not None and option.kind == "int" and isinstance(value, str):
        return int(value)
    if option.kind == "landmarks" and isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value  # validate_options names the option and what it expects
    return value
