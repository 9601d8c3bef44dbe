"""ComfyUI entry point: ComfyUI imports this file when the repository is cloned into ``custom_nodes/``.

The AUTOMATIC1111 / Forge / SD.Next extension in the same clone never imports it (those hosts load only
``scripts/*.py``, ``install.py`` and ``preload.py``), and outside ComfyUI it exports no nodes. Importing it is
cheap: the node classes are declared, torch and the networks load when a node first runs.
"""

try:
    import folder_paths  # noqa: F401  (ComfyUI's own module: present only inside ComfyUI)
except ImportError:
    NODE_CLASS_MAPPINGS: dict = {}
    NODE_DISPLAY_NAME_MAPPINGS: dict = {}
else:
    from .sadtalker_comfy.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
