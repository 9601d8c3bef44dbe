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

from .. import __version__
from ..errors import Cancelled, CheckpointNotFoundError
from ..options import GenerationConfig
from ..progress import ProgressTracker, StageTimings
from . import host_requirements

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
    pin_file: Path | None = None  # the host's requirements file: packages it pins are reported, never changed
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
        self._title: str | None = None
        self.tracker: ProgressTracker | None = None
        self._lock = threading.Lock()  # frames come from the job's thread, reads from request threads
        self._frame: Any = None
        self._frames_previewed = 0

    @contextlib.contextmanager
    def scope(self, title: str, timings: StageTimings | None = None
              ) -> Iterator[tuple[Callable[[str, int, int], None], Any]]:
        """One job: yields (progress callback, cancel event); ``timings`` weigh the stages (see ``progress``)."""
        self._cancel.clear()
        self._title, self.tracker = title, ProgressTracker(timings)
        with self._lock:
            self._frame, self._frames_previewed = None, 0
        try:
            yield self.progress, self._cancel
        finally:
            self._title, self.tracker = None, None
            with self._lock:
                self._frame = None  # a finished job has no preview: the video replaces it

    def progress(self, stage: str, done: int, total: int) -> None:
        if self.tracker is not None:
            self.tracker.update(stage, done, total)

    def preview(self, frame: Any) -> None:
        """Keeps ``frame`` (uint8 RGB, H x W x 3) as the newest picture of the job in flight."""
        if self.tracker is None:
            return
        with self._lock:
            self._frame = frame
            self._frames_previewed += 1

    def latest_frame(self) -> Any:
        """The newest previewed frame of the job in flight, or ``None``."""
        with self._lock:
            return self._frame

    def interrupt(self) -> None:
        self._cancel.set()
        if self.tracker is not None:
            self.tracker.stopping = True

    def snapshot(self) -> dict:
        tracker = self.tracker
        if tracker is None:
            return {"active": False}
        eta = tracker.eta()
        return {"active": True, "job": self._title, "stage": tracker.stage, "done": tracker.done,
                "total": tracker.total, "progress": round(tracker.fraction(), 4),
                "eta_seconds": None if eta is None else round(eta, 1), "text": tracker.text(),
                "started": tracker.started, "frames_previewed": self._frames_previewed}


