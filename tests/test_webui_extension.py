"""The WebUI extension against the host test double: lifecycle, settings, Send to SadTalker, progress and
Interrupt through the host's GPU wrapper, Reload UI, --nowebui, flavors, import hygiene."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host_double import REPO, ROOT
from host_double.fixtures import make_host, tab_module, use_stub_talker  # noqa: F401  (fixture)

pytestmark = pytest.mark.host
FLAVORS = ("a1111", "a1111-1.8", "forge", "sdnext")


def _elem_ids(blocks) -> list[str]:
    return [getattr(b, "elem_id", None) for b in blocks.blocks.values()]


def test_import_does_no_work_and_resolves_own_folder(tmp_path):
    code = f"""
import sys, json
sys.path.insert(0, {str(ROOT)!r})
import os
os.environ["HOST_DOUBLE_SCRIPT_PATH"] = {str(tmp_path)!r}
from modules import script_callbacks
before = set(sys.modules)
sys.path.insert(0, {str(REPO)!r})
import importlib.util
spec = importlib.util.spec_from_file_location("sadtalker_tab.py", {str(REPO / 'scripts' / 'sadtalker_tab.py')!r})
module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)
sys.path.remove({str(REPO)!r})
new = sorted(set(sys.modules) - before)
print(json.dumps({{"new": new, "dir": str(module.EXTENSION_DIR),
                  "callbacks": {{k: len(v) for k, v in script_callbacks.callback_map.items()}}}}))
"""
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                    cwd=tmp_path).stdout)
    heavy = [m for m in out["new"] if m.split(".")[0] in ("torch", "gradio", "fastapi", "cv2", "numpy", "PIL")
             or m.startswith(("sadtalker_core.pipeline", "sadtalker_core.frontends.ui", "sadtalker_core.frontends.api"))]
    assert heavy == []
    assert "sadtalker_core" in out["new"]  # importable later, when the host has restored sys.path
    assert Path(out["dir"]) == REPO
    for category in ("ui_tabs", "ui_settings", "app_started", "after_component", "before_ui"):
        assert out["callbacks"][f"callbacks_{category}"] == 1


@pytest.mark.parametrize("flavor", FLAVORS)
def test_lifecycle_on_every_flavor(make_host, flavor):
    host = make_host(flavor=flavor, args="--api")
    app = host.start()
    from modules import script_callbacks, shared

    assert script_callbacks.errors == []
    assert ("SadTalker", "sadtalker") in [(label, ifid) for _, label, ifid in host.interfaces]
    ids = _elem_ids(host.demo)
    assert "tab_sadtalker" in ids and "sadtalker_source_image" in ids and "img2img_image" in ids
    assert ids.count("sadtalker_source_image") == 1
    # settings: own section, every key registered with a 2-tuple section
    keys = [k for k in shared.opts.data_labels if k.startswith("sadtalker_")]
    assert {"sadtalker_checkpoint_dir", "sadtalker_outdir", "sadtalker_size", "sadtalker_preprocess",
            "sadtalker_enhancer", "sadtalker_keep_loaded"} <= set(keys)
    assert {shared.opts.data_labels[k].section for k in keys} == {("sadtalker", "SadTalker")}
    assert Path(shared.opts.sadtalker_outdir).is_relative_to(host.data_path)
    paths = {r.path for r in app.routes}
    assert {"/sadtalker/v1/generate", "/sadtalker/v1/status", "/sadtalker/v1/options"} <= paths
    assert sys.modules["sadtalker_core"].__file__.startswith(str(REPO))


@pytest.mark.parametrize("flavor", FLAVORS)
def test_send_to_buttons_sit_after_extras_and_bind_to_the_tab(make_host, flavor):
    host = make_host(flavor=flavor)
    host.start()
    copypaste = host.copypaste()
    module = tab_module()
    assert copypaste.paste_fields["sadtalker"]["init_img"] is module.tab_parts.source_image
    bindings = [b for b in copypaste.registered_param_bindings if b.tabname == "sadtalker"]
    assert sorted(b.paste_button.elem_id for b in bindings) == ["img2img_send_to_sadtalker",
                                                               "txt2img_send_to_sadtalker"]
    ids = _elem_ids(host.demo)
    for tab in ("txt2img", "img2img"):
        gallery = next(b for b in host.demo.blocks.values() if getattr(b, "elem_id", None) == f"{tab}_gallery")
        binding = next(b for b in bindings if b.paste_button.elem_id == f"{tab}_send_to_sadtalker")
        assert binding.source_image_component is gallery
        extras_id = "extras_tab" if flavor == "sdnext" else f"{tab}_send_to_extras"
        row_ids = [i for i in ids if i in (extras_id, f"{tab}_send_to_sadtalker", f"{tab}_gallery")]
        assert row_ids.index(f"{tab}_send_to_sadtalker") > 0
    assert "extras_send_to_sadtalker" not in ids


def test_sent_gallery_image_reaches_the_source_image(make_host, tmp_path):
    from PIL import Image

    host = make_host()
    host.start()
    picture = tmp_path / "gallery.png"
    Image.new("RGB", (32, 24), (200, 10, 10)).save(picture)
    import tempfile

    temp_copy = Path(tempfile.mkdtemp()) / "shown.png"
    temp_copy.write_bytes(picture.read_bytes())
    copypaste = host.copypaste()
    # what the host's paste click computes from a gradio-3 gallery item and a gradio-4 (path, caption) pair
    for value in ({"name": str(temp_copy), "is_file": True, "data": None}, [(str(temp_copy), None)]):
        image = copypaste.image_from_url_text(value)
        assert image.size == (32, 24) and image.convert("RGB").getpixel((0, 0)) == (200, 10, 10)


def test_hidden_tab_creates_no_buttons(make_host):
    host = make_host(config={"hidden_tabs": ["SadTalker"]})
    host.start()
    from modules import script_callbacks

    assert script_callbacks.errors == []
    assert "txt2img_send_to_sadtalker" not in _elem_ids(host.demo)
    assert "tab_sadtalker" not in _elem_ids(host.demo)


def stub_checkpoints(folder: Path) -> str:
    """Empty files under the official names: enough for discovery when the StubTalker stands in."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("SadTalker_V0.0.2_256.safetensors", "mapping_00229-model.pth.tar", "mapping_00109-model.pth.tar"):
        (folder / name).touch()
    return str(folder)


