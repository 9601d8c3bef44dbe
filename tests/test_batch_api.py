"""REST batches on the standalone server: submit a JSONL body, poll from another client (the first one is
gone), read the results and fetch the video; bad lines fail alone; unknown ids and empty bodies are 4xx."""

from __future__ import annotations

import base64
import json
import time

import pytest

import golden

MEDIA = golden.MEDIA


@pytest.fixture
def server_app(sadtalker_256, checkpoints_256, tmp_path):
    from sadtalker_core.frontends.server import create_app

    return create_app(checkpoint_dir=checkpoints_256, result_dir=tmp_path / "results",
                      talker_factory=lambda *_: sadtalker_256)


def _b64(path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _poll(client, batch_id: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/sadtalker/v1/batch/{batch_id}").json()
        if body["state"] == "done":
            return body
        time.sleep(0.5)
    raise AssertionError(f"batch {batch_id} not done: {body}")


@pytest.mark.slow
def test_submit_disconnect_poll_results(server_app, speech_clip, tmp_path):
    from fastapi.testclient import TestClient

    good = {"key": "hello", "image": _b64(MEDIA / "happy.png"), "audio": _b64(speech_clip(0.04)),
            "face_detector": "dlib", "seed": 9}
    lines = [json.dumps(good), json.dumps({**good, "key": "broken", "image": "not base64 !!"}),
             json.dumps({**good, "key": "badopt", "pose_style": 99}), "{oops"]
    with TestClient(server_app) as submitter:
        response = submitter.post("/sadtalker/v1/batch", content="\n".join(lines).encode())
        assert response.status_code == 200, response.text
        submitted = response.json()
    assert submitted["jobs"] == ["hello", "broken", "badopt", "line4"]

    with TestClient(server_app) as poller:  # a new connection: the first client went away
        body = _poll(poller, submitted["id"])
        assert body["counts"] == {"ok": 1, "failed": 3, "skipped": 0, "pending": 0} and body["error"] is None
        results = {r["key"]: r for r in body["results"]}
        assert list(results) == ["hello", "broken", "badopt", "line4"]
        assert results["hello"]["status"] == "ok" and results["hello"]["seed"] == 9
        assert "image" in results["broken"]["error"] and "pose_style" in results["badopt"]["error"]
        assert "not JSON" in results["line4"]["error"] and results["line4"]["video"] is None
        video = poller.get(results["hello"]["video"])
        assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
        output = tmp_path / "results" / "batches" / submitted["id"]
        assert video.content == (output / "hello.mp4").read_bytes()
        on_disk = [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines()]
        assert [r["status"] for r in on_disk] == ["ok", "failed", "failed", "failed"]
        assert not (output / ".inputs").exists()  # uploads are removed once the batch is done
        assert poller.get(f"/sadtalker/v1/batch/{submitted['id']}/video/broken").status_code == 404


def test_bad_batch_requests(tmp_path):
    from fastapi.testclient import TestClient

    from sadtalker_core.frontends.server import create_app

    with TestClient(create_app(checkpoint_dir=tmp_path, result_dir=tmp_path / "results")) as client:
        response = client.post("/sadtalker/v1/batch", content=b"\n\n")
        assert response.status_code == 400 and "no jobs" in response.json()["detail"], response.text
        response = client.post("/sadtalker/v1/batch", content=b"\xff\xfe")
        assert response.status_code == 400 and "UTF-8" in response.json()["detail"], response.text
        response = client.get("/sadtalker/v1/batch/nope")
        assert response.status_code == 404 and "nope" in response.json()["detail"]
