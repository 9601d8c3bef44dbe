"""A real ComfyUI (v0.3.64, from ../shared/hosts) for the ComfyUI node tests.

    python tools/comfy_host.py prepare          # build (or reuse) the cached tree + venv, print its folder
    python tools/comfy_host.py start RUN_DIR PORT   # start with this checkout in custom_nodes/, wait until ready
    python tools/comfy_host.py stop RUN_DIR

The ComfyUI tree and its venv live outside the checkout, in ``~/.cache/sadtalker-core/hosts/comfyui-<sha>``
(``$SADTALKER_CACHE`` moves the root), where ``<sha>`` hashes everything that decides their content: the host
tarball, its pip line and constraints file, this package's ``requirements.txt`` and the pins of
``requirements/lock.txt``. A folder is built under a temporary name and renamed when complete, so an interrupted
build is never reused. The venv is only ever run as ``venv/bin/python -m ...`` (the rename would break the
shebangs of its scripts).

The host's venv gets what a ComfyUI user's venv gets: the host's own pip line (torch included, as the host pins
it), then this package's ``requirements.txt`` the way ComfyUI-Manager installs it (``pip install -r``), held to the
host's versions by its constraints file so that nothing of the host moves, and to the project's lock for the
packages it adds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST = "comfyui-v0.3.64"
PYTHON = os.environ.get("SADTALKER_HOST_PYTHON", "python3.11")
#: Environment of every start: offline, CPU only, nothing written into the trees (see ../shared/hosts/README.md).
HOST_ENV = {
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1",
    "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}


def hosts_dir() -> Path:
    return Path(os.environ.get("SADTALKER_HOSTS_DIR", REPO.parent / "shared" / "hosts")).resolve()


def cache_root() -> Path:
    return Path(os.environ.get("SADTALKER_CACHE", Path.home() / ".cache" / "sadtalker-core")) / "hosts"


def _recipe() -> dict:
    hosts = json.loads((hosts_dir() / "hosts.json").read_text())["hosts"]
    return next(h for h in hosts if h["name"] == HOST)


def _node_pins(requirements: list[str]) -> list[str]:
    """The lock's exact pins of the packages requirements.txt adds (so a cached venv is reproducible)."""
    names = {_canon(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0]) for line in requirements}
    pins = []
    for line in (REPO / "requirements" / "lock.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line and _canon(line.split("==", 1)[0]) in names:
            pins.append(line)
    return pins


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower().strip()


def _requirements() -> list[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def cache_key() -> str:
    recipe = _recipe()
    digest = hashlib.sha256()
    for part in (
        (hosts_dir() / recipe["tarball"]).read_bytes(),
        (hosts_dir() / recipe["constraints_file"]).read_bytes(),
        json.dumps(recipe["pip_install"]).encode(),
        json.dumps(_requirements()).encode(),
        json.dumps(_node_pins(_requirements())).encode(),
        PYTHON.encode(),
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def prepare(log=sys.stderr) -> Path:
    """The cached host folder (``comfyui/`` tree + ``venv/``), built first when missing."""
    final = cache_root() / f"{HOST}-{cache_key()}"
    if (final / "venv" / "bin" / "python").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        started = time.monotonic()
        _build(work, log)
        print(f"comfy_host: built {final.name} in {time.monotonic() - started:.0f} s", file=log)
        try:
            work.rename(final)
        except OSError:  # another process finished the same build first: use theirs
            if not (final / "venv" / "bin" / "python").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _build(work: Path, log) -> None:
    recipe = _recipe()
    tree = work / "comfyui"
    with tarfile.open(hosts_dir() / recipe["tarball"]) as tar:
        members = []
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if len(parts) > 1:  # strip the tarball's top folder
                member.name = str(Path(*parts[1:]))
                members.append(member)
        tar.extractall(tree, members=members, filter="data")
    subprocess.run([PYTHON, "-m", "venv", str(work / "venv")], check=True, stdout=log, stderr=log)
    python = str(work / "venv" / "bin" / "python")
    for line in recipe["pip_install"]:
        args = line.replace("{HOSTS_DIR}", str(hosts_dir())).split()
        assert args[:3] == ["python", "-m", "pip"], line
        subprocess.run([python, *args[1:], "-q"], cwd=tree, check=True, stdout=log, stderr=log)
    # What ComfyUI-Manager does with a node's requirements.txt, held to the host's pins and the project's lock.
    pins = work / "node-pins.txt"
    pins.write_text("\n".join(_node_pins(_requirements())) + "\n")
    subprocess.run([python, "-m", "pip", "install", "-q", "-r", str(REPO / "requirements.txt"),
                    "-c", str(hosts_dir() / recipe["constraints_file"]), "-c", str(pins)],
                   check=True, stdout=log, stderr=log)
    pins.unlink()
    subprocess.run([python, "-m", "pip", "check"], check=True, stdout=log, stderr=log)


class Host:
    """One running ComfyUI with this checkout in ``custom_nodes/``; its data under ``run_dir/data``."""

    def __init__(self, run_dir: Path, port: int, folder: Path | None = None):
        self.folder = folder or prepare()
        self.run_dir = Path(run_dir).resolve()
        self.port = port
        self.data = self.run_dir / "data"
        self.log_path = self.run_dir / "comfyui.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def python(self) -> Path:
        return self.folder / "venv" / "bin" / "python"

    def start(self, timeout: float = 300) -> float:
        """Starts ComfyUI and waits for ``/system_stats``; returns the seconds it took."""
        for sub in ("custom_nodes", "user", "input", "output", "models/sadtalker"):
            (self.data / sub).mkdir(parents=True, exist_ok=True)
        link = self.data / "custom_nodes" / REPO.name
        if not link.is_symlink():
            link.symlink_to(REPO, target_is_directory=True)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONHOME", "PYTHONPATH")}
        env.update(HOST_ENV, VIRTUAL_ENV=str(self.folder / "venv"),
                   PATH=f"{self.folder / 'venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
        args = [str(self.python), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                "--disable-auto-launch", "--base-directory", str(self.data),
                "--database-url", f"sqlite:///{self.data / 'user' / 'comfyui.db'}"]
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            # Own session: stop() ends the whole process group (ffmpeg children included).
            self.process = subprocess.Popen(args, cwd=self.folder / "comfyui", env=env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (self.run_dir / "pid").write_text(str(self.process.pid))
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited early (rc {self.process.returncode}):\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=5) as reply:
                    if reply.status == 200:
                        return time.monotonic() - started
            except OSError:
                pass
            if time.monotonic() - started > timeout:
                self.stop()
                raise RuntimeError(f"ComfyUI not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is None:
            return
        stop_group(self.process.pid)
        self.process.wait()
        self.process = None

    def log_tail(self, lines: int = 80) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def stop_group(pid: int, grace: float = 30) -> None:
    """SIGTERM to the process group ``pid`` leads, SIGKILL after ``grace`` seconds."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def main(argv: list[str]) -> int:
    if argv[:1] == ["prepare"]:
        print(prepare())
    elif argv[:1] == ["start"] and len(argv) == 3:
        host = Host(Path(argv[1]), int(argv[2]))
        print(f"ComfyUI up on {host.url} in {host.start():.1f} s (log {host.log_path})")
    elif argv[:1] == ["stop"] and len(argv) == 2:
        stop_group(int((Path(argv[1]) / "pid").read_text()))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
