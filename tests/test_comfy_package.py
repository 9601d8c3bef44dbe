"""The repository root as a ComfyUI package, imported outside ComfyUI (as a WebUI or a plain Python would)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_IMPORT_ROOT = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("sadtalker_clone", sys.argv[1] + "/__init__.py",
                                              submodule_search_locations=[sys.argv[1]])
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
print(json.dumps({"nodes": sorted(module.NODE_CLASS_MAPPINGS), "names": sorted(module.NODE_DISPLAY_NAME_MAPPINGS),
                  "heavy": sorted(m for m in ("torch", "cv2", "sadtalker_core") if m in sys.modules)}))
"""


def test_root_package_outside_comfyui_exports_nothing_and_imports_nothing_heavy(tmp_path):
    import json

    done = subprocess.run([sys.executable, "-c", _IMPORT_ROOT, str(REPO)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"nodes": [], "names": [], "heavy": []}


def test_example_workflow_sets_every_animate_widget():
    """ComfyUI refuses a prompt that lacks a required input: a new option must reach the example too."""
    import json

    sys.path.insert(0, str(REPO))
    try:
        from sadtalker_comfy import widgets  # the option table only: no ComfyUI needed
    finally:
        sys.path.remove(str(REPO))
    example = json.loads((REPO / "examples" / "comfyui_sadtalker.json").read_text())
    animate, = [node for node in example.values() if node["class_type"] == "SadTalkerAnimate"]
    names = {o.name for o in widgets.ANIMATE_OPTIONS}
    assert sorted(names - set(animate["inputs"])) == []
    assert sorted(set(animate["inputs"]) - names - {"sadtalker", "image", "audio", "save_video",
                                                    "filename_prefix"}) == []
