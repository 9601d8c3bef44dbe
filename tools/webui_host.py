"""Run this checkout inside a REAL AUTOMATIC1111 / Forge WebUI, as a user installs it.

    python tools/webui_host.py prepare SOURCE DEST        unpack a tarball / copy a source folder, write git stubs
    python tools/webui_host.py venv WEBUI                 build (once, cached) the host's venv; prints its path
    python tools/webui_host.py start WEBUI --run-dir DIR [--venv V] [-- extra webui args]
    python tools/webui_host.py stop --run-dir DIR
    python tools/webui_host.py run SOURCE [--work DIR] [-- pytest args]   prepare + venv + tests/real_host

SOURCE is a WebUI source folder (e.g. a git clone) or a tarball (the shared ones: ../shared/hosts/*.tar.gz;
a bare name such as ``a1111-v1.8.0`` means that shared tarball). The host kind and version are read from the
tree itself (``modules_forge/`` = Forge; CHANGELOG.md's first heading = the A1111 version), the helper
repositories and their pinned hashes from its ``modules/launch_utils.py``.

The venv recipe (facts from ../shared/hosts/README.md): Python 3.11, ``pip install -r
requirements_versions.txt`` plus a torch line. A pin file that pins setuptools below 77 (A1111 1.10, Forge)
cannot take torch >= 2.13, so those get torch 2.12.1; A1111 1.8 gets torch 2.14.1 with setuptools 80.9.0
(>= 77 for torch, and still with ``pkg_resources`` for lightning). Forge also needs joblib (soft-inpainting
imports it, no requirements file lists it) and what its builtin installers would otherwise pip-install at
every start. ``--pip-extra`` / $SADTALKER_HOST_PIP_EXTRA replaces the derived line.

Test prerequisites added to the venv (part of the cache key, documented here because a user's venv would not
have them): dlib-bin + face_recognition_models, so tests get offline, deterministic landmarks with
``face_detector="dlib"`` (FAN's weights are a download, which CI cannot make).

The venv is built once per pin hash under ~/.cache/sadtalker-core/hosts/<name>-<hash> (into a temporary
folder that is renamed when complete, so a killed build is never taken for a cache). Each start works on a
hard-linked clone of it (``cp -al``), so what the extension's install.py installs changes the clone, never
the cache, and every test session sees the host's venv as a new user has it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_HOSTS = Path(os.environ.get("SADTALKER_SHARED_HOSTS", REPO.parent / "shared" / "hosts"))
CACHE = Path(os.environ.get("SADTALKER_HOSTS_CACHE", Path.home() / ".cache" / "sadtalker-core" / "hosts"))
PYTHON = os.environ.get("SADTALKER_HOST_PYTHON", "python3.11")
EXTENSION_NAME = "sadtalker-core"

#: torch lines of the recipe (README "The hosts"): key = whether the pin file holds torch >= 2.13 back
TORCH_NEW = ["torch==2.14.1", "torchvision==0.29.1", "setuptools==80.9.0", "clip-anytorch==2.6.0"]
TORCH_OLD = ["torch==2.12.1", "torchvision==0.27.1", "clip-anytorch==2.6.0"]
FORGE_EXTRA = ["joblib==1.6.0", "fvcore==0.1.5.post20221221", "mediapipe==1.2.3", "onnxruntime==1.26.0",
               "svglib==2.3.2"]
#: see the module docstring: offline landmarks for the tests (exact pins of requirements/lock.txt)
TEST_EXTRA = ["dlib-bin==20.0.1.post1", "face_recognition_models==0.3.0"]

BASE_ARGS = ["--api", "--skip-torch-cuda-test", "--use-cpu", "all", "--no-half", "--precision", "full",
             "--no-download-sd-model"]
BASE_ENV = {
    "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1",  # torch >= 2.6 defaults weights_only=True; these hosts predate it
    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",  # no hub: fail fast instead of waiting on time-outs
    "HF_HUB_DISABLE_TELEMETRY": "1", "GRADIO_ANALYTICS_ENABLED": "False", "DO_NOT_TRACK": "1",
    "CUDA_VISIBLE_DEVICES": "", "COMMANDLINE_ARGS": "", "PYTHONUNBUFFERED": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}
#: written into the webui tree by any normal start (gitignored upstream); never counted as the extension's
HOST_OWN_WRITES = ("config_states", "__pycache__")


class HostError(RuntimeError):
    pass


@dataclass
class HostInfo:
    """What the harness needs to know about one WebUI tree, read from the tree itself."""

    root: Path
    kind: str  # "a1111" | "forge"
    version: str
    repos: dict[str, str]  # repositories/<dir> -> pinned commit
    pip_extra: list[str]
    extra_args: list[str] = field(default_factory=list)
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.version}"

    def pins(self) -> str:
        """Everything the venv is built from: its hash names the cached venv."""
        return json.dumps({"requirements_versions.txt": (self.root / "requirements_versions.txt").read_text(),
                           "pip_extra": self.pip_extra, "test_extra": TEST_EXTRA,
                           "python": python_version(PYTHON)}, sort_keys=True)

    def venv_path(self) -> Path:
        return CACHE / f"{self.name}-{hashlib.sha256(self.pins().encode()).hexdigest()[:16]}"


def python_version(python: str) -> str:
    out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise HostError(f"{python} does not run: the host venv needs Python 3.11 (set SADTALKER_HOST_PYTHON)")
    return out.stdout.strip()


def _pinned_repos(launch_utils: str) -> dict[str, str]:
    """repositories/<dir> -> hash, for every git_clone() line that is not commented out."""
    hashes = dict(re.findall(r"^\s*(\w+_hash)\s*=\s*os\.environ\.get\([^,]+,\s*['\"]([0-9a-f]{40})['\"]\)",
                             launch_utils, re.M))
    repos = {}
    for directory, variable in re.findall(
            r"^\s*git_clone\([^#\n]*repo_dir\(['\"]([^'\"]+)['\"]\)[^#\n]*?,\s*(\w+)\)\s*$", launch_utils, re.M):
        if variable in hashes:
            repos[directory] = hashes[variable]
    return repos


def detect(root: Path, kind: str | None = None, version: str | None = None,
           pip_extra: list[str] | None = None) -> HostInfo:
    root = Path(root).resolve()
    launch_utils = root / "modules" / "launch_utils.py"
    if not (root / "launch.py").is_file() or not launch_utils.is_file():
        raise HostError(f"{root} is not an A1111/Forge WebUI tree (no launch.py + modules/launch_utils.py)")
    kind = kind or ("forge" if (root / "modules_forge").is_dir() else "a1111")
    if version is None:
        if kind == "forge":
            version = "main"
            forge_version = root / "modules_forge" / "forge_version.py"
            if forge_version.is_file():
                found = re.search(r"version\s*=\s*['\"]([^'\"]+)", forge_version.read_text())
                version = found.group(1) if found else version
        else:
            changelog = root / "CHANGELOG.md"
            head = changelog.read_text().split("\n", 1)[0] if changelog.is_file() else ""
            found = re.match(r"#+\s*v?(\d+\.\d+\.\d+)", head)
            version = found.group(1) if found else "unknown"
    if pip_extra is None and os.environ.get("SADTALKER_HOST_PIP_EXTRA"):
        pip_extra = os.environ["SADTALKER_HOST_PIP_EXTRA"].split()
    if pip_extra is None:
        pins = (root / "requirements_versions.txt").read_text()
        setuptools = re.search(r"^setuptools==(\d+)", pins, re.M)
        pip_extra = list(TORCH_OLD if setuptools and int(setuptools.group(1)) < 77 else TORCH_NEW)
        if kind == "forge":
            pip_extra += FORGE_EXTRA
    info = HostInfo(root=root, kind=kind, version=version, repos=_pinned_repos(launch_utils.read_text()),
                    pip_extra=pip_extra)
    if kind == "forge":
        info.extra_args = ["--always-cpu"]  # else backend/memory_management.py asks CUDA at import and dies
        # Forge's gradio 4 serves file= paths only under --data-dir by default; with the harness's separate
        # data folder the host's own script.js and javascript/ would be 403 (a user's data dir is the root)
        info.extra_args += ["--gradio-allowed-path", str(root)]
        info.extra_env = {"PIP_RETRIES": "0"}  # its builtin installers try 3 downloads per start: fail fast
    return info


def resolve_source(source: str) -> Path:
    """A path, or the name of a shared tarball (``a1111-v1.8.0``)."""
    path = Path(source)
    if path.exists():
        return path.resolve()
    shared = SHARED_HOSTS / f"{source}.tar.gz"
    if shared.is_file():
        return shared
    raise HostError(f"host source {source!r} not found (a folder, a .tar.gz, or a name in {SHARED_HOSTS})")


def write_stubs(info: HostInfo) -> None:
    """The launcher runs ``git -C repositories/<dir> rev-parse HEAD`` and fetches (fails offline) unless it
    prints the pinned hash: an empty repository whose HEAD holds that hash is enough."""
    for directory, commit in info.repos.items():
        repo = info.root / "repositories" / directory
        if not repo.is_dir():
            raise HostError(f"{repo} missing: the launcher would clone it (needs the network)")
        if (repo / ".git").exists():
            continue  # a real clone (user's tree) or a stub already
        subprocess.run(["git", "init", "-q", "--template=", str(repo)], check=True)
        (repo / ".git" / "HEAD").write_text(commit + "\n")
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
        if head.stdout.strip() != commit:
            raise HostError(f"git stub in {repo} does not give HEAD {commit}: {head.stderr.strip()}")


def prepare(source: str | Path, dest: Path) -> HostInfo:
    """Unpack/copy SOURCE into DEST (which must not exist or be empty) and write the git stubs."""
    src = resolve_source(str(source))
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise HostError(f"{dest} exists and is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    if src.is_file():
        with tarfile.open(src) as tar:
            members = tar.getmembers()
            top = {m.name.split("/", 1)[0] for m in members}
            strip = len(top) == 1 and all(m.name == next(iter(top)) or m.name.startswith(next(iter(top)) + "/")
                                          for m in members)
            for m in members:
                if strip:
                    m.name = m.name.split("/", 1)[1] if "/" in m.name else "."
            tar.extractall(dest, members=[m for m in members if m.name != "."], filter="data")
    else:
        shutil.copytree(src, dest, dirs_exist_ok=True, symlinks=True,
                        ignore=shutil.ignore_patterns("venv", ".venv", "__pycache__"))
    info = detect(dest)
    write_stubs(info)
    return info


def _log(message: str) -> None:
    print(f"webui_host: {message}", file=sys.stderr, flush=True)


def build_venv(info: HostInfo) -> Path:
    """The cached venv for this tree's pins, built if absent. Returns its path."""
    target = info.venv_path()
    if (target / ".complete").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    t0 = time.monotonic()
    try:
        shutil.rmtree(temp)
        subprocess.run([PYTHON, "-m", "venv", str(temp)], check=True)
        cmd = [str(temp / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
               "-r", "requirements_versions.txt", *info.pip_extra, *TEST_EXTRA]
        _log(f"building {target.name}: {' '.join(cmd[1:])}")
        subprocess.run(cmd, cwd=info.root, check=True)
        check = subprocess.run([str(temp / "bin" / "python"), "-m", "pip", "check"], capture_output=True,
                               text=True)
        if check.returncode != 0:
            _log(f"pip check reports problems in {target.name}:\n{check.stdout}")
        _relocate(temp, target)
        (temp / ".complete").write_text(info.pins())
        if target.exists():  # an incomplete leftover of the same name: never used, replace it
            shutil.rmtree(target)
        temp.rename(target)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    _log(f"venv {target} built in {time.monotonic() - t0:.0f} s")
    return target


def _relocate(venv: Path, target: Path) -> None:
    """Scripts in bin/ name the venv's folder (shebangs, activate): point them at the final name."""
    old, new = str(venv).encode(), str(target).encode()
    for script in (venv / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            data = script.read_bytes()
            if old in data[:4096] or script.name.startswith("activate"):
                script.write_bytes(data.replace(old, new))


def clone_venv(venv: Path, dest: Path) -> Path:
    """A hard-linked copy: pip in it replaces files (new inodes), so the cached venv never changes."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(venv), str(dest)], check=True)
    (dest / ".complete").unlink(missing_ok=True)
    _relocate_from(dest, venv)
    return dest


def _relocate_from(dest: Path, original: Path) -> None:
    old, new = str(original).encode(), str(dest).encode()
    for script in (dest / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            data = script.read_bytes()
            if old in data[:4096] or script.name.startswith("activate"):
                script.unlink()  # break the hard link before writing
                script.write_bytes(data.replace(old, new))
                script.chmod(0o755)


def install_extension(data_dir: Path, checkout: Path = REPO) -> Path:
    """Copy the checkout's tracked + untracked-not-ignored files, as ``Install from URL`` would clone them."""
    files = subprocess.run(["git", "-C", str(checkout), "ls-files", "-co", "--exclude-standard", "-z"],
                           capture_output=True, check=True).stdout.decode().split("\0")
    dest = Path(data_dir) / "extensions" / EXTENSION_NAME
    if dest.exists():
        shutil.rmtree(dest)
    for rel in filter(None, files):
        src = checkout / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_files(root: Path) -> set[str]:
    """Relative paths of the files in a webui tree, minus what every start writes there."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in HOST_OWN_WRITES and d != ".git"]
        rel = os.path.relpath(dirpath, root)
        found.update(os.path.normpath(os.path.join(rel, f)) for f in filenames)
    return found


class Host:
    """One running WebUI: ``start()`` returns once ready, ``stop()`` leaves no process behind."""

    def __init__(self, info: HostInfo, venv: Path, run_dir: Path, extra_args: list[str] = (),
                 port: int | None = None, data_dir: Path | None = None):
        self.info, self.venv, self.run_dir = info, Path(venv), Path(run_dir)
        self.extra_args = list(extra_args)
        self.port = port or free_port()
        self.data_dir = Path(data_dir) if data_dir else self.run_dir / "data"
        self.log_path = self.run_dir / "webui.log"
        self.pid: int | None = None
        self.startup_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [str(self.venv / "bin" / "python"), "launch.py", "--data-dir", str(self.data_dir),
                "--port", str(self.port), *BASE_ARGS, *self.info.extra_args, *self.extra_args]

    def env(self) -> dict[str, str]:
        # the caller's Python settings (a test venv's PYTHONPATH...) are not the host's; PIP_* stay: they
        # carry this machine's package-index configuration that the extension's install.py needs
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env.update(BASE_ENV)
        env.update(self.info.extra_env)
        env["VIRTUAL_ENV"] = str(self.venv)
        env["PATH"] = f"{self.venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 600) -> "Host":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"=== webui_host {time.strftime('%Y-%m-%dT%H:%M:%S')}: {' '.join(self.command())}\n".encode())
            log.flush()
            # cwd = the webui root: A1111 1.8 runs installers with it and puts "." on their PYTHONPATH
            proc = subprocess.Popen(self.command(), cwd=self.info.root, env=self.env(), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.pid = proc.pid
        self._proc = proc
        (self.run_dir / "pid").write_text(str(proc.pid))
        (self.run_dir / "port").write_text(str(self.port))
        while True:
            if proc.poll() is not None:
                tail = "\n".join(self.log().splitlines()[-60:])
                self.stop()
                raise HostError(f"{self.info.name} exited early (rc={proc.returncode}); log tail:\n{tail}")
            if self._config_ok() and any(line.startswith("Startup time:") for line in self.log().splitlines()):
                break
            if time.monotonic() - t0 > timeout:
                tail = "\n".join(self.log().splitlines()[-60:])
                self.stop()
                raise HostError(f"{self.info.name} not ready after {timeout:.0f} s; log tail:\n{tail}")
            time.sleep(1)
        self.startup_s = time.monotonic() - t0
        return self

    def _config_ok(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/config", timeout=5) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, grace: float = 30) -> None:
        if self.pid is not None:
            stop_group(self.pid, grace)
            if getattr(self, "_proc", None) is not None:
                self._proc.wait(timeout=5)
            self.pid = None
        (self.run_dir / "pid").unlink(missing_ok=True)
        left = processes_under(self.info.root, self.data_dir)
        if left:
            raise HostError(f"processes left behind after stop: {left}")


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def stop_group(pgid: int, grace: float = 30) -> None:
    """SIGTERM to the whole process group, SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        if not _group_alive(pgid):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:  # reap our own child so it does not linger as a zombie
                os.waitpid(pgid, os.WNOHANG)
            except ChildProcessError:
                pass
            if not _group_alive(pgid):
                return
            time.sleep(0.2)
    if _group_alive(pgid):
        raise HostError(f"process group {pgid} did not exit")


def processes_under(*folders: Path) -> list[str]:
    """Live processes (not zombies) whose working directory or command line lies in one of ``folders``:
    what a child that left the process group would still show."""
    roots = [str(Path(f).resolve()) for f in folders]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if (entry / "stat").read_text().split(")")[-1].split()[0] == "Z":
                continue
            cwd = os.readlink(entry / "cwd")
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if any(cwd == r or cwd.startswith(r + "/") or r in cmd for r in roots):
            found.append(f"{entry.name}: {cmd[:200]}")
    return found


def run_tests(source: str, work: Path, pytest_args: list[str]) -> int:
    """prepare + venv, then tests/real_host in this checkout's .venv against that host."""
    env = dict(os.environ, SADTALKER_REAL_HOST=str(resolve_source(source)))
    if work:
        env["SADTALKER_REAL_HOST_WORK"] = str(work)
    info = detect(prepare(source, Path(tempfile.mkdtemp(prefix="webui-venvprobe-"))).root)
    try:
        t0 = time.monotonic()
        venv = build_venv(info)
        _log(f"{info.name}: venv {venv} ready in {time.monotonic() - t0:.0f} s")
    finally:
        shutil.rmtree(info.root, ignore_errors=True)
    python = REPO / ".venv" / "bin" / "python"
    return subprocess.call([str(python), "-m", "pytest", "-m", "realhost", "tests/real_host", *pytest_args],
                           cwd=REPO, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare")
    p.add_argument("source")
    p.add_argument("dest", type=Path)
    p = sub.add_parser("venv")
    p.add_argument("webui", type=Path)
    p = sub.add_parser("start")
    p.add_argument("webui", type=Path)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--venv", type=Path)
    p.add_argument("--port", type=int)
    p.add_argument("--no-extension", action="store_true")
    p.add_argument("extra", nargs=argparse.REMAINDER)
    p = sub.add_parser("stop")
    p.add_argument("--run-dir", type=Path, required=True)
    p = sub.add_parser("run")
    p.add_argument("source")
    p.add_argument("--work", type=Path)
    p.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.cmd == "prepare":
            info = prepare(args.source, args.dest)
            print(json.dumps({"root": str(info.root), "kind": info.kind, "version": info.version,
                              "repos": info.repos, "venv": str(info.venv_path())}, indent=1))
        elif args.cmd == "venv":
            print(build_venv(detect(args.webui)))
        elif args.cmd == "start":
            info = detect(args.webui)
            venv = args.venv or build_venv(info)
            run_dir = args.run_dir.resolve()
            if (run_dir / "pid").exists():
                raise HostError(f"{run_dir} holds a running host (pid file); stop it first")
            run_dir.mkdir(parents=True, exist_ok=True)
            if not args.no_extension:
                install_extension(run_dir / "data")
            extra = [a for a in args.extra if a != "--"]
            host = Host(info, venv, run_dir, extra, port=args.port).start()
            print(json.dumps({"url": host.url, "pid": host.pid, "log": str(host.log_path),
                              "startup_s": round(host.startup_s, 1)}))
        elif args.cmd == "stop":
            pid_file = args.run_dir / "pid"
            if pid_file.exists():
                stop_group(int(pid_file.read_text()))
                pid_file.unlink()
            print("stopped")
        elif args.cmd == "run":
            return run_tests(args.source, args.work, [a for a in args.pytest_args if a != "--"])
    except HostError as error:
        print(f"webui_host: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
