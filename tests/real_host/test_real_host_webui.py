"""The extension inside a real WebUI (A1111 1.8.0 / 1.10.1, Forge), installed as a user installs it: the host
ran its install.py at start, the tab and settings exist, generation works through the host's REST API with
synthetic checkpoints written by the current torch and the host's own torch.load patch left on, progress and
Interrupt go through the host's state, and the host's own features still work afterwards.

Tests run in file order against one started host; the --api-auth tests (test_real_host_auth.py) start it again.
"""

from __future__ import annotations

import base64
import io
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from realhost_support import REPO, data_url, http, webui_host

MEDIA = REPO.parent / "shared" / "media"
LOG_PREFIX = "SadTalker:"


def _payload(speech_clip, seconds: float, batch_size: int, names=("image", "audio")) -> dict:
    return {names[0]: data_url(MEDIA / "happy.png", "image/png"),
            names[1]: base64.b64encode(speech_clip(seconds).read_bytes()).decode(),
            "face_detector": "dlib", "size": 256, "batch_size": batch_size, "seed": 1}


def _sadtalker_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if line.startswith(LOG_PREFIX)]


def _check_video(video_b64: str, info: dict, frames: int):
    from sadtalker_core.media import video as video_io

    data = base64.b64decode(video_b64)
    assert data[4:8] == b"ftyp", "the returned video is not an mp4"
    path = Path(info["_path"])
    assert path.read_bytes() == data
    meta = video_io.video_info(path)
    decoded = list(video_io.read_video_frames(path))
    assert len(decoded) == meta.n_frames == info["num_frames"] == frames
    assert [meta.width, meta.height] == list(info["output_size"])
    assert all(f.shape == (meta.height, meta.width, 3) for f in decoded)


# --- install -------------------------------------------------------------------------------------------------

def test_tab_and_settings_section_in_config(default_host):
    status, config = http(default_host, "GET", "/config")
    assert status == 200
    elem_ids = {c.get("props", {}).get("elem_id") for c in config["components"]}
    assert "tab_sadtalker" in elem_ids, "no SadTalker tab in the host's /config"
    assert "settings_sadtalker" in elem_ids, "no SadTalker section in the host's settings"
    assert "setting_sadtalker_checkpoint_dir" in elem_ids


def test_install_py_ran_without_error(real_host, default_host):
    lines = real_host.log().splitlines()
    # only our lines: Forge's builtin installers fail offline on every start (3 GitHub downloads), by design
    ours = [l for l in lines if re.search(r"Error running install\.py.*sadtalker|Error loading script.*sadtalker"
                                           r"|Couldn't install SadTalker|SadTalker: could not install", l, re.I)]
    assert not ours, ours


def test_install_py_wrote_nothing_into_the_host_folder(real_host, default_host):
    after = webui_host.tree_files(real_host.info.root)
    assert after - real_host.tree_before == set(), "install.py (or the extension) wrote into the WebUI folder"
    assert real_host.tree_before - after == set(), "files of the WebUI folder disappeared"


def _requirement_specs() -> list[str]:
    """What install.py asks for (its table, ``sadtalker_core.frontends.host_requirements``), optional ones included."""
    from sadtalker_core.frontends.host_requirements import REQUIREMENTS

    return [r.spec for r in REQUIREMENTS]


