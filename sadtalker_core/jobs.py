"""One generation job as every front end runs it (Gradio tab, standalone app, REST routes).

``JobRunner`` owns what the front ends share: finding the checkpoint folder, keeping one ``SadTalker``
per (folder, device), the output folder, the sidecar JSON written next to each video, and unloading the
models after a job when asked. Locking, progress reporting and cancellation belong to the caller (the host's
queue lock and ``shared.state`` in the WebUI, a plain lock and an event standalone).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from . import __version__
from .errors import CheckpointNotFoundError
from .options import validate_options

Progress = Callable[[str, int, int], None]


@dataclass
class JobResult:
    video_path: Path
    sidecar_path: Path
    options: dict
    info: dict
    crop_preview: Any = None  # uint8 RGB array of the face crop, or None


@dataclass
class RunnerConfig:
    """What a job needs to know about its environment; front ends rebuild it from their settings per job."""

    checkpoint_dirs: Sequence[Path]  # candidates in discovery order; the first holding the files wins
    output_dir: Path
    device: Any = None  # None: the pipeline picks cuda, mps, cpu
    dtype: Any = None
    keep_loaded: bool = True
    extra_sidecar: dict = field(default_factory=dict)
    # C2PA signing certificate chain and key (PEM paths); None: $SADTALKER_C2PA_CERT / _KEY, else unsigned
    c2pa_cert: Path | None = None
    c2pa_key: Path | None = None


class JobControl:
    """Progress, live preview and cancellation of the job in flight (standalone flavour: an event, a dict
    and the newest frame).

    The WebUI extension subclasses this to report through ``shared.state`` and to honour the host's
    Interrupt. Pass ``preview=control.preview`` to the job to collect frames (``latest_frame``).
    """

    def __init__(self):
        self._cancel = threading.Event()
        self._lock = threading.Lock()  # progress comes from the job's thread, snapshots from request threads
        self._snapshot: dict = {"active": False}
        self._frame: Any = None
        self._stage_started = 0.0

    @contextlib.contextmanager
    def scope(self, title: str) -> Iterator[tuple[Callable[[str, int, int], None], Any]]:
        self._cancel.clear()
        with self._lock:
            self._snapshot = {"active": True, "job": title, "stage": None, "done": 0, "total": 0,
                              "started": time.time(), "eta_s": None, "frames_previewed": 0}
            self._frame = None
        try:
            yield self.progress, self._cancel
        finally:
            with self._lock:
                self._snapshot = {"active": False}
                self._frame = None  # a finished job has no preview: the video replaces it

    def progress(self, stage: str, done: int, total: int) -> None:
        now = time.time()
        with self._lock:
            if stage != self._snapshot.get("stage"):
                self._stage_started = now
            eta = None
            if 0 < done < total:
                # the stage's own pace: rendering dominates a job, and its batches take equal time
                eta = round((now - self._stage_started) / done * (total - done), 1)
            elif total and done >= total:
                eta = 0.0
            self._snapshot.update(stage=stage, done=done, total=total, eta_s=eta)

    def preview(self, frame: Any) -> None:
        """Keeps ``frame`` (uint8 RGB, H x W x 3) as the newest picture of the job in flight."""
        with self._lock:
            if self._snapshot.get("active"):
                self._frame = frame
                self._snapshot["frames_previewed"] += 1

    def latest_frame(self) -> Any:
        """The newest previewed frame of the job in flight, or ``None``."""
        with self._lock:
            return self._frame

    def interrupt(self) -> None:
        self._cancel.set()

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._snapshot)


def _default_talker_factory(checkpoint_dir: Path, device: Any, dtype: Any):
    from .pipeline import SadTalker

    return SadTalker(checkpoint_dir, device=device, dtype=dtype)


def find_checkpoint_dir(candidates: Iterable[Path], size: int = 256, preprocess: str = "crop") -> Path:
    """The first candidate folder that holds the checkpoints for ``size`` / ``preprocess``.

    Raises ``CheckpointNotFoundError`` whose message lists the missing files, every folder looked in and how
    to get the files.
    """
    folders = []
    for candidate in candidates:
        path = Path(candidate).expanduser()
        if path not in folders:
            folders.append(path)
    if not folders:
        raise CheckpointNotFoundError("no checkpoint folder is configured: pass a folder, set "
                                      "SADTALKER_CHECKPOINTS or the checkpoint folder setting.")
    from .checkpoints import locate_checkpoints  # deferred: keeps importing the extension cheap
    first_error: CheckpointNotFoundError | None = None
    for path in folders:
        try:
            locate_checkpoints(path, size=size, preprocess=preprocess)
            return path
        except CheckpointNotFoundError as error:
            first_error = first_error or error
    looked = "\n".join(f"  - {p}" for p in folders)
    raise CheckpointNotFoundError(f"{first_error}\nFolders looked in, in this order:\n{looked}")


class JobRunner:
    """Runs generation jobs with settings re-read from ``config()`` for every job.

    ``talker_factory(checkpoint_dir, device, dtype)`` builds the pipeline object; the default is
    ``sadtalker_core.SadTalker``.
    """

    def __init__(self, config: Callable[[], RunnerConfig],
                 talker_factory: Callable[[Path, Any, Any], Any] = _default_talker_factory,
                 after_unload: Callable[[], None] | None = None):
        self._config = config
        self.talker_factory = talker_factory
        self._after_unload = after_unload
        self._talkers: dict[tuple, Any] = {}
        self._guard = threading.Lock()  # protects the talker cache only; jobs are serialized by the caller

    def config(self) -> RunnerConfig:
        return self._config()

    def checkpoint_problem(self, size: int = 256, preprocess: str = "crop") -> str | None:
        """``None`` when the checkpoints are found, else the message saying which files, where, how to get them."""
        try:
            find_checkpoint_dir(self.config().checkpoint_dirs, size=size, preprocess=preprocess)
        except CheckpointNotFoundError as error:
            return str(error)
        return None

    def status(self) -> dict:
        config = self.config()
        found: dict[str, Any] = {}
        for size in (256, 512):
            try:
                found[str(size)] = str(find_checkpoint_dir(config.checkpoint_dirs, size=size))
            except CheckpointNotFoundError:
                found[str(size)] = None
        problem = None if found["256"] else self.checkpoint_problem()
        return {
            "version": __version__,
            "device": str(config.device) if config.device is not None else _auto_device_name(),
            "checkpoints": {"found": found, "searched": [str(p) for p in config.checkpoint_dirs],
                            "problem": problem},
            "output_dir": str(config.output_dir),
            "models_loaded": bool(self._talkers),
        }

    def _talker(self, config: RunnerConfig, checkpoint_dir: Path):
        key = (str(checkpoint_dir), str(config.device), str(config.dtype))
        with self._guard:
            talker = self._talkers.get(key)
            if talker is None:
                for other in self._talkers.values():  # one set of models in memory at a time
                    other.unload()
                self._talkers.clear()
                talker = self._talkers[key] = self.talker_factory(checkpoint_dir, config.device, config.dtype)
            return talker

    def unload(self) -> None:
        with self._guard:
            for talker in self._talkers.values():
                talker.unload()
            self._talkers.clear()
        if self._after_unload is not None:
            self._after_unload()

    def run(self, source_image: Any, driven_audio: Any, options: dict | None = None, *,
            progress: Progress | None = None, cancel: Any = None,
            preview: Callable[[Any], None] | None = None) -> JobResult:
        """Validates ``options``, generates, writes the sidecar JSON; unloads afterwards unless kept loaded.
        ``preview(frame)`` gets the newest finished frame after every rendered batch (see ``SadTalker``)."""
        from .provenance import C2paCredentials

        options = validate_options(options or {})
        config = self.config()
        extra: dict[str, Any] = {}
        if preview is not None:
            extra["preview"] = preview
        signing = C2paCredentials.resolve(config.c2pa_cert, config.c2pa_key)
        if signing is not None:
            extra["signing"] = signing
        checkpoint_dir = find_checkpoint_dir(config.checkpoint_dirs, size=options["size"],
                                             preprocess=options["preprocess"])
        result_dir = Path(config.output_dir) / _dt.date.today().isoformat()
        result_dir.mkdir(parents=True, exist_ok=True)
        talker = self._talker(config, checkpoint_dir)
        try:
            result = talker.generate(source_image, driven_audio, result_dir=result_dir, progress=progress,
                                     cancel=cancel, **extra, **options)
        finally:
            if not config.keep_loaded:
                self.unload()
        video_path = Path(result.video_path)
        sidecar = video_path.with_suffix(".json")
        record = {
            "sadtalker_core": __version__,
            "created": _dt.datetime.now().isoformat(timespec="seconds"),
            "video": video_path.name,
            "source_image": _describe_input(source_image),
            "driven_audio": _describe_input(driven_audio),
            "checkpoint_dir": str(checkpoint_dir),
            "options": dict(result.options),
            "info": dict(result.info),
            **config.extra_sidecar,
        }
        sidecar.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
        return JobResult(video_path=video_path, sidecar_path=sidecar, options=dict(result.options),
                         info=dict(result.info), crop_preview=getattr(result, "crop_preview", None))


def _describe_input(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return Path(value).name
    shape = getattr(value, "shape", None) or getattr(value, "size", None)
    return f"{type(value).__name__} {tuple(shape) if shape is not None else ''}".strip()


def _auto_device_name() -> str:
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"
