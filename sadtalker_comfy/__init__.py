"""ComfyUI nodes on ``sadtalker_core``: loader, animate, dub video and face crop (see ``nodes.py``).

``sadtalker_core`` is imported from this repository's root, which ComfyUI does not put on ``sys.path``; the
root is added only for that import (as the WebUI extension does), so no other top-level name of the
repository (``scripts``, ``tools``, ``tests``...) can shadow another package's modules.
"""

import importlib
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[1])


def _import_core():
    added = _ROOT not in sys.path
    if added:
        sys.path.insert(0, _ROOT)
    try:
        return importlib.import_module("sadtalker_core")
    finally:
        if added:
            sys.path.remove(_ROOT)


_import_core()  # cheap: the package defers torch and the networks to the first job