def test_requirements_satisfied_or_status_names_them(real_host, default_host):
    specs = _requirement_specs()
    assert specs, "host_requirements.REQUIREMENTS is empty"
    unmet = real_host.python(
        "import sys, importlib.metadata as md\n"
        "from packaging.requirements import Requirement\n"
        f"for spec in {specs!r}:\n"
        "    r = Requirement(spec)\n"
        "    try: v = md.version(r.name)\n"
        "    except md.PackageNotFoundError: v = None\n"
        "    if v is None or not r.specifier.contains(v, prereleases=True): print(r.name, v)\n").split("\n")
    unmet = [u for u in unmet if u]
    status, body = http(default_host, "GET", "/sadtalker/v1/status")
    assert status == 200
    if not unmet:
        return
    requirements = body.get("requirements")
    assert requirements is not None, f"unmet in the host venv: {unmet}, and /sadtalker/v1/status says nothing"
    assert requirements["ok"] is False
    problems = " ".join(requirements["problems"]).lower()
    for line in unmet:
        name = line.split()[0].lower()
        assert name in problems or name.replace("-", "_") in problems, (name, requirements["problems"])
    assert "pip install" in problems  # the fix, not just the problem


# --- generation ----------------------------------------------------------------------------------------------

def test_generate_through_webuiapi_with_current_torch_checkpoints(real_host, default_host, speech_clip):
    import webuiapi

    before = len(_sadtalker_lines(real_host.log()))
    api = webuiapi.WebUIApi(host="127.0.0.1", port=default_host.port)
    status = api.custom_get("sadtalker/v1/status")
    assert status["checkpoints"]["found"]["256"] == str(real_host.data_dir / "models" / "SadTalker")
    result = api.custom_post("sadtalker/v1/generate", _payload(speech_clip, 0.12, 4))
    info = dict(result.json["info"], _path=result.json["path"])
    _check_video(result.json["video"], info, frames=3)
    # the host runs --use-cpu all --no-half --precision full
    assert (info.get("device"), info.get("precision")) == ("cpu", "float32"), info
    assert Path(result.json["path"]).is_relative_to(real_host.data_dir)
    new = _sadtalker_lines(real_host.log())[before:]
    assert new, "no SadTalker line in the host console for the job"
    assert any(Path(result.json["path"]).name in line for line in new), new


def test_generate_with_the_original_field_names(default_host, speech_clip):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=default_host.port)
    result = api.custom_post("sadtalker/v1/generate",
                             _payload(speech_clip, 0.12, 4, names=("source_image", "driven_audio")))
    info = dict(result.json["info"], _path=result.json["path"])
    _check_video(result.json["video"], info, frames=3)


def test_status_and_result_name_device_and_precision(default_host):
    status, body = http(default_host, "GET", "/sadtalker/v1/status")
    assert status == 200
    assert body.get("device") == "cpu"
    assert body.get("precision") == "float32", body  # the host runs --no-half --precision full


# --- progress and interrupt ----------------------------------------------------------------------------------