def _run_generate(parts, *values_by_name, task="task(abc)", image="face.png", audio="a.wav", **overrides):
    """Calls the wrapped generate function with the tab's defaults, as a Generate click would."""
    args = []
    for component in parts.inputs:
        elem = getattr(component, "elem_id", "")
        if elem == "sadtalker_id_task":
            args.append(task)
        elif elem == "sadtalker_source_image":
            args.append(image)
        elif elem == "sadtalker_audio":
            args.append(audio)
        else:
            name = elem[len("sadtalker_"):]
            args.append(overrides.get(name, component.value))
    return parts.generate(*args)


def test_generate_reports_progress_saves_sidecar_and_time_taken(make_host, tmp_path):
    host = make_host(config={"sadtalker_outdir": str(tmp_path / "videos"), "sadtalker_checkpoint_dir":
                             stub_checkpoints(tmp_path / "ckpt")})
    host.start()
    from modules import progress, shared

    talkers = use_stub_talker()
    module = tab_module()
    video, crop, folder, info = _run_generate(module.tab_parts, pose_style=7)
    talker = talkers[0]
    assert talker.calls[0]["options"]["pose_style"] == 7
    assert Path(video).is_file() and Path(folder) == Path(video).parent
    assert Path(folder).parent == tmp_path / "videos"
    sidecar = json.loads(Path(video).with_suffix(".json").read_text())
    assert sidecar["options"]["pose_style"] == 7 and sidecar["source_image"] == "face.png"
    assert "Time taken" in info and "stub_1.mp4" in info
    assert shared.state.begun[-1][0] == "task(abc)"  # begun by the host's wrapper with the task id
    assert progress.recorded_results and progress.current_task is None
    assert shared.state.job_count == 0  # reset by the wrapper


