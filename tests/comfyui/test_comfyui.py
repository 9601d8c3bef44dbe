"""The ComfyUI nodes in a real ComfyUI (v0.3.64 from ../shared/hosts, started by tools/comfy_host.py).

One ComfyUI for the module, with this checkout linked into custom_nodes/, synthetic checkpoints (written by the
current torch) in its models/sadtalker, a real portrait and 0.16 s of real speech in its input folder. Everything
goes through ComfyUI's HTTP API: /object_info, POST /prompt, /history, POST /interrupt.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import comfy_host  # noqa: E402

from sadtalker_core import audio, video  # noqa: E402
from sadtalker_core.options import OPTIONS  # noqa: E402

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

EXAMPLE = REPO / "examples" / "comfyui_sadtalker.json"
SPEECH_SECONDS = 0.16
CHECKPOINTS = ("SadTalker_V0.0.2_256.safetensors", "mapping_00229-model.pth.tar", "mapping_00109-model.pth.tar")
NODES = ("SadTalkerLoader", "SadTalkerAnimate", "SadTalkerFaceCrop")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, url: str):
        self.url = url
        self.client_id = "sadtalker-tests"

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as reply:
            return json.load(reply)

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as reply:
                text = reply.read()
                return reply.status, (json.loads(text) if text else {})
        except urllib.error.HTTPError as error:
            return error.code, json.load(error)

    def queue(self, prompt: dict) -> str:
        code, reply = self.post("/prompt", {"prompt": prompt, "client_id": self.client_id})
        assert code == 200 and "prompt_id" in reply, (code, reply)
        return reply["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entry = self.get(f"/history/{prompt_id}").get(prompt_id)
            if entry is not None and entry["status"].get("completed") is not None:
                return entry
            time.sleep(0.5)
        raise AssertionError(f"prompt {prompt_id} not finished after {timeout} s")


@pytest.fixture(scope="module")
def comfy(tmp_path_factory, checkpoint_factory, media, speech_clip):
    if not (comfy_host.hosts_dir() / "hosts.json").is_file():
        pytest.fail(f"no ComfyUI host sources in {comfy_host.hosts_dir()} (set SADTALKER_HOSTS_DIR)")
    started = time.monotonic()
    folder = comfy_host.prepare()
    host = comfy_host.Host(tmp_path_factory.mktemp("comfyui_run"), _free_port(), folder)
    checkpoint_factory.folder(host.data / "models" / "sadtalker", names=CHECKPOINTS)
    (host.data / "input").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(media / "art_7.png", host.data / "input" / "sadtalker_portrait.png")
    shutil.copyfile(speech_clip(SPEECH_SECONDS), host.data / "input" / "sadtalker_speech.wav")
    # an image with no face in it: soft colour gradients
    ramp = np.linspace(0, 255, 256, dtype=np.uint8)
    Image.fromarray(np.dstack([np.tile(ramp, (256, 1)), np.tile(ramp[:, None], (1, 256)),
                               np.full((256, 256), 128, np.uint8)])).save(host.data / "input" / "no_face.png")
    start_seconds = host.start()
    print(f"\nComfyUI: prepare {time.monotonic() - started - start_seconds:.1f} s, start {start_seconds:.1f} s")
    try:
        yield host, Client(host.url)
    finally:
        pid = host.process.pid if host.process else None
        host.stop()
    if pid is not None:
        with pytest.raises(ProcessLookupError):
            import os

            os.killpg(pid, 0)


def _example() -> dict:
    return json.loads(EXAMPLE.read_text())


def _named(host, part: str) -> set[Path]:
    return {p for p in (host.data / "output").rglob("*") if part in p.name}


def _sadtalker_temp_files(host) -> list[Path]:
    temp = host.data / "temp"
    return sorted(temp.glob("sadtalker_*")) if temp.is_dir() else []


def test_nodes_are_listed_with_the_option_table(comfy):
    host, client = comfy
    log = host.log_path.read_text(errors="replace")
    assert "IMPORT FAILED" not in log, host.log_tail()
    info = client.get("/object_info")
    for name in NODES:
        assert name in info, f"{name} not in /object_info; log:\n{host.log_tail()}"
    animate = info["SadTalkerAnimate"]
    assert animate["output"] == ["IMAGE", "AUDIO", "FLOAT"]
    required = animate["input"]["required"]
    assert required["sadtalker"][0] == "SADTALKER_MODEL" and required["image"][0] == "IMAGE"
    assert animate["input"]["optional"]["audio"][0] == "AUDIO"
    for option in OPTIONS:
        if option.name == "size":  # chosen on the Loader: the networks loaded depend on it
            assert [int(c) for c in info["SadTalkerLoader"]["input"]["required"]["size"][0]] == list(option.choices)
            continue
        kind, config = required[option.name]
        if option.choices is not None:
            # an optional choice gets "none" first for "not set"
            assert kind == ["none"] * option.optional + [str(c) for c in option.choices], option.name
        elif option.kind == "bool":
            assert kind == "BOOLEAN"
        elif option.kind in ("int", "float"):
            assert kind == option.kind.upper(), option.name
            assert config["max"] == min(option.maximum, 2**64 - 1), option.name
            # an optional number gets one value below its range for "not set"
            assert (config["min"] < option.minimum) == option.optional, option.name
        else:
            assert kind == "STRING", option.name
        if option.default is not None:
            assert str(config["default"]) == str(option.default), option.name
    checkpoints = info["SadTalkerLoader"]["input"]["required"]["checkpoints"][0]
    assert "." in checkpoints
    crop = info["SadTalkerFaceCrop"]
    assert crop["output"] == ["IMAGE", "IMAGE"] and crop["input"]["required"]["image"][0] == "IMAGE"


class Listener:
    """ComfyUI's websocket for one client id: JSON events and binary previews, collected in a thread."""

    def __init__(self, host, client_id: str):
        import threading

        import websocket  # websocket-client

        self.events: list[dict] = []
        self.previews: list[bytes] = []
        self.socket = websocket.create_connection(f"ws://127.0.0.1:{host.port}/ws?clientId={client_id}", timeout=600)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        import websocket

        try:
            while True:
                message = self.socket.recv()
                if not message:  # closed
                    break
                if isinstance(message, bytes):
                    self.previews.append(message)
                else:
                    self.events.append(json.loads(message))
        except (websocket.WebSocketException, OSError):
            pass

    def close(self) -> None:
        self.socket.close()
        self.thread.join(10)


