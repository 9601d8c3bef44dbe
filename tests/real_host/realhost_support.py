"""Helpers of the real-host tests: one prepared host (tree, venv clone, data folder) and HTTP calls."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import webui_host  # noqa: E402

SOURCE = os.environ.get("SADTALKER_REAL_HOST", "a1111-v1.8.0")
CHECKPOINTS_256 = ("SadTalker_V0.0.2_256.safetensors", "mapping_00229-model.pth.tar", "mapping_00109-model.pth.tar")


class RealHost:
    """The prepared tree + venv clone + one data folder; ``running(args)`` gives a started host."""

    def __init__(self, work: Path, checkpoint_factory):
        self.work = work
        t0 = time.monotonic()
        self.info = webui_host.prepare(SOURCE, work / "webui")
        self.timings = {"prepare_s": time.monotonic() - t0}
        t0 = time.monotonic()
        cached = webui_host.build_venv(self.info)
        self.timings["venv_s"] = time.monotonic() - t0  # ~0 when cached
        t0 = time.monotonic()
        self.venv = webui_host.clone_venv(cached, work / "venv")
        self.timings["venv_clone_s"] = time.monotonic() - t0
        self.data_dir = work / "data"
        checkpoint_factory.folder(self.data_dir / "models" / "SadTalker", names=CHECKPOINTS_256)
        self.extension = webui_host.install_extension(self.data_dir)
        self.tree_before = webui_host.tree_files(self.info.root)
        self.host: webui_host.Host | None = None
        self.logs: list[Path] = []

    def running(self, extra_args: tuple[str, ...] = ()) -> webui_host.Host:
        if self.host is not None and tuple(self.host.extra_args) == tuple(extra_args):
            return self.host
        self.stop()
        run_dir = self.work / f"run{len(self.logs)}"
        run_dir.mkdir(parents=True)
        host = webui_host.Host(self.info, self.venv, run_dir, list(extra_args), data_dir=self.data_dir)
        self.logs.append(host.log_path)
        host.start()
        self.timings.setdefault("start_s", []).append(round(host.startup_s, 1))
        self.host = host
        return host

    def stop(self) -> None:
        if self.host is not None:
            host, self.host = self.host, None
            host.stop()

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def python(self, code: str) -> str:
        """Run ``code`` with the host venv's Python (what the host itself sees installed)."""
        out = subprocess.run([str(self.venv / "bin" / "python"), "-c", code], capture_output=True, text=True,
                             cwd=self.info.root, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout


def http(host: webui_host.Host, method: str, path: str, body=None, auth: tuple[str, str] | None = None,
         timeout: float = 60):
    """(status, parsed JSON or text) of one request to the host."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"{host.url}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"} if data else {})
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode()