def _default_talker_factory(checkpoint_dir: Path, device: Any, dtype: Any):
    from ..pipeline import SadTalker

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
    from ..runtime.checkpoint_files import locate_checkpoints  # deferred: keeps importing the extension cheap
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
                 after_unload: Callable[[], None] | None = None, report: Callable[[str], None] | None = None):
        self._config = config
        self.talker_factory = talker_factory
        self._after_unload = after_unload
        self._report = report  # one line per job start and end (the WebUI's console)
        self._talkers: dict[tuple, Any] = {}
        # (talker key, size, preprocess) whose networks the cached talker loaded: a job with these settings
        # needs no lookup of the files (the pipeline located them when it loaded them)
        self._loaded: set[tuple[tuple, int, str]] = set()
        self._guard = threading.Lock()  # protects the talker cache only; jobs are serialized by the caller
        self.timings = StageTimings()  # learned from each finished job: the progress bar's stage weights

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
        pins = host_requirements.host_pins(config.pin_file)
        missing = host_requirements.problems(pins)
        device, precision = resolved_device_and_precision(config)
        return {
            "version": __version__,
            "device": device,
            "precision": precision,
            "checkpoints": {"found": found, "searched": [str(p) for p in config.checkpoint_dirs],
                            "problem": problem},
            "face_detectors": self.face_detector_status(),
            "requirements": {"ok": not missing, "problems": missing,
                             "optional": host_requirements.problems(pins, optional=True)},
            "output_dir": str(config.output_dir),
            "models_loaded": bool(self._talkers),
        }

    def setup_notes(self) -> list[str]:
        """What a user should know before the first job: unmet requirements, face detectors that cannot run."""
        notes = host_requirements.problems(host_requirements.host_pins(self.config().pin_file))
        detectors = self.face_detector_status()
        for backend, problem in detectors.items():
            if problem is not None:
                notes.append(f"Face detector {backend}: {problem}")
        if all(problem is None for problem in detectors.values()):
            notes.append("Face detectors fan and dlib are both ready.")
        return notes

    def face_detector_status(self) -> dict[str, str | None]:
        """{backend: None when usable offline now, else what it lacks}, looked up in the checkpoint folders."""
        from ..face.landmarks import detector_status

        folders = [Path(p).expanduser() for p in self.config().checkpoint_dirs]
        weights_dir = next((p for p in folders if p.is_dir()), None)
        return detector_status(weights_dir)

    @staticmethod
    def _talker_key(config: RunnerConfig, checkpoint_dir: Path) -> tuple:
        return str(checkpoint_dir), str(config.device), str(config.dtype)

    def _talker(self, config: RunnerConfig, checkpoint_dir: Path):
        key = self._talker_key(config, checkpoint_dir)
        with self._guard:
            talker = self._talkers.get(key)
            if talker is None:
                for other in self._talkers.values():  # one set of models in memory at a time
                    other.unload()
                self._talkers.clear()
                self._loaded.clear()
                talker = self._talkers[key] = self.talker_factory(checkpoint_dir, config.device, config.dtype)
            return talker

    def unload(self) -> None:
        with self._guard:
            for talker in self._talkers.values():
                talker.unload()
            self._talkers.clear()
            self._loaded.clear()
        if self._after_unload is not None:
            self._after_unload()

    def run(self, source_image: Any, driven_audio: Any, options: GenerationConfig | dict | None = None, *,
            progress: Progress | None = None, cancel: Any = None,
            output_path: str | Path | None = None, preview: Callable[[Any], None] | None = None,
            source_video: Any = None) -> JobResult:
        """Generates, writes the sidecar JSON; unloads afterwards unless kept loaded.

        ``options`` is the ``GenerationConfig`` a front end validated at its edge (used as it is), or a
        mapping of options (validated here, once).
        The video goes to ``output_path`` when given (batches name their outputs), else to a dated folder
        under the configured output folder. ``preview(frame)`` gets the newest finished frame after every
        rendered batch (see ``SadTalker.generate``). ``source_video`` (a path) dubs that video instead of
        animating ``source_image`` (then None)."""
        generation = GenerationConfig.from_options(options)
        started = time.perf_counter()
        source = _describe_input(source_video if source_video is not None else source_image)
        self._say(f"job started: {source} + {_describe_input(driven_audio) or 'no audio'}, "
                  f"{generation.preprocess} {generation.size}")
        try:
            result, checkpoint_dir, config = self._generate(source_image, driven_audio, generation, progress,
                                                              cancel, output_path, preview, source_video)
        except Cancelled:
            self._say(f"interrupted after {time.perf_counter() - started:.1f} s; nothing was saved")
            raise
        except Exception as error:
            self._say(f"failed after {time.perf_counter() - started:.1f} s: {type(error).__name__}: "
                      f"{str(error).splitlines()[0] if str(error) else ''}")
            raise
        self.timings.learn(result.info)
        video_path = Path(result.video_path)
        sidecar = write_sidecar(result, source_image, driven_audio, checkpoint_dir, source_video=source_video,
                                extra=config.extra_sidecar)
        self._say(f"done in {time.perf_counter() - started:.1f} s: {video_path}")
        return JobResult(video_path=video_path, sidecar_path=sidecar, options=dict(result.options),
                         info=dict(result.info), crop_preview=getattr(result, "crop_preview", None))


    def _checkpoint_dir(self, config: RunnerConfig, generation: GenerationConfig) -> Path:
        """The folder of the job's checkpoints: the one whose networks are loaded for these settings, else the
        first candidate holding the files (looked up once, without downloading: a front end never fetches
        gigabytes behind the user's back; the error says which files, where, how to get them)."""
        candidates = [Path(p).expanduser() for p in config.checkpoint_dirs]
        for folder in candidates:
            if (self._talker_key(config, folder), generation.size, str(generation.preprocess)) in self._loaded:
                return folder
        return find_checkpoint_dir(candidates, size=generation.size, preprocess=str(generation.preprocess))

    def _generate(self, source_image, driven_audio, generation: GenerationConfig, progress, cancel, output_path,
                  preview, source_video=None):
        from ..media.provenance import C2paCredentials

        config = self.config()
        extra: dict[str, Any] = {}
        if preview is not None:
            extra["preview"] = preview
        signing = C2paCredentials.resolve(config.c2pa_cert, config.c2pa_key)
        if signing is not None:
            extra["signing"] = signing
        checkpoint_dir = self._checkpoint_dir(config, generation)
        result_dir = None
        if output_path is None:
            result_dir = Path(config.output_dir) / _dt.date.today().isoformat()
            result_dir.mkdir(parents=True, exist_ok=True)
        talker = self._talker(config, checkpoint_dir)
        try:
            # passed only when given: image jobs call generate exactly as before
            dub = {"source_video": source_video} if source_video is not None else {}
            result = talker.generate(source_image, driven_audio, result_dir=result_dir, output_path=output_path,
                                     progress=progress, cancel=cancel, **dub, **extra, config=generation)
            with self._guard:
                self._loaded.add((self._talker_key(config, checkpoint_dir), generation.size,
                                  str(generation.preprocess)))
        finally:
            if not config.keep_loaded:
                self.unload()
        return result, checkpoint_dir, config

    def _say(self, line: str) -> None:
        if self._report is not None:
            self._report(f"SadTalker: {line}")


def write_sidecar(result, source_image: Any, driven_audio: Any, checkpoint_dir: Any, *, source_video: Any = None,
                  extra: dict | None = None) -> Path:
    """The JSON next to a video (same name, .json): tool version, inputs, options with the seed, info. Every
    front end writes it, so any run can be repeated."""
    video_path = Path(result.video_path)
    sidecar = video_path.with_suffix(".json")
    record = {
        "sadtalker_core": __version__,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "video": video_path.name,
        "source_image": _describe_input(source_image),
        **({"source_video": _describe_input(source_video)} if source_video is not None else {}),
        "driven_audio": _describe_input(driven_audio),
        "checkpoint_dir": str(checkpoint_dir),
        "options": dict(result.options),
        "info": dict(result.info),
        **(extra or {}),
    }
    sidecar.write_text(json.dumps(record, indent=2, default=str), encoding="utf-8")
    return sidecar


def resolved_device_and_precision(config: RunnerConfig) -> tuple[str, str]:
    """The device and render precision a job will use under ``config`` (the pipeline's own choice rules)."""
    from ..runtime.models import pick_device, pick_render_dtype

    device = pick_device(config.device)
    return str(device), str(pick_render_dtype(device, config.dtype)).replace("torch.", "")


def _describe_input(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return Path(value).name
    shape = getattr(value, "shape", None) or getattr(value, "size", None)
    return f"{type(value).__name__} {tuple(shape) if shape is not None else ''}".strip()
