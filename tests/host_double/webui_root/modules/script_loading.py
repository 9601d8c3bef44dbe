"""A18 modules/script_loading.py:7-31: load_module via spec_from_file_location; preload_extensions imports
each extension's preload.py and calls preload(parser)."""

import importlib.util
import os


def load_module(path):
    module_spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def preload_extensions(extensions_dirs, parser):
    for dirname in extensions_dirs:
        preload_script = os.path.join(dirname, "preload.py")
        if not os.path.isfile(preload_script):
            continue
        module = load_module(preload_script)
        if hasattr(module, "preload"):
            module.preload(parser)