def test_progress_reaches_shared_state_and_interrupt_stops_between_batches(make_host, tmp_path):
    host = make_host(config={"sadtalker_checkpoint_dir": stub_checkpoints(tmp_path / "ckpt")})
    host.start()
    from modules import progress, shared

    talkers = use_stub_talker(batches=6)
    snapshots = []

    stopping = []

    def on_batch(i):
        snapshots.append((shared.state.job_no, shared.state.job_count, shared.state.sampling_step,
                          shared.state.sampling_steps, shared.state.textinfo,
                          progress.progressapi({"id_task": "task(x)"})["progress"]))
        if i == 2:
            shared.state.interrupt()  # what the tab's and the host's Interrupt buttons call
            time.sleep(0.6)  # the batch goes on; the text must change before it ends
            stopping.append(shared.state.textinfo)

    module = tab_module()
    original = module.runner().talker_factory

    def factory(*a):
        talker = original(*a)
        talker.on_batch = on_batch
        return talker

    module.runner().talker_factory = factory
    video, crop, folder, info = _run_generate(module.tab_parts, task="task(x)")
    assert video is None and "Interrupted" in info
    assert len(talkers[0].calls) == 1 and len(snapshots) == 3  # stopped before the 4th batch
    # one host job whose steps are thousandths of the expected time: rendering is most of it
    for i, (job_no, job_count, step, steps, text, fraction) in enumerate(snapshots):
        assert (job_no, job_count, steps) == (0, 1, 1000) and text == f"SadTalker render {i}/6 frames"
        assert fraction == pytest.approx(step / steps)
    fractions = [snapshot[-1] for snapshot in snapshots]
    assert fractions == sorted(fractions) and fractions[0] < 0.2 < fractions[2]
    assert fractions[1] - fractions[0] == pytest.approx(fractions[2] - fractions[1], abs=0.002)
    assert stopping == ["SadTalker Stopping after this batch"]
    assert shared.state.interrupted is False  # reset by the wrapper for the next job


def test_missing_checkpoints_show_a_message_instead_of_breaking(make_host):
    host = make_host()
    host.start()
    from modules import script_callbacks

    assert script_callbacks.errors == []
    notice = tab_module().tab_parts.checkpoint_notice.value
    assert "SadTalker_V0.0.2_256.safetensors" in notice
    assert str(host.data_path / "models" / "SadTalker") in notice and str(REPO / "checkpoints") in notice
    video, crop, folder, info = _run_generate(tab_module().tab_parts)
    assert video is None and "SadTalker_V0.0.2_256.safetensors" in info


def test_checkpoint_discovery_order(make_host, tmp_path, monkeypatch):
    monkeypatch.setenv("SADTALKER_CHECKPOINTS", str(tmp_path / "env"))
    host = make_host(args=f'--sadtalker-checkpoints "{tmp_path / "flag"}"',
                     config={"sadtalker_checkpoint_dir": str(tmp_path / "setting")})
    host.start()
    found = tab_module().checkpoint_candidates()
    assert found == [tmp_path / "flag", tmp_path / "env", tmp_path / "setting",
                     host.data_path / "models" / "SadTalker", REPO / "checkpoints"]


def test_keep_loaded_off_unloads_after_each_job(make_host, tmp_path):
    host = make_host(config={"sadtalker_keep_loaded": False, "sadtalker_checkpoint_dir": stub_checkpoints(tmp_path / "ckpt")})
    host.start()
    from modules import devices

    talkers = use_stub_talker()
    before = devices.torch_gc_calls[0]
    _run_generate(tab_module().tab_parts)
    assert talkers[0].unloaded == 1 and devices.torch_gc_calls[0] > before


def test_reload_ui_registers_once_on_a_new_app(make_host):
    host = make_host()
    first_app = host.start()
    second_app = host.reload()
    from modules import script_callbacks

    assert script_callbacks.errors == [] and second_app is not first_app
    assert [len(v) for k, v in script_callbacks.callback_map.items() if k == "callbacks_ui_tabs"] == [1]
    bindings = [b for b in host.copypaste().registered_param_bindings if b.tabname == "sadtalker"]
    assert len(bindings) == 2
    assert sum(r.path == "/sadtalker/v1/status" for r in second_app.routes) == 1


