"""A18/A110 modules/script_callbacks.py: callback registry recording the caller's file (inspect.stack,
A18 :331-335); exceptions in callbacks are reported and skipped (:13-15); before_ui / script_unloaded run
in reverse order (:291-296). ``name=`` exists only on A1111 1.9+ and Forge (A110 :473); on A1111 1.8 and
SD.Next passing it is a TypeError, exactly as there."""

import inspect
import os
import traceback
from collections import namedtuple

from modules import flavor_is

ScriptCallback = namedtuple("ScriptCallback", ["script", "callback", "name"])

CATEGORIES = ("app_started", "before_reload", "ui_tabs", "ui_settings", "before_ui", "script_unloaded",
              "before_component", "after_component", "model_loaded")
callback_map = {f"callbacks_{c}": [] for c in CATEGORIES}
#: exceptions reported by report_exception (the host prints them; tests inspect them)
errors = []


def report_exception(c, job):
    errors.append((c.script, job, traceback.format_exc()))


def clear_callbacks():
    for callbacks in callback_map.values():
        callbacks.clear()


def add_callback(callbacks, fun, name=None):
    stack = [x for x in inspect.stack() if x.filename != __file__]
    filename = stack[0].filename if stack else "unknown file"
    callbacks.append(ScriptCallback(filename, fun, name))


def remove_current_script_callbacks():
    stack = [x for x in inspect.stack() if x.filename != __file__]
    filename = stack[0].filename if stack else "unknown file"
    for callbacks in callback_map.values():
        for c in [c for c in callbacks if c.script == filename]:
            callbacks.remove(c)


def _run(category, *args, reverse=False, **kwargs):
    results = []
    items = callback_map[f"callbacks_{category}"]
    for c in (reversed(items) if reverse else list(items)):
        try:
            results.append(c.callback(*args, **kwargs))
        except Exception:
            report_exception(c, category)
    return results


def ui_tabs_callback():
    res = []
    for c in callback_map["callbacks_ui_tabs"]:
        try:
            res += c.callback() or []
        except Exception:
            report_exception(c, "ui_tabs_callback")
    return res


def ui_settings_callback():
    _run("ui_settings")


def app_started_callback(demo, app):
    _run("app_started", demo, app)


def before_reload_callback():
    _run("before_reload")


def before_ui_callback():
    _run("before_ui", reverse=True)


def script_unloaded_callback():
    _run("script_unloaded", reverse=True)


def before_component_callback(component, **kwargs):
    _run("before_component", component, **kwargs)


def after_component_callback(component, **kwargs):
    _run("after_component", component, **kwargs)


def _register(category):
    if flavor_is("a1111-1.8", "sdnext"):
        def register(callback):
            add_callback(callback_map[f"callbacks_{category}"], callback)
    else:
        def register(callback, *, name=None):
            add_callback(callback_map[f"callbacks_{category}"], callback, name=name)
    register.__name__ = f"on_{category}"
    return register


on_app_started = _register("app_started")
on_before_reload = _register("before_reload")
on_ui_tabs = _register("ui_tabs")
on_ui_settings = _register("ui_settings")
on_before_ui = _register("before_ui")
on_script_unloaded = _register("script_unloaded")
on_before_component = _register("before_component")
on_after_component = _register("after_component")
on_model_loaded = _register("model_loaded")


def registered_scripts():
    """Basenames of the files that registered callbacks (for tests)."""
    return sorted({os.path.basename(c.script) for cs in callback_map.values() for c in cs})
