"""Standalone front ends on the current gradio / fastapi: the Gradio app (same Blocks as the WebUI tab) and
the HTTP server (same routes, one job at a time)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from host_double.fixtures import ServerThread, StubTalker, free_port
from test_api import _png_b64, _wav_b64
from test_webui_extension import stub_checkpoints

REPO = Path(__file__).resolve().parents[1]


def _stub_factory(instances, **kwargs):
    def factory(checkpoint_dir, device, dtype):
        talker = StubTalker(checkpoint_dir, device, dtype, **kwargs)
        instances.append(talker)
        return talker

    return factory


def _events(parts, image="face.png", audio="a.wav", **overrides) -> list:
    """Every event the app's Generate function yields (it streams the live preview, then the results)."""
    args = []
    for component in parts.inputs:
        name = getattr(component, "elem_id", "")[len("sadtalker_"):]
        args.append({"source_image": image, "audio": audio}.get(name, overrides.get(name, component.value)))
    return list(parts.generate(*args))


def _call(parts, image="face.png", audio="a.wav", **overrides):
    """The final (video, crop, folder, info) of a Generate click; the live preview is hidden by then."""
    *_, last = _events(parts, image, audio, **overrides)
    live, *outputs = last
    assert live == {"__type__": "update", "value": None, "visible": False}
    return tuple(outputs)


def test_app_blocks_generate_and_interrupt(tmp_path):
    from sadtalker_core.frontends.app import build_app

    talkers = []
    parts = build_app(stub_checkpoints(tmp_path / "ckpt"), tmp_path / "out", talker_factory=_stub_factory(talkers))
    ids = [getattr(b, "elem_id", None) for b in parts.blocks.blocks.values()]
    from sadtalker_core.options import OPTIONS
    from sadtalker_core.frontends.ui import REFERENCE_OPTIONS

    # every option of the pipeline has a control (the reference ones through the reference-video box)
    assert {f"sadtalker_{o.name}" for o in OPTIONS if o.name not in REFERENCE_OPTIONS} <= set(ids)
    assert {"sadtalker_ref_video", "sadtalker_ref_use", "sadtalker_crop_preview", "sadtalker_output_dir"} <= set(ids)
    video, crop, folder, info = _call(parts, pose_style=5, seed=11, ref_video="ref.mp4", ref_use="blink")
    options = talkers[0].calls[0]["options"]
    assert "<td>seed</td><td>11</td>" in info  # the result table names the seed, so a run can be repeated
    assert options["pose_style"] == 5 and options["ref_video"] == "ref.mp4" and options["ref_info"] == "blink"
    assert Path(video).is_file() and crop.shape == (8, 8, 3) and "Saved" in info
    assert json.loads(Path(video).with_suffix(".json").read_text())["host"] == "standalone"

    talkers[0].batches = 5
    batches_run = []

    def interrupt_at(i):
        batches_run.append(i)
        if i == 1:
            _interrupt(parts)

    talkers[0].on_batch = interrupt_at
    video, crop, folder, info = _call(parts)
    assert video is None and "Interrupted" in info and batches_run == [0, 1]


def _interrupt(parts):
    """Runs the function wired to the Interrupt button (found by its trigger, gradio-version independent)."""
    fns = parts.blocks.fns.values() if isinstance(parts.blocks.fns, dict) else parts.blocks.fns
    for fn in fns:
        targets = [t[0] if isinstance(t, tuple) else t for t in getattr(fn, "targets", [])]
        if parts.interrupt_button._id in targets:
            fn.fn()
            return
    raise AssertionError("no listener on the Interrupt button")


def test_app_shows_missing_checkpoints(tmp_path):
    from sadtalker_core.frontends.app import build_app

    parts = build_app(tmp_path / "empty", tmp_path / "out")
    assert "SadTalker_V0.0.2_256.safetensors" in parts.checkpoint_notice.value
    video, crop, folder, info = _call(parts)
    assert video is None and str(tmp_path / "empty") in info


