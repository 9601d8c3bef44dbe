"""REST routes /sadtalker/v1/* inside the host double: validation errors name the field, --api-auth, the
shared queue_lock, host progress / interrupt for API jobs, and a real generation through ``webuiapi``."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from pathlib import Path

import pytest

from host_double.fixtures import ServerThread, make_host, tab_module, use_stub_talker  # noqa: F401
from test_webui_extension import stub_checkpoints

pytestmark = pytest.mark.host
MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"


def _png_b64(size=(16, 16)) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, (120, 90, 60)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _wav_b64(seconds=0.1, rate=16000) -> str:
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x01" * int(seconds * rate))
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def stub_api(make_host, tmp_path):
    from fastapi.testclient import TestClient

    host = make_host(args="--api", config={"sadtalker_checkpoint_dir": stub_checkpoints(tmp_path / "ckpt"),
                                          "sadtalker_api_max_upload_mb": 1})
    app = host.start()
    talkers = use_stub_talker()
    return TestClient(app), talkers


@pytest.mark.parametrize("change, status, field", [
    ({"image": None}, 422, "image"),
    ({"image": "not base64 !!"}, 422, "image"),
    ({"image": base64.b64encode(b"plain text, no picture").decode()}, 422, "image"),
    ({"image": "data:image/png,rawdata"}, 422, "image"),
    ({"audio": None}, 422, "audio"),
    ({"audio": "A" * (2 << 20)}, 413, "audio"),
    ({"pose_style": 99}, 422, "pose_style"),
    ({"preprocess": "zoom"}, 422, "preprocess"),
    ({"no_such_option": 1}, 422, "no_such_option"),
    ({"options": {"still": "maybe"}}, 422, "still"),
    ({"options": [1, 2]}, 422, "options"),
])
def test_bad_requests_get_4xx_naming_the_field(stub_api, change, status, field):
    client, talkers = stub_api
    payload = {"image": _png_b64(), "audio": _wav_b64()}
    payload.update(change)
    payload = {k: v for k, v in payload.items() if v is not None}
    response = client.post("/sadtalker/v1/generate", json=payload)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field and field in body["detail"]
    assert not talkers or not talkers[0].calls  # nothing ran


def test_the_originals_field_names_are_accepted(stub_api):
    client, talkers = stub_api
    response = client.post("/sadtalker/v1/generate", json={"source_image": _png_b64((20, 24)),
                                                           "driven_audio": _wav_b64(), "still": True})
    assert response.status_code == 200, response.text
    call = talkers[0].calls[0]
    assert call["source_image"].size == (20, 24) and Path(call["driven_audio"]).suffix == ".wav"
    both = client.post("/sadtalker/v1/generate", json={"image": _png_b64(), "source_image": _png_b64(),
                                                       "audio": _wav_b64()})
    assert both.status_code == 422 and both.json()["field"] == "source_image"
    assert "send only one" in both.json()["detail"]
    assert len(talkers[0].calls) == 1


def test_body_must_be_a_json_object(stub_api):
    client, _ = stub_api
    assert client.post("/sadtalker/v1/generate", content=b"{not json").status_code == 400
    assert client.post("/sadtalker/v1/generate", json=[1, 2]).status_code == 422


def test_generate_status_options_with_stub(stub_api):
    client, talkers = stub_api
    response = client.post("/sadtalker/v1/generate", json={
        "image": "data:image/png;base64," + _png_b64(), "audio": _wav_b64(), "pose_style": 3,
        "options": {"still": True}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert base64.b64decode(body["video"]) == Path(body["path"]).read_bytes()
    assert not body["video"].startswith("data:")
    assert body["options"]["pose_style"] == 3 and body["options"]["still"] is True
    call = talkers[0].calls[0]
    assert call["source_image"].size == (16, 16) and Path(call["driven_audio"]).suffix == ".wav"
    assert json.loads(Path(body["sidecar"]).read_text())["options"]["pose_style"] == 3
    status = client.get("/sadtalker/v1/status").json()
    assert status["checkpoints"]["found"]["256"] and status["version"] and status["device"]
    from sadtalker_core.options import OPTIONS

    names = [o["name"] for o in client.get("/sadtalker/v1/options").json()["options"]]
    assert names == [o.name for o in OPTIONS]


def test_api_auth_is_enforced_on_our_routes(make_host, tmp_path):
    from fastapi.testclient import TestClient

    host = make_host(args="--api --api-auth alice:secret,bob:pw2")
    client = TestClient(host.start())
    for path in ("/sadtalker/v1/status", "/sadtalker/v1/options", "/sdapi/v1/progress"):
        assert client.get(path).status_code == 401
        assert client.get(path, auth=("alice", "wrong")).status_code == 401
        assert client.get(path, auth=("bob", "pw2")).status_code == 200
    assert client.post("/sadtalker/v1/generate", json={}).status_code == 401


def test_no_auth_without_api_auth(make_host):
    from fastapi.testclient import TestClient

    client = TestClient(make_host().start())
    assert client.get("/sadtalker/v1/status").status_code == 200


def test_api_jobs_wait_for_the_queue_lock_and_report_through_host_state(make_host, tmp_path):
    import requests

    host = make_host(args="--api", config={"sadtalker_checkpoint_dir": stub_checkpoints(tmp_path / "ckpt")})
    app = host.start()
    talkers = use_stub_talker(batches=6)
    from modules import call_queue, shared

    seen = []
    with ServerThread(app) as server:
        base = f"http://127.0.0.1:{server.port}"

        def on_batch(i):
            seen.append(requests.get(f"{base}/sdapi/v1/progress", timeout=10).json())
            if i == 1:
                requests.post(f"{base}/sdapi/v1/interrupt", timeout=10)

        original = tab_module().runner().talker_factory

        def factory(*a):
            talker = original(*a)
            talker.on_batch = on_batch
            return talker

        tab_module().runner().talker_factory = factory
        result = {}
        call_queue.queue_lock.acquire()  # a UI job holds the GPU
        worker = threading.Thread(target=lambda: result.update(r=requests.post(
            f"{base}/sadtalker/v1/generate", json={"image": _png_b64(), "audio": _wav_b64()}, timeout=60)))
        worker.start()
        time.sleep(1.0)
        assert talkers == [] or talkers[0].calls == []  # still waiting for the lock
        call_queue.queue_lock.release()
        worker.join(60)
    response = result["r"]
    assert response.status_code == 409 and response.json()["error"] == "Cancelled"
    assert len(seen) == 2  # interrupted after the second batch
    assert seen[0]["state"]["job_count"] == 1 and seen[0]["textinfo"] == "SadTalker render 0/6 frames"
    assert seen[0]["progress"] < 0.2 < seen[1]["progress"] < 0.4  # rendering is most of the job
    assert shared.state.begun[-1][0] == "sadtalker-api" and shared.state.job_count == 0


def _short_audio(tmp_path: Path, seconds: float) -> Path:
    import soundfile

    data, rate = soundfile.read(MEDIA / "RD_Radio31_000.wav")
    path = tmp_path / "short.wav"
    soundfile.write(path, data[: int(seconds * rate)], rate)
    return path


@pytest.mark.slow
def test_webuiapi_generates_a_clip_with_synthetic_weights(make_host, tmp_path, checkpoints_256):
    import imageio_ffmpeg
    import webuiapi

    host = make_host(args="--api --api-auth user:pass",
                     config={"sadtalker_checkpoint_dir": str(checkpoints_256),
                             "sadtalker_outdir": str(tmp_path / "videos")})
    app = host.start()
    payload = {"image": "data:image/png;base64," + base64.b64encode((MEDIA / "happy.png").read_bytes()).decode(),
               "audio": base64.b64encode(_short_audio(tmp_path, 0.12).read_bytes()).decode(),
               "face_detector": "dlib", "size": 256, "batch_size": 4, "seed": 3}
    with ServerThread(app) as server:
        api = webuiapi.WebUIApi(host="127.0.0.1", port=server.port)
        with pytest.raises(RuntimeError, match="401"):
            api.custom_post("sadtalker/v1/generate", payload)
        api.set_auth("user", "pass")
        status = api.custom_get("sadtalker/v1/status")
        assert status["checkpoints"]["found"]["256"] == str(checkpoints_256)
        result = api.custom_post("sadtalker/v1/generate", payload)
    video = base64.b64decode(result.json["video"])
    assert video[4:8] == b"ftyp"
    assert result.info["num_frames"] == 3 and result.info["size"] == 256
    saved = Path(result.json["path"])
    assert saved.read_bytes() == video and saved.is_relative_to(tmp_path / "videos")
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(saved))
    assert frames == 3
    sidecar = json.loads(Path(result.json["sidecar"]).read_text())
    assert sidecar["options"]["seed"] == 3 and sidecar["options"]["face_detector"] == "dlib"


def _counting_validations(monkeypatch) -> list:
    """Counts the full validations of options (a config passed on as it is is not validated again)."""
    from sadtalker_core.options import GenerationConfig

    seen = []
    check = GenerationConfig._check_together

    def counted(self):
        seen.append(self)
        return check(self)

    monkeypatch.setattr(GenerationConfig, "_check_together", counted)
    return seen


def test_a_request_is_validated_once_and_its_config_reaches_the_pipeline(stub_api, monkeypatch):
    from sadtalker_core.options import GenerationConfig

    client, talkers = stub_api
    validations = _counting_validations(monkeypatch)
    response = client.post("/sadtalker/v1/generate", json={"image": _png_b64(), "audio": _wav_b64(),
                                                            "pose_style": 4, "seed": -1})
    assert response.status_code == 200, response.text
    assert len(validations) == 1
    handed_on = talkers[0].calls[0]["config"]
    assert isinstance(handed_on, GenerationConfig) and handed_on is validations[0] and handed_on.pose_style == 4
    # a random run reports the seed it used, in the response and in the parameters file
    seed = response.json()["options"]["seed"]
    assert isinstance(seed, int) and seed >= 0
    assert json.loads(Path(response.json()["sidecar"]).read_text())["options"]["seed"] == seed


def test_an_option_error_names_the_json_field(stub_api):
    client, talkers = stub_api
    response = client.post("/sadtalker/v1/generate", json={"image": _png_b64(), "audio": _wav_b64(),
                                                            "face_box": [50, 50, 10, 10]})
    assert response.status_code == 422
    assert response.json()["field"] == "face_box"
    assert response.json()["detail"] == "face_box: got [50.0, 50.0, 10.0, 10.0], expected x0 < x1 and y0 < y1."
    assert not talkers or not talkers[0].calls


def test_an_option_error_found_by_the_pipeline_names_the_json_field(stub_api, monkeypatch):
    """Some values can only be judged against the inputs (a face box outside the picture): the pipeline's error
    is relabelled like the edge's."""
    from host_double.fixtures import StubTalker
    from sadtalker_core.errors import OptionError

    def box_outside(self, *args, **kwargs):
        problem = "(1.0, 2.0, 900.0, 900.0) lies outside the 32x32 image. Give the box in this image's pixels."
        raise OptionError(f"face_box {problem}", option="face_box", problem=problem)

    monkeypatch.setattr(StubTalker, "generate", box_outside)
    client, _ = stub_api
    response = client.post("/sadtalker/v1/generate", json={"image": _png_b64(), "audio": _wav_b64(),
                                                            "face_box": [1, 2, 900, 900]})
    assert response.status_code == 422 and response.json()["field"] == "face_box"
    assert response.json()["detail"].startswith("face_box: (1.0, 2.0, 900.0, 900.0) lies outside the 32x32 image")