def test_example_workflow_renders_frames_audio_and_video(comfy, speech_clip):
    host, client = comfy
    listener = Listener(host, client.client_id)
    started = time.monotonic()
    try:
        entry = client.wait(client.queue(_example()))
    finally:
        seconds = time.monotonic() - started
        listener.close()
    errors = [m for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "success", json.dumps(errors)[:2000] + host.log_tail()
    outputs = entry["outputs"]
    sample_rate, samples = 16000, round(SPEECH_SECONDS * 16000)
    expected = audio.num_video_frames(samples, 25, sample_rate)
    assert expected == 4

    frames = outputs["5"]["images"]  # SaveImage of the Animate frames
    assert len(frames) == expected
    sizes = {Image.open(host.data / "output" / f["subfolder"] / f["filename"]).size for f in frames}
    assert len(sizes) == 1
    (width, height), = sizes
    assert min(width, height) >= 200  # the 256 render, aspect restored to the crop box
    assert width % 2 == 0 and height % 2 == 0  # as the mp4 has them, and ComfyUI's video encoders need

    saved, = outputs["4"]["images"]  # the mp4 the node wrote
    assert saved["filename"].endswith(".mp4") and saved["type"] == "output"
    own = video.video_info(host.data / "output" / saved["subfolder"] / saved["filename"])
    assert (own.width, own.height, own.n_frames, own.has_audio) == (width, height, expected, True)

    combined, = outputs["7"]["images"]  # CreateVideo(frames, fps, audio) -> SaveVideo: ComfyUI's own nodes
    info = video.video_info(host.data / "output" / combined["subfolder"] / combined["filename"])
    assert (info.width, info.height, info.n_frames, info.has_audio) == (width, height, expected, True)
    assert info.fps == pytest.approx(25)

    preview, = outputs["9"]["images"]  # Face Crop preview of the source with the crop region drawn
    drawn = Image.open(host.data / preview["type"] / preview["subfolder"] / preview["filename"])
    assert drawn.size == Image.open(host.data / "input" / "sadtalker_portrait.png").size
    # progress of the Animate node on ComfyUI's bar, up to its end, and the frames as previews while rendering
    steps = [e["data"]["value"] for e in listener.events if e["type"] == "progress" and e["data"]["node"] == "4"]
    assert steps and steps == sorted(steps) and steps[-1] == 100, steps
    jpegs = [m[8:] for m in listener.previews if m[:8] == (1).to_bytes(4, "big") + (1).to_bytes(4, "big")]
    assert jpegs, f"no preview image among {len(listener.previews)} binary messages"
    # ComfyUI scales previews to fit 512 px (the node asks for at most 512): same aspect as the frames
    preview_w, preview_h = Image.open(io.BytesIO(jpegs[-1])).size
    assert max(preview_w, preview_h) == 512 and preview_w / preview_h == pytest.approx(width / height, rel=0.02)
    assert _sadtalker_temp_files(host) == []
    print(f"\nexample workflow: {expected} frames {width}x{height} in {seconds:.1f} s")


def test_interrupt_stops_a_running_prompt(comfy):
    host, client = comfy
    prompt = _example()
    animate = prompt["4"]["inputs"]
    # 200 frames (many minutes on a CPU) in batches of one: the interrupt is seen after one frame at most
    animate.update(idle_seconds=8.0, seed=11, batch_size=1, filename_prefix="sadtalker/interrupted")
    for node in ("5", "6", "7", "8", "9"):
        del prompt[node]
    before = _named(host, "interrupted")
    listener = Listener(host, client.client_id)
    try:
        prompt_id = client.queue(prompt)
        deadline = time.monotonic() + 300
        # wait until the render loop runs: the first finished frame comes as a preview
        while not listener.previews:
            assert time.monotonic() < deadline, "the render never started"
            time.sleep(0.2)
        interrupted_at = time.monotonic()
        assert client.post("/interrupt", {})[0] == 200
        entry = client.wait(prompt_id, timeout=120)
    finally:
        listener.close()
        client.post("/interrupt", {})  # a failed check must not leave the 200 frames running for the next test
    stopped_after = time.monotonic() - interrupted_at
    kinds = [m[0] for m in entry["status"]["messages"]]
    assert "execution_interrupted" in kinds, entry["status"]
    assert "execution_success" not in kinds
    assert stopped_after < 90, stopped_after  # one frame at most, not the 200 frames
    assert _named(host, "interrupted") == before  # no video, and no partial file, left
    assert _sadtalker_temp_files(host) == []
    assert client.get("/system_stats")["system"]["comfyui_version"]


def test_image_without_a_face_shows_the_node_error_and_comfyui_keeps_serving(comfy):
    host, client = comfy
    prompt = _example()
    prompt["1"]["inputs"]["image"] = "no_face.png"
    for node in ("5", "6", "7", "8", "9"):
        del prompt[node]
    entry = client.wait(client.queue(prompt), timeout=300)
    assert entry["status"]["status_str"] == "error"
    error, = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert error["node_id"] == "4" and error["node_type"] == "SadTalkerAnimate"
    assert "No face found" in error["exception_message"], error["exception_message"]
    assert _sadtalker_temp_files(host) == []
    # still serving: a prompt after the failure runs
    crop = {"1": _example()["1"], "8": _example()["8"], "9": _example()["9"]}
    del crop["8"]["inputs"]["sadtalker"]
    entry = client.wait(client.queue(crop), timeout=300)
    assert entry["status"]["status_str"] == "success", entry["status"]
