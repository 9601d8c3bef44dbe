"""Pytest fixtures around the host double, and a stand-in for the pipeline used where a test checks the
extension's wiring (progress, interrupt, sidecar, error display) rather than video content."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from . import Host


@dataclass
class StubResult:
    video_path: Path
    options: dict
    info: dict = field(default_factory=dict)
    crop_preview: np.ndarray | None = None


class StubTalker:
    """Follows the SadTalker contract: progress per stage, cancel checked between batches (raises
    Cancelled), a file written under result_dir. ``on_batch(i)`` lets a test act mid-job (e.g. Interrupt).
    With ``preview`` each batch hands over an 8x8 frame filled with the batch number (before ``on_batch``)."""

    instances: list = []

    def __init__(self, checkpoint_dir, device=None, dtype=None, batches: int = 4):
        self.checkpoint_dir, self.device, self.dtype, self.batches = checkpoint_dir, device, dtype, batches
        self.calls, self.unloaded, self.on_batch = [], 0, None
        StubTalker.instances.append(self)

    def unload(self):
        self.unloaded += 1

    def generate(self, source_image, driven_audio=None, *, result_dir=None, output_path=None, progress=None,
                 cancel=None, preview=None, source_video=None, config=None, **options):
        import random

        from sadtalker_core.errors import Cancelled
        from sadtalker_core.options import GenerationConfig

        given = config
        options = GenerationConfig.from_options(config, **options).to_dict()
        if options["seed"] is None:  # like the pipeline: a random run reports the seed it used
            options["seed"] = random.getrandbits(48)
        # "config" is the GenerationConfig a front end handed on (None when it passed loose options)
        self.calls.append({"source_image": source_image, "driven_audio": driven_audio, "options": options,
                           "result_dir": result_dir, "source_video": source_video, "config": given})
        for stage in ("load", "face", "audio", "coeffs"):
            if progress:
                progress(stage, 0, 1)
        for i in range(self.batches):
            if cancel is not None and cancel.is_set():
                raise Cancelled("generation was cancelled; nothing was saved.")
            if progress:
                progress("render", i, self.batches)
            if preview is not None:
                preview(np.full((8, 8, 3), i, np.uint8))
            if self.on_batch:
                self.on_batch(i)
        path = Path(output_path) if output_path else Path(result_dir) / f"stub_{len(self.calls)}.mp4"
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42stub-video")
        return StubResult(path, options, {"num_frames": self.batches, "fps": options["fps"],
                                          "device": str(self.device)},
                          np.zeros((8, 8, 3), np.uint8))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn serving ``app`` on 127.0.0.1:<free port> in a thread (for clients that need real HTTP)."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(timeout=10)


def tab_module():
    """The imported scripts/sadtalker_tab.py module of the running host."""
    from modules import scripts

    return scripts.loaded_modules["sadtalker_tab.py"]


def use_stub_talker(**kwargs) -> list:
    """Makes the extension's runner build StubTalkers; returns the list they are appended to."""
    StubTalker.instances = []
    tab_module().runner().talker_factory = lambda d, device, dtype: StubTalker(d, device, dtype, **kwargs)
    return StubTalker.instances


@pytest.fixture
def make_host(tmp_path):
    hosts = []

    def make(**kwargs) -> Host:
        host = Host(tmp_path / f"host{len(hosts)}", **kwargs)
        hosts.append(host)
        return host

    yield make
    for host in reversed(hosts):
        host.close()
    import sadtalker_core

    sadtalker_core.__dict__.pop("_webui_runner", None)