def test_checkpoint_notice_follows_the_files_on_disk(tmp_path):
    """Files downloaded while the UI is up clear the notice at the next Generate click or size/preprocess
    change; choosing a size whose file is missing shows it."""
    from sadtalker_core.frontends.app import build_app

    parts = build_app(tmp_path / "ckpt", tmp_path / "out")
    assert "SadTalker_V0.0.2_256.safetensors" in parts.checkpoint_notice.value
    fns = parts.blocks.fns.values() if isinstance(parts.blocks.fns, dict) else parts.blocks.fns
    refreshers = [fn for fn in fns if any(getattr(o, "_id", o) == parts.checkpoint_notice._id
                                          for o in fn.outputs)]
    triggers = {t[0] if isinstance(t, tuple) else t for fn in refreshers for t in fn.targets}
    assert parts.generate_button._id in triggers and len(triggers) == 3  # Generate, size, preprocess
    stub_checkpoints(tmp_path / "ckpt")
    refresh = refreshers[0].fn
    assert "sadtalker-error" not in refresh("256", "crop")  # what stays: the setup notes (detector weights)
    assert "SadTalker_V0.0.2_512.safetensors" in refresh("512", "crop")


def test_app_serves_its_page(tmp_path):
    import requests

    from sadtalker_core.frontends.app import build_app

    parts = build_app(tmp_path / "empty", tmp_path / "out")
    parts.blocks.queue()
    port = free_port()
    parts.blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=30)
        assert page.status_code == 200 and "gradio" in page.text.lower()
    finally:
        parts.blocks.close()


def test_server_routes_and_one_job_at_a_time(tmp_path):
    import requests

    from sadtalker_core.frontends.server import create_app

    talkers, active, peak = [], [0], [0]

    def on_batch(i):
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        active[0] -= 1

    def factory(*a):
        talker = _stub_factory(talkers)(*a)
        talker.on_batch = on_batch
        return talker

    app = create_app(stub_checkpoints(tmp_path / "ckpt"), tmp_path / "out", talker_factory=factory)
    payload = {"image": _png_b64(), "audio": _wav_b64()}
    results = []
    with ServerThread(app) as server:
        url = f"http://127.0.0.1:{server.port}/sadtalker/v1"
        threads = [threading.Thread(target=lambda: results.append(requests.post(f"{url}/generate", json=payload,
                                                                                timeout=60)))
                   for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert requests.get(f"{url}/status", timeout=10).json()["checkpoints"]["found"]["256"]
        assert requests.get(f"{url}/options", timeout=10).status_code == 200
        assert requests.post(f"{url}/generate", json={"audio": _wav_b64()}, timeout=10).json()["field"] == "image"
    assert [r.status_code for r in results] == [200, 200]
    assert peak[0] == 1 and len(talkers[0].calls) == 2
    videos = {base64.b64decode(r.json()["video"]) for r in results}
    assert videos == {Path(r.json()["path"]).read_bytes() for r in results}


def test_server_command_line_starts_uvicorn(tmp_path):
    import requests

    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "sadtalker_core.frontends.server", "--host", "127.0.0.1", "--port",
                                str(port), "--checkpoint-dir", str(tmp_path), "--api-auth", "u:p"], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/sadtalker/v1/status", auth=("u", "p"), timeout=60)
                break
            except requests.ConnectionError:
                time.sleep(0.3)
        else:
            pytest.fail("server did not start")
        assert response.status_code == 200 and response.json()["checkpoints"]["found"]["256"] is None
        assert "SadTalker_V0.0.2_256.safetensors" in response.json()["checkpoints"]["problem"]
        assert requests.get(f"http://127.0.0.1:{port}/sadtalker/v1/status", timeout=60).status_code == 401
    finally:
        process.terminate()
        process.wait(10)


