"""``python -m sadtalker_core doctor [--checkpoint_dir D] [--device DEV]``: what this machine will use (torch,
device, precision, ffmpeg, checkpoints, landmark weights, optional extras), each problem with its fix.

Exit code 1 when something a default run needs is broken (no torch, no ffmpeg, no 256 checkpoints), else 0.
Checks only sizes of the checkpoint files (instant); ``python -m sadtalker_core verify`` hashes them.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

OK, WARN, FAIL = "ok", "warn", "FAIL"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # OK | WARN | FAIL
    detail: str
    fix: str | None = None


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_torch(device: str | None = None) -> list[Check]:
    try:
        import torch
    except ImportError:
        return [Check("torch", FAIL, "torch is not installed",
                      "pip install torch (see https://pytorch.org for the build matching your GPU)")]
    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    checks = [Check("torch", OK, f"torch {torch.__version__}; devices: {', '.join(devices)}",
                    None if len(devices) > 1 else "CPU only: a GPU build of torch renders ~50x faster")]
    from ..errors import OptionError
    from ..runtime.models import pick_device, pick_render_dtype

    try:
        chosen = pick_device(device)
    except OptionError as error:
        return checks + [Check("device", FAIL, str(error), "pick a device from the list above (--device)")]
    dtype = str(pick_render_dtype(chosen)).replace("torch.", "")
    checks.append(Check("device", OK, f"jobs run on {chosen}; renderer precision {dtype}, other networks float32"))
    return checks


def check_ffmpeg() -> Check:
    import subprocess

    from ..errors import FFmpegError
    from ..media import ffmpeg_io

    try:
        exe = ffmpeg_io.ffmpeg_exe()
        done = subprocess.run([exe, "-version"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              errors="replace", timeout=30, check=False)
    except (FFmpegError, OSError, subprocess.TimeoutExpired) as error:
        return Check("ffmpeg", FAIL, str(error), "pip install --force-reinstall imageio-ffmpeg")
    first = (done.stdout or "").splitlines()[:1]
    if done.returncode != 0 or not first:
        return Check("ffmpeg", FAIL, f"{exe} does not run", "pip install --force-reinstall imageio-ffmpeg")
    return Check("ffmpeg", OK, f"{first[0]} ({exe})")


def check_checkpoints(folder: Path) -> list[Check]:
    from ..errors import CheckpointNotFoundError
    from ..runtime.checkpoint_files import OLD_SET, locate_checkpoints
    from ..runtime.download import OFFICIAL_FILES

    fix = f"python -m sadtalker_core download --dir {folder}"
    if not folder.is_dir():
        return [Check("checkpoints", FAIL, f"the checkpoint folder {folder.resolve()} does not exist",
                      f"{fix} (or pass --checkpoint_dir / set SADTALKER_CHECKPOINTS to where the files are)")]
    checks = []
    for size, required in ((256, True), (512, False)):
        try:
            found = locate_checkpoints(folder, size=size)
        except CheckpointNotFoundError as error:
            missing = str(error).splitlines()[0]
            checks.append(Check(f"checkpoints {size}", FAIL if required else WARN,
                                f"{folder.resolve()}: {missing}", f"{fix} --size {size}"))
            continue
        names = sorted({p.name for p in found.files})
        checks.append(Check(f"checkpoints {size}", OK, f"{folder.resolve()}: {', '.join(names)}"
                            + (f" ({found.note})" if found.note else "")))
    damaged = []
    for name, entry in OFFICIAL_FILES.items():
        path = folder / name
        if entry.size is not None and path.is_file() and path.stat().st_size != entry.size:
            kind = "truncated" if path.stat().st_size < entry.size else "corrupt"
            damaged.append(f"{name} {kind} ({path.stat().st_size} of {entry.size} bytes)")
    if damaged:
        checks.append(Check("checkpoint files", FAIL, "; ".join(damaged),
                            f"delete those files and run {fix}; `python -m sadtalker_core verify --dir {folder}` "
                            "checks the hashes"))
    partials = sorted(p.name for p in folder.glob("*.partial"))
    if partials:
        checks.append(Check("checkpoint downloads", WARN, f"cut downloads kept: {', '.join(partials)}",
                            f"{fix} resumes them"))
    old = [n for n in OLD_SET if (folder / n).is_file()]
    if old and len(old) < len(OLD_SET):
        checks.append(Check("old-version files", WARN, f"only {', '.join(old)} of the old set",
                            f"{fix} --old-version (only needed for --old_version)"))
    return checks


def check_landmarks(folder: Path) -> list[Check]:
    from ..errors import CheckpointNotFoundError
    from ..face import landmarks

    checks = []
    if importlib.util.find_spec("face_alignment") is None:
        checks.append(Check("fan detector", WARN, "face-alignment is not installed (the default face_detector)",
                            "pip install face-alignment, or pass --face_detector dlib"))
    else:
        import torch.hub

        hub = Path(torch.hub.get_dir()) / "checkpoints"
        wanted = {"landmarks": landmarks.FAN_LANDMARKER_FILES, "detector": (landmarks.FAN_DETECTOR_FILE,)}
        missing = [names[0] for names in wanted.values()
                   if not any((d / n).is_file() for d in (folder, hub) for n in names)]
        if missing:
            urls = ", ".join(landmarks._FAN_URLS[n] for n in missing)
            checks.append(Check("fan detector", WARN, f"{', '.join(missing)} not in {folder} or {hub}: downloaded "
                                "on first use", f"offline: download {urls} into {folder}, or use --face_detector dlib"))
        else:
            checks.append(Check("fan detector", OK, "face-alignment weights present"))
    if importlib.util.find_spec("dlib") is None:
        checks.append(Check("dlib detector", WARN, "dlib is not installed (the offline face_detector)",
                            "pip install dlib-bin face-recognition-models"))
    else:
        try:
            path = landmarks._dlib_file(landmarks.DLIB_LANDMARKER_FILE, folder)
            checks.append(Check("dlib detector", OK, f"dlib {_version('dlib-bin') or _version('dlib') or ''} "
                                f"with {path}".replace("  ", " ")))
        except CheckpointNotFoundError as error:
            checks.append(Check("dlib detector", WARN, str(error), "pip install face-recognition-models"))
    return checks


def check_extras() -> list[Check]:
    extras = (("ray", "ray", "batch --ray (spread jobs over a cluster)", "pip install ray"),
              ("spandrel", "spandrel", "enhancer / background_enhancer", "pip install spandrel einops"),
              ("fastapi", "fastapi", "the REST server (python -m sadtalker_core server)",
               "pip install fastapi uvicorn"),
              ("gradio", "gradio", "the web UI (python -m sadtalker_core app)", "pip install gradio"))
    checks = []
    for module, distribution, use, fix in extras:
        if importlib.util.find_spec(module) is None:
            checks.append(Check(f"extra {module}", WARN, f"not installed; needed for {use}", fix))
        else:
            checks.append(Check(f"extra {module}", OK, f"{module} {_version(distribution) or ''} ({use})".strip()))
    return checks


def run_checks(checkpoint_dir: str | os.PathLike | None = None, device: str | None = None) -> list[Check]:
    from .. import __version__
    from ..runtime.checkpoint_files import default_checkpoint_dir

    folder = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir()
    checks = [Check("sadtalker_core", OK, f"{__version__} on python {sys.version.split()[0]}")]
    checks += check_torch(device)
    checks.append(check_ffmpeg())
    checks += check_checkpoints(folder)
    checks += check_landmarks(folder)
    checks += check_extras()
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sadtalker_core doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint_dir", "--checkpoint-dir", "--dir", dest="checkpoint_dir", default=None,
                        help="checkpoint folder (default: $SADTALKER_CHECKPOINTS or ./checkpoints)")
    parser.add_argument("--device", default=None, help="the device a run would ask for (default: automatic)")
    args = parser.parse_args(argv)
    checks = run_checks(args.checkpoint_dir, args.device)
    width = max(len(c.name) for c in checks)
    for check in checks:
        print(f"{check.status:4} {check.name:{width}}  {check.detail}")
        if check.fix and check.status != OK:
            print(f"{'':4} {'':{width}}  fix: {check.fix}")
    failed = [c.name for c in checks if c.status == FAIL]
    print(f"{len(failed)} problem(s): {', '.join(failed)}" if failed else "everything a default run needs is here")
    return 1 if failed else 0
