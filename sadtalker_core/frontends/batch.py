"""Many generation jobs in one run, the networks loaded once per worker.

``python -m sadtalker_core batch JOBS --result_dir DIR [generation flags] [--ray auto|ADDRESS]``

JOBS is a folder (portraits and audio files paired by file stem; a single portrait goes with every audio file),
a CSV file or a JSONL file (one job per row: ``source_image``, ``driven_audio``, any generation option, an
optional ``output`` file name and ``key``). Generation flags on the command line are defaults a row may
override. Relative paths in a file are relative to that file's folder.

Every job gets a line in ``DIR/results.jsonl``: ``key``, ``status`` (ok / failed / skipped), ``output``,
``seconds``, ``seed``, ``error``. A job whose output already exists and is a readable video with frames is
skipped, so rerunning the same command resumes an interrupted batch. Videos are written under a hidden
temporary name and renamed when complete (``video.VideoWriter``), so a killed run never leaves a half-written
file under an output name; leftovers of such a run are removed before the job runs again.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OptionError, SadTalkerError, one_line
from ..options import OPTIONS_BY_NAME, GenerationConfig

RESULTS_NAME = "results.jsonl"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
AUDIO_SUFFIXES = (".wav", ".mp3", ".m4a", ".ogg", ".flac", ".aac")
#: row fields that are not generation options
JOB_FIELDS = ("key", "source_image", "source_video", "driven_audio", "output")
#: options naming input files: resolved against the jobs file's folder, shipped as bytes to Ray workers
PATH_OPTIONS = tuple(name for name, o in OPTIONS_BY_NAME.items() if o.kind == "path")


class BatchError(SadTalkerError):
    """The jobs list itself cannot be read (no such file, unknown format)."""


@dataclass
class BatchJob:
    key: str
    source_image: Any  # a path, or a decoded image (REST uploads)
    driven_audio: str | None
    # the row's own options (command-line defaults are merged in by ``run_batch``), or the complete config a
    # REST row was validated into at its edge (``batch_api``)
    options: dict | GenerationConfig
    output: Path
    error: str | None = None  # the row could not be read: the job fails with this message
    source_video: str | None = None  # a video to dub instead of a portrait to animate


@dataclass
class JobOutcome:
    key: str
    status: str  # "ok" | "failed" | "skipped"
    output: str | None
    seconds: float
    seed: int | None
    error: str | None = None

    def record(self) -> dict:
        return {"key": self.key, "status": self.status, "output": self.output, "seconds": self.seconds,
                "seed": self.seed, "error": self.error}


@dataclass
class Task:
    """A job ready to run: its options complete and checked, its seed fixed."""

    job: BatchJob
    config: GenerationConfig


@dataclass
class BatchEvent:
    """What ``run_batch`` reports: ``kind`` is "start", "stage" or "done"; ``finished`` counts done jobs."""

    kind: str
    key: str
    total: int
    finished: int
    stage: str | None = None
    done: int = 0
    steps: int = 0
    outcome: JobOutcome | None = None


@dataclass
class BatchSummary:
    outcomes: list[JobOutcome] = field(default_factory=list)
    results_path: Path | None = None

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)

    @property
    def ok(self) -> bool:
        return all(o.status in ("ok", "skipped") for o in self.outcomes)


# --------------------------------------------------------------------------------------------- reading jobs

def load_jobs(spec: str | os.PathLike, result_dir: str | os.PathLike) -> list[BatchJob]:
    """The jobs of a folder, ``.csv`` or ``.jsonl`` file; rows that cannot be read become failing jobs."""
    path = Path(spec)
    result_dir = Path(result_dir)
    if path.is_dir():
        rows = _folder_rows(path)
        base = path
    elif path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".csv":
            rows = _csv_rows(path)
        elif suffix in (".jsonl", ".ndjson"):
            rows = _jsonl_rows(path.read_text(encoding="utf-8").splitlines())
        else:
            raise BatchError(f"{path} is neither a folder, a .csv nor a .jsonl file; give one of those as JOBS.")
        base = path.parent
    else:
        raise BatchError(f"the jobs list {path} does not exist; give a folder of portraits and audio, a .csv or "
                         "a .jsonl file.")
    jobs = [job_from_row(row, index, base, result_dir) for index, row in enumerate(rows, 1)]
    if not jobs:
        raise BatchError(f"{path} holds no jobs (expected portraits + audio files, or one row per job).")
    return _unique_keys(jobs)


def parse_jsonl(text: str) -> list[dict]:
    """Rows of a JSONL text; a line that is not a JSON object becomes ``{"_error": ...}``."""
    return list(_jsonl_rows(text.splitlines()))


def _jsonl_rows(lines: Iterable[str]) -> Iterator[dict]:
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            yield {"_error": f"line {number} is not JSON ({error})", "key": f"line{number}"}
            continue
        yield row if isinstance(row, dict) else {"_error": f"line {number} is not a JSON object",
                                                 "key": f"line{number}"}


def _csv_rows(path: Path) -> Iterator[dict]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):
            # an empty cell means "not given": the command-line default applies
            yield {k.strip(): v for k, v in row.items() if k and v is not None and v.strip() != ""}


def _folder_rows(folder: Path) -> list[dict]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    images = {p.stem: p for p in files if p.suffix.lower() in IMAGE_SUFFIXES}
    audios = {p.stem: p for p in files if p.suffix.lower() in AUDIO_SUFFIXES}
    if len(images) == 1:  # one portrait speaks every audio file
        (image,) = images.values()
        return [{"key": stem, "source_image": str(image), "driven_audio": str(a)} for stem, a in audios.items()]
    rows = []
    for stem in sorted(set(images) | set(audios)):
        row = {"key": stem, "source_image": str(images[stem]) if stem in images else None,
               "driven_audio": str(audios[stem]) if stem in audios else None}
        if stem not in images:
            row["_error"] = f"no portrait named {stem}.* next to {audios[stem].name} in {folder}"
        elif stem not in audios:
            row["_error"] = f"no audio file named {stem}.* next to {images[stem].name} in {folder}"
        rows.append(row)
    return rows


def job_from_row(row: dict, index: int, base: Path, result_dir: Path) -> BatchJob:
    row = dict(row)
    error = row.pop("_error", None)

    def local(value):
        if value is None or not isinstance(value, (str, os.PathLike)):
            return value
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else base / path)

    source, audio = local(row.get("source_image")), local(row.get("driven_audio"))
    video = local(row.get("source_video"))
    output = row.get("output")
    key = str(row.get("key") or (Path(output).stem if output else None)
              or (Path(audio).stem if audio else None) or (Path(source).stem if source else None)
              or (Path(video).stem if video else None) or f"job{index}")
    output_path = result_dir / (output if output else f"{key}.mp4")
    if not output_path.suffix:
        output_path = output_path.with_suffix(".mp4")
    options = {k: (local(v) if k in PATH_OPTIONS else v) for k, v in row.items() if k not in JOB_FIELDS}
    return BatchJob(key=key, source_image=source, driven_audio=audio, options=options, output=output_path,
                    error=error, source_video=video)


def _unique_keys(jobs: list[BatchJob]) -> list[BatchJob]:
    seen: dict[str, int] = {}
    for job in jobs:
        if job.key in seen:
            seen[job.key] += 1
            job.key = f"{job.key}_{seen[job.key]}"
            if job.output.stem != job.key and job.output.name == f"{job.key.rsplit('_', 1)[0]}.mp4":
                job.output = job.output.with_name(f"{job.key}.mp4")
        else:
            seen[job.key] = 1
    return jobs


# ----------------------------------------------------------------------------------------------- running

def is_valid_video(path: Path) -> bool:
    """True when ``path`` is a video ffmpeg can read with at least one frame (a resumable result)."""
    from ..media import video

    try:
        info = video.video_info(path)
    except (SadTalkerError, OSError):
        return False
    return bool(info.n_frames) and info.width > 0


def remove_leftovers(output: Path) -> None:
    """Deletes hidden partial files a killed run left for this output (``VideoWriter``'s naming)."""
    if output.parent.is_dir():
        for leftover in output.parent.glob(f".{output.stem}.*.partial*"):
            leftover.unlink(missing_ok=True)


def _skipped_seed(output: Path) -> int | None:
    try:
        return json.loads(output.with_suffix(".json").read_text(encoding="utf-8"))["options"]["seed"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def prepare(job: BatchJob, defaults: dict) -> Task:
    """Complete, checked options with a fixed seed (so a failed job still reports the seed it had)."""
    if job.error:
        raise BatchError(job.error)
    if isinstance(job.options, GenerationConfig):
        config = job.options
    else:
        config = GenerationConfig.from_options({**defaults, **job.options})
    if job.source_image is None and job.source_video is None:
        raise BatchError("the job has no source_image (or source_video to dub).")
    if job.driven_audio is None and config.needs_audio:
        raise BatchError("the job has no driven_audio (give one, or idle_seconds for a video without speech).")
    return Task(job, config.with_seed())


def _given_seed(job: BatchJob, defaults: dict) -> int | None:
    """The seed a job that could not start asked for, when it is a whole number."""
    if isinstance(job.options, GenerationConfig):
        return job.options.seed
    try:
        return int({**defaults, **job.options}.get("seed"))
    except (TypeError, ValueError):
        return None


class ResultsFile:
    """``results.jsonl`` rewritten (temporary file + rename) after every job, in job order."""

    def __init__(self, path: Path, keys: Sequence[str]):
        self.path = path
        self._order = {k: i for i, k in enumerate(keys)}
        self._records: dict[str, dict] = {}

    def add(self, outcome: JobOutcome) -> None:
        self._records[outcome.key] = outcome.record()
        lines = [json.dumps(r) + "\n" for r in self.records()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        temp.write_text("".join(lines), encoding="utf-8")
        os.replace(temp, self.path)

    def records(self) -> list[dict]:
        return sorted(self._records.values(), key=lambda r: self._order[r["key"]])


#: ``executor(tasks, on_stage)`` runs tasks and yields one outcome per task as each finishes;
#: ``on_stage(key, stage, done, total)`` reports progress inside a job.
Executor = Callable[[list[Task], Callable[[str, str, int, int], None]], Iterator[JobOutcome]]


def run_batch(jobs: Sequence[BatchJob], defaults: dict, result_dir: str | os.PathLike, executor: Executor,
              on_event: Callable[[BatchEvent], None] | None = None) -> BatchSummary:
    """Skips finished jobs, records jobs that cannot start, runs the rest through ``executor``; every outcome
    lands in ``result_dir/results.jsonl`` as soon as it is known."""
    result_dir = Path(result_dir)
    total = len(jobs)
    results = ResultsFile(result_dir / RESULTS_NAME, [j.key for j in jobs])
    outcomes: dict[str, JobOutcome] = {}

    def emit(kind: str, key: str, **extra) -> None:
        if on_event is not None:
            on_event(BatchEvent(kind, key, total, len(outcomes), **extra))

    def finish(outcome: JobOutcome) -> None:
        outcomes[outcome.key] = outcome
        results.add(outcome)
        emit("done", outcome.key, outcome=outcome)

    tasks = []
    for job in jobs:
        if job.output.is_file() and is_valid_video(job.output):
            finish(JobOutcome(job.key, "skipped", str(job.output), 0.0, _skipped_seed(job.output)))
            continue
        try:
            task = prepare(job, defaults)
        except SadTalkerError as error:
            finish(JobOutcome(job.key, "failed", None, 0.0, _given_seed(job, defaults), one_line(error)))
            continue
        remove_leftovers(job.output)
        tasks.append(task)

    started: set[str] = set()

    def on_stage(key: str, stage: str, done: int, steps: int) -> None:
        if key not in started:
            started.add(key)
            emit("start", key)
        emit("stage", key, stage=stage, done=done, steps=steps)

    if tasks:
        for outcome in executor(tasks, on_stage):
            finish(outcome)
    return BatchSummary([outcomes[j.key] for j in jobs if j.key in outcomes], results.path)


# ------------------------------------------------------------------------------------------ local worker

class LocalExecutor:
    """Runs tasks one after another through one ``JobRunner`` (networks loaded by the first job, kept).

    ``lock`` and ``control`` (the server's) serialize jobs with other work on the device and expose progress
    and cancellation; standalone runs pass neither.
    """

    def __init__(self, runner, lock=None, control=None):
        self.runner, self.lock, self.control = runner, lock, control

    def __call__(self, tasks: list[Task], on_stage) -> Iterator[JobOutcome]:
        for task in tasks:
            yield self.run_one(task, on_stage)

    def run_one(self, task: Task, on_stage) -> JobOutcome:
        job = task.job
        started = time.perf_counter()

        def progress(stage: str, done: int, steps: int) -> None:
            if self.control is not None:
                self.control.progress(stage, done, steps)
            on_stage(job.key, stage, done, steps)

        on_stage(job.key, "queued", 0, 1)
        try:
            with contextlib.ExitStack() as stack:
                cancel = None
                if self.lock is not None:
                    stack.enter_context(self.lock)
                if self.control is not None:
                    _, cancel = stack.enter_context(self.control.scope(f"batch {job.key}"))
                self.runner.run(job.source_image, job.driven_audio, task.config, progress=progress,
                                cancel=cancel, output_path=job.output, source_video=job.source_video)
        except SadTalkerError as error:
            return JobOutcome(job.key, "failed", None, round(time.perf_counter() - started, 3),
                              task.config.seed, one_line(error))
        except (OSError, RuntimeError, ValueError) as error:  # a job's bug or resource problem: record, go on
            return JobOutcome(job.key, "failed", None, round(time.perf_counter() - started, 3),
                              task.config.seed, f"unexpected {type(error).__name__}: {one_line(error)}")
        return JobOutcome(job.key, "ok", str(job.output), round(time.perf_counter() - started, 3),
                          task.config.seed)


def local_runner(checkpoint_dir, device=None, old_version: bool = False, output_dir: Path | None = None):
    """A ``JobRunner`` over one checkpoint folder that keeps its networks loaded between jobs."""
    from .jobs import JobRunner, RunnerConfig

    def factory(folder, dev, dtype):
        from ..pipeline import SadTalker

        return SadTalker(folder, device=dev, dtype=dtype, old_version=old_version)

    config = RunnerConfig(checkpoint_dirs=[Path(checkpoint_dir)], output_dir=Path(output_dir or "."),
                          device=device, extra_sidecar={"host": "batch"})
    return JobRunner(lambda: config, talker_factory=factory)


def ensure_checkpoints_for(tasks: Iterable[Task], checkpoint_dir, old_version: bool = False,
                           progress=None) -> None:
    """Locates (downloading on first use) the checkpoints every task needs, once, before any job runs:
    a missing file is a problem of the machine, not of one job."""
    from ..runtime.checkpoint_files import locate_checkpoints

    for size, preprocess in sorted({(t.config.size, str(t.config.preprocess)) for t in tasks}):
        locate_checkpoints(checkpoint_dir, size=size, preprocess=preprocess, old_version=old_version,
                           download=True, progress=progress)


# ----------------------------------------------------------------------------------------------- command

def _build_parser():
    from .cli import build_parser

    parser = build_parser()
    parser.prog = "python -m sadtalker_core batch"
    parser.description = ("Run many jobs with the networks loaded once. Generation flags are defaults that "
                          "each row may override.")
    parser.add_argument("jobs", metavar="JOBS", help="folder of portraits + audio (paired by stem), .csv or "
                        ".jsonl with source_image, driven_audio, options, output per row")
    parser.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                        help="spread the jobs over a Ray cluster (auto: the running cluster, else a local one)")
    parser.add_argument("--ray_workers", type=int, default=None,
                        help="at most this many Ray workers (default: one per GPU, or per CPU slot without GPUs)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads per worker (default: torch's choice locally, 1 per Ray CPU slot). On a "
                             "CPU the video's bytes depend on it (sums run in a thread-dependent order): equal "
                             "--threads give equal files locally and on Ray")
    # no default folder: it receives results.jsonl and is what a rerun resumes, so the user names it
    parser.set_defaults(result_dir=None)
    return parser


class _Display:
    """Overall bar + stage bar on a terminal, one plain line per stage change and per finished job otherwise."""

    def __init__(self, stream, terminal: bool):
        self.stream, self.terminal = stream, terminal
        self._overall = self._stage = None
        self._last: dict[str, str] = {}
        self._index: dict[str, int] = {}

    def __call__(self, event: BatchEvent) -> None:
        if self.terminal:
            self._bars(event)
        else:
            self._lines(event)

    def _position(self, event: BatchEvent) -> str:
        index = self._index.setdefault(event.key, len(self._index) + 1)
        return f"[{index}/{event.total}]"

    def _lines(self, event: BatchEvent) -> None:
        if event.kind == "stage":
            if self._last.get(event.key) != event.stage:
                self._last[event.key] = event.stage
                print(f"{self._position(event)} {event.key}: {event.stage}", file=self.stream, flush=True)
        elif event.kind == "done":
            o = event.outcome
            detail = o.output if o.status != "failed" else o.error
            print(f"{self._position(event)} {o.key}: {o.status} {o.seconds:.1f} s {detail} "
                  f"({event.finished}/{event.total} done)", file=self.stream, flush=True)

    def _bars(self, event: BatchEvent) -> None:
        from tqdm import tqdm

        if self._overall is None:
            self._overall = tqdm(total=event.total, desc="batch", unit="job", position=0, file=self.stream)
        if event.kind == "stage":
            if self._stage is None:
                self._stage = tqdm(total=event.steps, desc="", unit="step", position=1, leave=False,
                                   file=self.stream)
            self._stage.set_description(f"{event.key}: {event.stage}", refresh=False)
            self._stage.total, self._stage.n = event.steps, event.done
            self._stage.refresh()
        elif event.kind == "done":
            self._overall.n = event.finished
            self._overall.set_postfix_str(f"{event.key} {event.outcome.status}", refresh=False)
            self._overall.refresh()

    def close(self) -> None:
        for bar in (self._stage, self._overall):
            if bar is not None:
                bar.close()


def main(argv: Sequence[str] | None = None) -> int:
    import sys

    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.result_dir is None:
        parser.error("--result_dir is required: the folder for the videos and results.jsonl")
    from .cli import options_from_args, shown_on_command_line

    try:
        defaults = options_from_args(args)
        GenerationConfig.from_options(defaults)  # a bad flag is a usage problem of the whole batch, not of each job
    except OptionError as error:
        parser.error(shown_on_command_line(error))
    except SadTalkerError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    display = None if args.quiet else _Display(sys.stderr, sys.stderr.isatty())
    device = "cpu" if args.cpu else args.device
    try:
        for name in ("source_image", "driven_audio"):
            if getattr(args, name) is not None:
                defaults[name] = getattr(args, name)
        jobs = load_jobs(args.jobs, args.result_dir)
        for job in jobs:  # the command-line portrait / audio serve rows that name none
            for name in ("source_image", "driven_audio"):
                if getattr(job, name) is None and defaults.get(name) is not None:
                    setattr(job, name, defaults[name])
            if job.source_video is not None:
                job.source_image = None  # a row that dubs a video has no portrait, whatever the defaults say
        defaults = {k: v for k, v in defaults.items() if k not in ("source_image", "driven_audio")}
        if args.ray:
            from .batch_ray import ray_executor

            executor = ray_executor(args.ray, args.checkpoint_dir, device=device, old_version=args.old_version,
                                    max_workers=args.ray_workers, threads=args.threads)
        else:
            if args.threads:
                import torch

                torch.set_num_threads(args.threads)
            runner = local_runner(args.checkpoint_dir, device, args.old_version, Path(args.result_dir))

            def executor(tasks, on_stage):
                ensure_checkpoints_for(tasks, args.checkpoint_dir, args.old_version)
                return LocalExecutor(runner)(tasks, on_stage)

        summary = run_batch(jobs, defaults, args.result_dir, executor, display)
    except KeyboardInterrupt:
        print("error: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except SadTalkerError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    finally:
        if display is not None:
            display.close()
    print(f"{summary.count('ok')} ok, {summary.count('failed')} failed, {summary.count('skipped')} skipped; "
          f"results: {summary.results_path}")
    return 0 if summary.ok else 1