def test_app_streams_previews_during_a_job_and_none_after(tmp_path):
    from sadtalker_core.frontends.app import build_app

    talkers = []
    parts = build_app(stub_checkpoints(tmp_path / "ckpt"), tmp_path / "out", talker_factory=_stub_factory(talkers))
    assert parts.live_preview is not None and parts.live_preview.elem_id == "sadtalker_live_preview"
    assert "consent" in parts.consent_note.value
    _call(parts)  # builds the talker
    talkers[0].on_batch = lambda i: time.sleep(0.6)  # longer than the app's refresh interval
    events = _events(parts)
    *during, last = events
    # one preview per rendered batch, newest frame (its fill is the batch number), the rest left unchanged
    shown = [int(event[0]["value"][0, 0, 0]) for event in during]
    assert shown == [0, 1, 2, 3]
    for event in during:
        assert event[0]["visible"] is True and event[0]["value"].shape == (8, 8, 3)
        assert all(update == {"__type__": "update"} for update in event[1:])
    live, video, crop, folder, info = last
    assert live == {"__type__": "update", "value": None, "visible": False} and Path(video).is_file()
    assert parts.blocks is not None
    # after the job: nothing to preview, and a job that renders no new frame streams no preview event
    talkers[0].batches = 0
    assert len(_events(parts)) == 1


def test_server_reports_stage_eta_and_preview_during_a_job(tmp_path):
    import io

    import requests
    from PIL import Image

    from sadtalker_core.frontends.server import create_app

    seen = []

    def factory(*a):
        talker = _stub_factory([])(*a)

        def on_batch(i):
            time.sleep(0.1)
            status = requests.get(f"{url}/status", timeout=10).json()
            image = requests.get(f"{url}/preview", timeout=10)
            seen.append((i, status, image.status_code, image.headers.get("content-type"), image.content))

        talker.on_batch = on_batch
        return talker

    app = create_app(stub_checkpoints(tmp_path / "ckpt"), tmp_path / "out", talker_factory=factory)
    with ServerThread(app) as server:
        url = f"http://127.0.0.1:{server.port}/sadtalker/v1"
        before = requests.get(f"{url}/preview", timeout=10)
        assert before.status_code == 404 and before.json()["error"] == "NoPreview"
        response = requests.post(f"{url}/generate", json={"image": _png_b64(), "audio": _wav_b64()}, timeout=60)
        assert response.status_code == 200
        after = requests.get(f"{url}/status", timeout=10).json()
        assert requests.get(f"{url}/preview", timeout=10).status_code == 404
    assert [s[0] for s in seen] == [0, 1, 2, 3]
    for i, status, code, kind, body in seen:
        job = status["job"]
        assert status["busy"] is True and job["stage"] == "render" and (job["done"], job["total"]) == (i, 4)
        # an estimate that shrinks as the batches come in
        assert job["eta_seconds"] > 0 and job["text"] == f"render {i}/4 frames"
        assert code == 200 and kind == "image/png"
        frame = np.asarray(Image.open(io.BytesIO(body)))
        assert frame.shape == (8, 8, 3) and (frame == i).all()
    assert seen[3][1]["job"]["eta_seconds"] < seen[1][1]["job"]["eta_seconds"]
    assert after["busy"] is False and after["job"] == {"active": False}


def test_the_app_validates_once_names_a_bad_option_by_its_label_and_shows_a_random_seed(tmp_path, monkeypatch):
    from sadtalker_core.frontends.app import build_app
    from sadtalker_core.options import GenerationConfig
    from test_api import _counting_validations

    talkers = []
    parts = build_app(stub_checkpoints(tmp_path / "ckpt"), tmp_path / "out", talker_factory=_stub_factory(talkers))
    video, crop, folder, info = _call(parts, face_box="50 50 10 10")
    assert video is None and "Face box: got [50.0, 50.0, 10.0, 10.0], expected x0 &lt; x1 and y0 &lt; y1." in info
    assert "option &#x27;face_box&#x27;" not in info and not talkers

    validations = _counting_validations(monkeypatch)
    video, crop, folder, info = _call(parts, seed=-1, face_box="10 10 50 50")
    assert len(validations) == 1 and isinstance(talkers[0].calls[0]["config"], GenerationConfig)
    seed = json.loads(Path(video).with_suffix(".json").read_text())["options"]["seed"]
    assert isinstance(seed, int) and f"<td>seed</td><td>{seed}</td>" in info