def test_nowebui_serves_the_api_without_settings(make_host):
    from fastapi.testclient import TestClient

    host = make_host(args="--nowebui")
    app = host.start_nowebui()
    from modules import script_callbacks, shared

    assert script_callbacks.errors == [] and "sadtalker_outdir" not in shared.opts.data_labels
    status = TestClient(app).get("/sadtalker/v1/status")
    assert status.status_code == 200
    assert status.json()["output_dir"] == str(host.data_path / "outputs" / "sadtalker")


def test_a1111_18_output_default_and_sys_path_restored(make_host):
    host = make_host(flavor="a1111-1.8")
    before = list(sys.path)
    host.start()
    from modules import shared

    assert Path(shared.opts.sadtalker_outdir) == host.data_path / "output" / "sadtalker"
    assert str(REPO) not in [p for p in sys.path if p not in before]


def test_renamed_extension_folder_under_data_dir(make_host, tmp_path):
    import shutil

    ext = tmp_path / "data_elsewhere" / "extensions" / "sd-webui-sadtalker"
    for name in ("scripts", "javascript", "sadtalker_core"):
        shutil.copytree(REPO / name, ext / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("preload.py", "install.py", "style.css"):
        shutil.copy(REPO / name, ext / name)
    host = make_host(extension_dir=ext)
    host.start()
    module = tab_module()
    assert module.EXTENSION_DIR == ext
    assert module.checkpoint_candidates()[-1] == ext / "checkpoints"
    assert "switch_to_sadtalker" in host.page_additions()[0]


_RECORDER = """import json, os, sys
with open(os.environ["PIP_RECORD"], "a") as log:
    log.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit(1 if os.environ.get("PIP_FAIL") and os.environ["PIP_FAIL"] in " ".join(sys.argv) else 0)
"""


def _bare_python(tmp_path: Path, installed: dict[str, str] = {}) -> Path:
    """A venv without packages (the host's Python before the extension), with fake metadata of ``installed``."""
    venv = tmp_path / "host-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    for name, version in installed.items():
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return venv / "bin" / "python"


def _install(tmp_path, *, installed: dict[str, str] = {}, pins: str | None = None, fail: str = "", **kwargs):
    """Runs install.py with the bare venv's Python, as the host does; pip is a recorder of its argv."""
    from host_double import install_env

    python = _bare_python(tmp_path, installed)
    recorder = tmp_path / "pip-recorder" / "pip.py"  # `<recorder python> -m pip` would need a module: a shim
    recorder.parent.mkdir()
    recorder.write_text(_RECORDER)
    shim = tmp_path / "python-shim"
    shim.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{recorder}" "$@"\n')  # drops "-m pip"
    shim.chmod(0o755)
    pin_file = None
    if pins is not None:
        pin_file = tmp_path / "requirements_versions.txt"
        pin_file.write_text(pins)
    env = install_env(tmp_path, python=shim, pin_file=pin_file, **kwargs)
    env.update(PIP_RECORD=str(tmp_path / "pip.jsonl"), PIP_FAIL=fail)
    workdir = tmp_path / "webui"  # the host runs installers with its own root as the working directory
    workdir.mkdir()
    result = subprocess.run([str(python), str(REPO / "install.py")], env=env, cwd=workdir, capture_output=True,
                            text=True, timeout=120)
    log = tmp_path / "pip.jsonl"
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls, workdir


@pytest.mark.parametrize("flavor", ("a1111", "sdnext"))
def test_install_quotes_specs_for_the_hosts_shell_and_leaves_the_webui_folder_alone(tmp_path, flavor):
    from sadtalker_core.frontends.host_requirements import REQUIREMENTS

    result, calls, workdir = _install(tmp_path, flavor=flavor, installed={"numpy": "1.26.2"})
    assert result.returncode == 0, result.stderr
    wanted = [r for r in REQUIREMENTS if not r.optional]
    assert len(calls) == len(wanted)
    for argv, requirement in zip(calls, wanted):
        # the shell handed pip each requirement whole: nothing became a redirection
        assert argv[0] == "install" and argv[-1] == "--prefer-binary" and requirement.spec in argv
        assert ("--no-deps" in argv) == requirement.no_deps
        if not requirement.no_deps:
            assert "numpy==1.26.2" in argv  # dependencies never move the host's numpy
    assert list(workdir.iterdir()) == []  # no "=1.4" file or anything else written into the host's folder
    banned = ("torch", "torchvision", "gfpgan", "basicsr", "gradio", "opencv", "pydantic", "fastapi")
    assert not [a for argv in calls for a in argv if a.split("=")[0].split(">")[0] in banned]


def test_install_never_changes_a_package_the_host_pins_and_says_so(tmp_path):
    installed = {"safetensors": "0.4.2", "imageio-ffmpeg": "0.4.9", "scipy": "1.16.3", "spandrel": "0.1.5",
                 "face-alignment": "1.4.1", "numba": "0.55.0"}
    result, calls, _ = _install(tmp_path, installed=installed, pins="spandrel==0.1.5\nnumpy==1.26.2\n")
    assert result.returncode == 0, result.stderr
    assert [[a for a in argv if ">=" in a] for argv in calls] == [["numba>=0.57"]]  # too old, not pinned
    assert "spandrel 0.1.5 is pinned by the WebUI" in result.stdout and "face restoration" in result.stdout


def test_install_survives_a_failing_pip_and_skip_install(tmp_path):
    result, calls, _ = _install(tmp_path, fail="face-alignment")
    assert result.returncode == 0 and "could not install face-alignment>=1.4" in result.stdout
    assert "face-alignment is not installed" in result.stdout  # reported with its fix
    skipped = tmp_path / "skip"
    skipped.mkdir()
    result, calls, _ = _install(skipped, skip_install=True)
    assert result.returncode == 0 and calls == []


def test_preload_adds_the_checkpoint_flag():
    import argparse
    import importlib.util

    spec = importlib.util.spec_from_file_location("preload.py", REPO / "preload.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    parser = argparse.ArgumentParser()
    module.preload(parser)
    assert parser.parse_args(["--sadtalker-checkpoints", "/x"]).sadtalker_checkpoints == "/x"
    assert parser.parse_args([]).sadtalker_checkpoints is None


@pytest.mark.host
def test_c2pa_settings_reach_the_job(make_host, tmp_path):
    """The WebUI's C2PA certificate settings are what a job signs with: half a pair is refused before any work,
    naming what is missing; no setting means an unsigned job."""
    from fastapi.testclient import TestClient

    from host_double.fixtures import use_stub_talker
    from test_api import _png_b64, _wav_b64

    cert = tmp_path / "chain.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    host = make_host(args="--api", config={"sadtalker_checkpoint_dir": stub_checkpoints(tmp_path / "ckpt"),
                                           "sadtalker_c2pa_cert": str(cert)})
    client, talkers = TestClient(host.start()), use_stub_talker()
    payload = {"image": _png_b64(), "audio": _wav_b64()}
    refused = client.post("/sadtalker/v1/generate", json=payload)
    assert refused.status_code in (400, 422) and "private key is missing" in refused.text, refused.text
    assert not talkers or not talkers[0].calls

    from modules import shared

    shared.opts.sadtalker_c2pa_cert = ""
    assert client.post("/sadtalker/v1/generate", json=payload).status_code == 200


def test_the_default_settings_take_choices_and_defaults_from_the_option_table(make_host):
    host = make_host()
    host.start()
    from modules import shared

    from sadtalker_core.options import OPTIONS_BY_NAME

    for name in tab_module().DEFAULT_SETTINGS:
        option, setting = OPTIONS_BY_NAME[name], shared.opts.data_labels[f"sadtalker_{name}"]
        expected = [str(c) for c in option.choices] + (["none"] if option.optional else [])
        assert setting.component_args["choices"] == expected, name
        assert setting.default == ("none" if option.default is None else str(option.default)), name