def test_host_progress_grows_and_interrupt_stops_within_one_batch(real_host, default_host, speech_clip):
    out_dir = real_host.data_dir / "outputs"
    files_before = {p for p in out_dir.rglob("*") if p.is_file()} if out_dir.exists() else set()
    log_before = len(_sadtalker_lines(real_host.log()))
    outcome = {}

    def job():
        outcome["response"] = http(default_host, "POST", "/sadtalker/v1/generate",
                                   _payload(speech_clip, 0.48, 2), timeout=600)
        outcome["done_at"] = time.monotonic()

    worker = threading.Thread(target=job)
    worker.start()
    seen, render_updates, previews = [], [], []
    interrupted_at = None
    stopping_text = None
    deadline = time.monotonic() + 400
    while worker.is_alive() and time.monotonic() < deadline:
        status, progress = http(default_host, "GET", "/sdapi/v1/progress?skip_current_image=true")
        assert status == 200
        state = progress["state"]
        seen.append((progress["progress"], state.get("sampling_step"), progress.get("textinfo")))
        text = progress.get("textinfo") or ""
        if interrupted_at is None and "render" in text.lower():
            render_updates.append((time.monotonic(), state.get("sampling_step")))
            if not previews:  # the host's live preview: the newest rendered frame (opts.live_previews_enable)
                image = http(default_host, "GET", "/sdapi/v1/progress")[1].get("current_image")
                if image:
                    previews.append(image)
            if len({s for _, s in render_updates}) >= 2:  # a batch finished: time one, then interrupt
                assert http(default_host, "POST", "/sdapi/v1/interrupt")[0] == 200
                interrupted_at = time.monotonic()
                # shown while the batch still renders (the extension notices the host's Interrupt within 0.2 s)
                while time.monotonic() < interrupted_at + 1.5:
                    stopping_text = http(default_host, "GET", "/sdapi/v1/progress")[1].get("textinfo")
                    if stopping_text and "stopping" in stopping_text.lower():
                        break
                    time.sleep(0.1)
        time.sleep(0.25)
    worker.join(timeout=300)
    assert interrupted_at is not None, \
        f"never saw the render stage in /sdapi/v1/progress: {seen[-10:]}; the job gave {outcome.get('response')}"
    status, body = outcome["response"]
    assert status == 409 and body["error"] == "Cancelled", (status, body)
    # growing: the bar never goes back while the job runs, and moves during the render
    fractions = [p for p, _, _ in seen if p]
    assert fractions == sorted(fractions), seen
    steps = [s for _, s in render_updates]
    assert steps == sorted(steps) and steps[-1] > steps[0], render_updates
    assert re.search(r"\d+\s*/\s*\d+", " ".join(t or "" for _, _, t in seen)), "no frames done/total shown"
    # one batch: the time between two render updates seen before the interrupt, with slack for polling
    first_batch = [t for t, s in render_updates if s == steps[-1]][0] - [t for t, s in render_updates][0]
    assert outcome["done_at"] - interrupted_at <= max(2 * first_batch, 5) + 5, \
        (outcome["done_at"] - interrupted_at, first_batch)
    assert stopping_text and "stopping" in stopping_text.lower(), stopping_text
    assert previews, "no live preview in /sdapi/v1/progress while frames were rendered"
    preview = Image.open(io.BytesIO(base64.b64decode(previews[0].split(",")[-1])))
    assert preview.size == (256, 256) and np.asarray(preview.convert("RGB")).std() > 1, preview
    # the host keeps serving; nothing partial left behind
    assert http(default_host, "GET", "/sdapi/v1/progress")[0] == 200
    assert http(default_host, "GET", "/sadtalker/v1/status")[0] == 200
    files_after = {p for p in out_dir.rglob("*") if p.is_file()} if out_dir.exists() else set()
    assert files_after - files_before == set(), f"left in the output folder: {files_after - files_before}"
    assert _sadtalker_lines(real_host.log())[log_before:], "no SadTalker console line for the interrupted job"


# --- the host's own features ---------------------------------------------------------------------------------

def test_host_upscalers_and_face_restorers_still_work(default_host):
    from PIL import Image

    status, upscalers = http(default_host, "GET", "/sdapi/v1/upscalers")
    assert status == 200
    names = {u["name"] for u in upscalers}
    assert {"Lanczos", "Nearest"} <= names, names
    status, restorers = http(default_host, "GET", "/sdapi/v1/face-restorers")
    assert status == 200
    assert {r["name"] for r in restorers} >= {"CodeFormer", "GFPGAN"}, restorers
    buffer = io.BytesIO()
    Image.open(MEDIA / "happy.png").convert("RGB").resize((64, 48)).save(buffer, format="PNG")
    status, body = http(default_host, "POST", "/sdapi/v1/extra-single-image", {
        "image": base64.b64encode(buffer.getvalue()).decode(), "upscaler_1": "Lanczos",
        "upscaling_resize": 2, "resize_mode": 0}, timeout=300)
    assert status == 200, body
    upscaled = Image.open(io.BytesIO(base64.b64decode(body["image"].split(",")[-1])))
    assert upscaled.size == (128, 96)


@pytest.mark.parametrize("route", ["/sdapi/v1/options", "/sdapi/v1/samplers"])
def test_host_api_still_answers(default_host, route):
    assert http(default_host, "GET", route)[0] == 200
