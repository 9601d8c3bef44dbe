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


def _nodes_with_a_stand_in_folder_paths(monkeypatch, tmp_path):
    """``sadtalker_comfy.nodes`` imported outside ComfyUI: its one module-level need, ``folder_paths``, is a
    stand-in holding a model folder under ``tmp_path``."""
    import types

    folder_paths = types.ModuleType("folder_paths")
    folder_paths.models_dir = str(tmp_path)
    folder_paths.add_model_folder_path = lambda name, path: None
    folder_paths.get_folder_paths = lambda name: [str(tmp_path / name)]
    monkeypatch.setitem(sys.modules, "folder_paths", folder_paths)
    monkeypatch.syspath_prepend(str(REPO))
    monkeypatch.delitem(sys.modules, "sadtalker_comfy.nodes", raising=False)
    import importlib

    return importlib.import_module("sadtalker_comfy.nodes")


def test_a_bad_widget_value_is_named_as_the_widget(monkeypatch, tmp_path):
    import pytest

    from sadtalker_core.errors import OptionError

    nodes = _nodes_with_a_stand_in_folder_paths(monkeypatch, tmp_path)
    with pytest.raises(OptionError) as caught:
        nodes._config({"face_box": "50 50 10 10"})
    assert str(caught.value) == "face_box: got [50.0, 50.0, 10.0, 10.0], expected x0 < x1 and y0 < y1."


def test_an_option_error_from_deep_in_the_core_is_named_as_the_widget(monkeypatch, tmp_path):
    """The face box is checked against the picture only when the face is located: that error is relabelled too."""
    import pytest
    import torch

    from sadtalker_core.errors import OptionError

    nodes = _nodes_with_a_stand_in_folder_paths(monkeypatch, tmp_path)
    picture = torch.zeros((1, 64, 64, 3))
    with pytest.raises(OptionError) as caught:
        nodes.SadTalkerFaceCrop().crop(picture, preprocess="crop", size=256, face_detector="dlib", face_index=-1,
                                       face_box="100 100 200 200")
    assert str(caught.value).startswith("face_box: [100.0, 100.0, 200.0, 200.0] lies outside the 64x64 image")
