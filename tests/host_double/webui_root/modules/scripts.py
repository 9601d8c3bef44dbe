"""A18 modules/scripts.py:355-364,499-542: basedir() (the extension folder only while its script is being
imported), Script / AlwaysVisible, scripts_current, load_scripts(): clear_callbacks, then each
<ext>/scripts/*.py (sorted, no recursion) imported with spec_from_file_location(basename, path) and the
extension folder first on sys.path during the import; A1111 restores sys.path, Forge keeps it
(FG modules/scripts.py:499-502)."""

import os
import sys

from modules import flavor_is, paths, script_callbacks, script_loading

AlwaysVisible = object()
scripts_current = None
current_basedir = paths.script_path
loaded_modules = {}


class Script:
    filename = None

    def title(self):
        raise NotImplementedError

    def show(self, is_img2img):
        return True


def basedir():
    return current_basedir


def load_scripts(extension_dirs):
    global current_basedir
    script_callbacks.clear_callbacks()
    loaded_modules.clear()
    syspath = sys.path
    for ext_dir in extension_dirs:
        scripts_dir = os.path.join(ext_dir, "scripts")
        if not os.path.isdir(scripts_dir):
            continue
        for name in sorted(os.listdir(scripts_dir)):
            path = os.path.join(scripts_dir, name)
            if not (name.endswith(".py") and os.path.isfile(path)):
                continue
            try:
                if ext_dir != paths.script_path:
                    sys.path = [ext_dir] + sys.path
                current_basedir = ext_dir
                loaded_modules[name] = script_loading.load_module(path)
            finally:
                if not flavor_is("forge"):
                    sys.path = syspath
                current_basedir = paths.script_path
