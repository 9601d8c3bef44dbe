"""A18 modules/gradio_extensons.py:17-80: every component and layout block fires
before_component_callback / after_component_callback with its constructor kwargs (after_component at the
end of __init__, inside the parent layout). FG modules/gradio_extensions.py:130-180 (gradio 4): event
listeners take ``_js=`` and map it to ``js=``. ``install()`` patches, ``uninstall()`` restores."""

import inspect

import gradio as gr

from modules import script_callbacks

_originals = {}


def _patch(cls):
    original = cls.__init__

    def __init__(self, *args, **kwargs):
        script_callbacks.before_component_callback(self, **kwargs)
        original(self, *args, **kwargs)
        script_callbacks.after_component_callback(self, **kwargs)

    _originals[cls] = original
    cls.__init__ = __init__


def install():
    if _originals:
        return
    _patch(gr.components.Component)
    _patch(gr.blocks.BlockContext)


def uninstall():
    for cls, original in _originals.items():
        cls.__init__ = original
    _originals.clear()


def click(button, fn, js=None, **kwargs):
    """button.click with the host's ``_js=`` spelling, mapped to ``js=`` where gradio has no ``_js``."""
    params = inspect.signature(button.click).parameters
    if js is not None:
        kwargs["_js" if "_js" in params else "js"] = js
    if "show_progress" in kwargs and "show_progress" not in params:
        kwargs.pop("show_progress")
    if kwargs.get("show_progress") is False and "show_progress" in params \
            and params["show_progress"].annotation not in (bool, "bool"):
        kwargs["show_progress"] = "hidden"
    return button.click(fn=fn, **kwargs)
