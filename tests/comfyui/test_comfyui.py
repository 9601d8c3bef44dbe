"""The ComfyUI nodes in a real ComfyUI (v0.3.64 from ../shared/hosts, started by tools/comfy_host.py).

One ComfyUI for the module, with this checkout linked into custom_nodes/, synthetic checkpoints (written by the
current torch) in its models/sadtalker, a real portrait, 0.16 s of real speech and a 3-frame cut of a real
talking-head video in its input folder. Everything goes through ComfyUI's HTTP API: /object_info, POST /prompt,
/history, POST /interrupt.
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

from sadtalker_core.motion import audio  # noqa: E402
from sadtalker_core.media import video  # noqa: E402
from sadtalker_core.options import (  # noqa: E402
    DUB_ONLY_OPTIONS, DUB_OPTIONS, IGNORED_WITH_VIDEO, NOT_WITH_VIDEO, OPTIONS_BY_NAME, PORTRAIT_OPTIONS)

pytestmark = [pytest.mark.comfyui, pytest.mark.slow]

EXAMPLE = REPO / "examples" / "comfyui_sadtalker.json"
SPEECH_SECONDS = 0.16
CHECKPOINTS = ("SadTalker_V0.0.2_256.safetensors", "mapping_00229-model.pth.tar", "mapping_00109-model.pth.tar")
NODES = ("SadTalkerLoader", "SadTalkerAnimate", "SadTalkerDubVideo", "SadTalkerFaceCrop")
#: the video to dub: the first frames of a real talking head, shrunk (each output frame renders a 256 face)
DUB_CLIP_FRAMES, DUB_CLIP_SIDE = 3, 192
#: the dub clip's own sound: a tone, easy to find again in a mix (Hz, amplitude)
DUB_CLIP_TONE = (440.0, 0.5)


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
    _write_dub_clips(media / "WDA_KatieHill_000.mp4", host.data / "input")
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


def _write_dub_clips(talking_head: Path, folder: Path) -> None:
    """dub_clip.mp4: the first frames of the talking head at DUB_CLIP_SIDE, with a tone as its sound;
    no_face.mp4: as many frames of soft colour gradients."""
    import cv2

    frames = [cv2.resize(f, (DUB_CLIP_SIDE, DUB_CLIP_SIDE), interpolation=cv2.INTER_AREA)
              for f in video.read_video_frames(talking_head, max_frames=DUB_CLIP_FRAMES)]
    seconds = DUB_CLIP_FRAMES / 25
    rate = 48000
    hz, amplitude = DUB_CLIP_TONE
    tone = (amplitude * np.sin(2 * np.pi * hz * np.arange(round(seconds * rate)) / rate)).astype(np.float32)
    with video.VideoWriter(folder / "dub_clip.mp4", fps=25, crf=10, audio=tone, audio_sample_rate=rate,
                           duration=seconds) as writer:
        writer.write(np.stack(frames))
    ramp = np.linspace(0, 255, DUB_CLIP_SIDE, dtype=np.uint8)
    gradient = np.dstack([np.tile(ramp, (DUB_CLIP_SIDE, 1)), np.tile(ramp[:, None], (1, DUB_CLIP_SIDE)),
                          np.full((DUB_CLIP_SIDE, DUB_CLIP_SIDE), 128, np.uint8)])
    with video.VideoWriter(folder / "no_face.mp4", fps=25, crf=10) as writer:
        writer.write(np.stack([np.roll(gradient, 8 * i, axis=1) for i in range(DUB_CLIP_FRAMES)]))


def _tone_amplitude(samples: np.ndarray, rate: int, hz: float) -> float:
    """Amplitude of the ``hz`` sine in ``samples`` (projection on sine and cosine)."""
    t = np.arange(len(samples)) / rate
    return float(2 * np.hypot(samples @ np.sin(2 * np.pi * hz * t), samples @ np.cos(2 * np.pi * hz * t))
                 / len(samples))


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
    # size is chosen on the Loader: the networks loaded depend on it
    size = OPTIONS_BY_NAME["size"]
    assert [int(c) for c in info["SadTalkerLoader"]["input"]["required"]["size"][0]] == list(size.choices)
    animate = info["SadTalkerAnimate"]
    assert animate["output"] == ["IMAGE", "AUDIO", "FLOAT"]
    required = animate["input"]["required"]
    assert required["sadtalker"][0] == "SADTALKER_MODEL" and required["image"][0] == "IMAGE"
    assert animate["input"]["optional"]["audio"][0] == "AUDIO"
    # every option that acts on a portrait, none that only dubbing reads
    portrait = [o for o in PORTRAIT_OPTIONS if o is not size]
    assert set(required) == {"sadtalker", "image", "save_video", "filename_prefix"} | {o.name for o in portrait}
    assert not set(required) & set(DUB_ONLY_OPTIONS)
    _check_widgets(required, portrait)

    dub = info["SadTalkerDubVideo"]
    assert dub["display_name"] == "SadTalker Dub Video" and dub["output"] == ["IMAGE", "AUDIO", "FLOAT"]
    required = dub["input"]["required"]
    assert [required[n][0] for n in ("sadtalker", "video", "audio")] == ["SADTALKER_MODEL", "VIDEO", "AUDIO"]
    # every option that acts on a dub, none that dubbing refuses or ignores
    dubbing = [o for o in DUB_OPTIONS if o is not size]
    assert set(required) == {"sadtalker", "video", "audio", "save_video", "filename_prefix"} | {
        o.name for o in dubbing}
    assert set(DUB_ONLY_OPTIONS) <= set(required) and not set(required) & set(NOT_WITH_VIDEO + IGNORED_WITH_VIDEO)
    _check_widgets(required, dubbing)

    checkpoints = info["SadTalkerLoader"]["input"]["required"]["checkpoints"][0]
    assert "." in checkpoints
    crop = info["SadTalkerFaceCrop"]
    assert crop["output"] == ["IMAGE", "IMAGE"] and crop["input"]["required"]["image"][0] == "IMAGE"


def _check_widgets(required: dict, options) -> None:
    """Each option's widget has the option's type, range and default."""
    for option in options:
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


def _dub_prompt(client, clip: str, **inputs) -> dict:
    """Load Video + Load Audio + Loader -> SadTalker Dub Video, its widgets at the defaults /object_info gives."""
    required = client.get("/object_info/SadTalkerDubVideo")["SadTalkerDubVideo"]["input"]["required"]
    defaults = {name: spec[1]["default"] for name, spec in required.items() if len(spec) > 1 and "default" in spec[1]}
    prompt = {node: _example()[node] for node in ("2", "3")}  # Load Audio (the speech), Loader
    prompt["10"] = {"class_type": "LoadVideo", "inputs": {"file": clip}}
    prompt["11"] = {"class_type": "SadTalkerDubVideo", "inputs": {
        **defaults, "sadtalker": ["3", 0], "video": ["10", 0], "audio": ["2", 0], "face_detector": "dlib",
        "seed": 7, "batch_size": 4, **inputs}}
    return prompt


def test_dub_video_follows_the_audio_at_the_video_size(comfy, speech_clip):
    host, client = comfy
    prompt = _dub_prompt(client, "dub_clip.mp4", video_audio_volume=0.5, filename_prefix="sadtalker/dubbed")
    # its outputs into ComfyUI's own nodes: Create Video -> Save Video, Save Audio
    prompt["12"] = {"class_type": "CreateVideo",
                    "inputs": {"images": ["11", 0], "fps": ["11", 2], "audio": ["11", 1]}}
    prompt["13"] = {"class_type": "SaveVideo", "inputs": {
        "video": ["12", 0], "filename_prefix": "sadtalker/dub_combined", "format": "auto", "codec": "auto"}}
    prompt["14"] = {"class_type": "SaveAudio",
                    "inputs": {"audio": ["11", 1], "filename_prefix": "sadtalker/dub_sound"}}
    listener = Listener(host, client.client_id)
    started = time.monotonic()
    try:
        entry = client.wait(client.queue(prompt))
    finally:
        seconds = time.monotonic() - started
        listener.close()
    errors = [m for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert entry["status"]["status_str"] == "success", json.dumps(errors)[:2000] + host.log_tail()
    outputs = entry["outputs"]
    # the length of the speech at the video's rate: 4 frames from a 3-frame video (played forward and back)
    clip = video.video_info(host.data / "input" / "dub_clip.mp4")
    assert (clip.width, clip.height, clip.n_frames, clip.fps) == (DUB_CLIP_SIDE, DUB_CLIP_SIDE, DUB_CLIP_FRAMES, 25)
    expected = audio.num_video_frames(round(SPEECH_SECONDS * 16000), clip.fps, 16000)
    assert expected == 4 > clip.n_frames

    saved, = outputs["11"]["images"]  # the mp4 the node wrote
    assert saved["filename"].startswith("dubbed") and saved["filename"].endswith(".mp4")
    own = video.video_info(host.data / "output" / saved["subfolder"] / saved["filename"])
    assert (own.width, own.height, own.n_frames, own.has_audio) == (clip.width, clip.height, expected, True)
    combined, = outputs["13"]["images"]  # the IMAGE, AUDIO and fps outputs through ComfyUI's own video nodes
    info = video.video_info(host.data / "output" / combined["subfolder"] / combined["filename"])
    assert (info.width, info.height, info.n_frames, info.has_audio) == (clip.width, clip.height, expected, True)
    assert info.fps == pytest.approx(clip.fps)

    # AUDIO is what the mp4 plays: the speech with the video's own sound (the tone) mixed under it at 0.5
    sound, = outputs["14"]["audio"]
    mixed = audio.load_audio(host.data / "output" / sound["subfolder"] / sound["filename"], 16000)
    speech = audio.load_audio(speech_clip(SPEECH_SECONDS), 16000)
    assert len(mixed) == round(expected / clip.fps * 16000)
    hz, amplitude = DUB_CLIP_TONE
    tone_in_speech = _tone_amplitude(speech[:len(mixed)], 16000, hz)
    # 0.5 x 0.5 at most: the video's sound plays forward then backward with its frames, which shifts the
    # tone's phase at the turn; a quarter of that, beyond what the speech has at this pitch, must be there
    assert _tone_amplitude(mixed, 16000, hz) > tone_in_speech + 0.25 * amplitude * 0.5, tone_in_speech

    # progress on ComfyUI's bar up to its end, and the frames as previews, as for Animate
    steps = [e["data"]["value"] for e in listener.events if e["type"] == "progress" and e["data"]["node"] == "11"]
    assert steps and steps == sorted(steps) and steps[-1] == 100, steps
    assert any(m[:8] == (1).to_bytes(4, "big") + (1).to_bytes(4, "big") for m in listener.previews)
    assert _sadtalker_temp_files(host) == []
    print(f"\ndub: {expected} frames {clip.width}x{clip.height} in {seconds:.1f} s")


def test_dub_video_without_a_face_shows_the_node_error(comfy):
    host, client = comfy
    entry = client.wait(client.queue(_dub_prompt(client, "no_face.mp4", save_video=False)), timeout=300)
    assert entry["status"]["status_str"] == "error"
    error, = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert error["node_id"] == "11" and error["node_type"] == "SadTalkerDubVideo"
    message = error["exception_message"]
    assert f"no face was found in any of the {DUB_CLIP_FRAMES} frames of no_face.mp4" in message, message
    # a VIDEO held as frames (Get Video Components -> Create Video) is written to a file first: the same
    # frames reach the core
    prompt = _dub_prompt(client, "no_face.mp4", save_video=False)
    prompt["15"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["10", 0]}}
    prompt["16"] = {"class_type": "CreateVideo", "inputs": {"images": ["15", 0], "fps": ["15", 2]}}
    prompt["11"]["inputs"]["video"] = ["16", 0]
    entry = client.wait(client.queue(prompt), timeout=300)
    error, = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
    assert error["node_type"] == "SadTalkerDubVideo", error
    assert f"no face was found in any of the {DUB_CLIP_FRAMES} frames" in error["exception_message"], error
    assert _sadtalker_temp_files(host) == []