def test_a_reference_option_error_names_the_reference_box(tmp_path):
    from sadtalker_core.errors import OptionError
    from sadtalker_core.frontends.ui import REF_USE_LABEL, shown_in_ui

    error = OptionError("option 'ref_info': got 'x'", option="ref_info", problem="got 'x', expected pose.")
    assert shown_in_ui(error) == f"{REF_USE_LABEL}: got 'x', expected pose."


def test_a_job_looks_up_checkpoints_only_while_its_networks_are_not_loaded(tmp_path, monkeypatch):
    """The runner's lookup picks the folder; once the talker ran with these settings (and located the files
    itself when it loaded them) no further job looks them up again."""
    from sadtalker_core.runtime import checkpoint_files as checkpoints
    from sadtalker_core.frontends.jobs import JobRunner, RunnerConfig

    lookups = []
    locate = checkpoints.locate_checkpoints
    monkeypatch.setattr(checkpoints, "locate_checkpoints", lambda *a, **k: lookups.append(a) or locate(*a, **k))
    talkers = []
    config = RunnerConfig(checkpoint_dirs=[tmp_path / "none", stub_checkpoints(tmp_path / "ckpt")],
                          output_dir=tmp_path / "out")
    runner = JobRunner(lambda: config, talker_factory=_stub_factory(talkers))
    runner.run("face.png", "a.wav", {"seed": 1})
    assert len(lookups) == 2  # the empty folder, then the one holding the files
    runner.run("face.png", "a.wav", {"seed": 2})
    assert len(lookups) == 2 and talkers[0].checkpoint_dir == tmp_path / "ckpt"
    from sadtalker_core.errors import CheckpointNotFoundError

    with pytest.raises(CheckpointNotFoundError):  # other networks, whose files are not there: looked up again
        runner.run("face.png", "a.wav", {"seed": 3, "size": 512})
    assert len(lookups) == 4


def test_every_control_takes_its_default_choices_and_range_from_the_option_table(tmp_path):
    from sadtalker_core.frontends.app import build_app
    from sadtalker_core.options import OPTIONS
    from sadtalker_core.frontends.ui import NONE_CHOICE, SLIDER_RANGES

    parts = build_app(stub_checkpoints(tmp_path / "ckpt"), tmp_path / "out", talker_factory=_stub_factory([]))
    by_id = {getattr(b, "elem_id", None): b for b in parts.blocks.blocks.values()}
    kinds = {}
    for option in OPTIONS:
        control = by_id.get(f"sadtalker_{option.name}")
        if control is None:  # the reference-video box stands for the reference options
            continue
        kinds[option.name] = type(control).__name__
        if option.choices is not None:
            choices = [c[0] if isinstance(c, (tuple, list)) else c for c in control.choices]
            assert choices == [str(c) for c in option.choices] + ([NONE_CHOICE] if option.optional else [])
            assert control.value == (NONE_CHOICE if option.default is None else str(option.default))
        elif type(control).__name__ == "Slider":
            lo, hi, _ = SLIDER_RANGES.get(option.name, (option.minimum, option.maximum, None))
            assert (control.minimum, control.maximum, control.value) == (lo, hi, option.default), option.name
            assert option.minimum <= lo and hi <= option.maximum, option.name
        elif option.kind == "bool":
            assert control.value is option.default, option.name
    assert kinds["pose_style"] == kinds["crf"] == "Slider" and kinds["still"] == "Checkbox"


def test_generate_without_audio_asks_for_it_in_the_apps_words(tmp_path):
    from sadtalker_core.frontends.app import build_app

    talkers = []
    parts = build_app(stub_checkpoints(tmp_path / "ckpt"), tmp_path / "out", talker_factory=_stub_factory(talkers))
    video, crop, folder, info = _call(parts, audio=None)
    assert video is None and "Add the driving audio" in info and "Idle seconds" in info and not talkers
    video, crop, folder, info = _call(parts, audio=None, idle_seconds="2")
    assert video is not None and talkers[0].calls[0]["options"]["idle_seconds"] == 2.0
