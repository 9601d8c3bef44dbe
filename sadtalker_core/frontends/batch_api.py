"""REST batches for the standalone server.

``POST /sadtalker/v1/batch`` takes a JSONL body, one ``/generate`` request per line (``image``, ``audio``,
options, and an optional ``key``), stores the uploads and answers at once with ``{"id", "jobs"}``.
``GET /sadtalker/v1/batch/{id}`` gives the state (queued / running / done), counts, the job in flight and one
result per finished job (the ``results.jsonl`` fields plus a ``video`` URL);
``GET /sadtalker/v1/batch/{id}/video/{key}`` returns a finished video.

Batches run one after another on a server thread, each job taking the same lock as ``/generate``, so jobs
queue behind one another on the device; the work does not depend on the submitting connection, so a client
that disconnects loses nothing and polls later. Outputs go to ``<output folder>/batches/<id>/``.
"""

from __future__ import annotations

import queue
import re
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from ..errors import one_line
from .api import PREFIX, Limits, RequestError, parse_generate_request
from .batch import BatchEvent, BatchJob, LocalExecutor, _unique_keys, parse_jsonl, run_batch
from .jobs import JobControl, JobRunner


@dataclass
class _Batch:
    id: str
    folder: Path
    jobs: list[BatchJob]
    state: str = "queued"
    error: str | None = None
    current: dict | None = None
    records: dict[str, dict] = field(default_factory=dict)

    def on_event(self, event: BatchEvent) -> None:
        if event.kind == "stage":
            self.current = {"key": event.key, "stage": event.stage, "done": event.done, "total": event.steps}
        elif event.kind == "done":
            self.records[event.key] = event.outcome.record()
            if self.current and self.current["key"] == event.key:
                self.current = None

    def describe(self, prefix: str) -> dict:
        results = []
        for job in self.jobs:
            record = self.records.get(job.key)
            if record is not None:
                video = f"{prefix}/batch/{self.id}/video/{job.key}" if record["status"] != "failed" else None
                results.append({**record, "video": video})
        counts = {s: sum(r["status"] == s for r in self.records.values()) for s in ("ok", "failed", "skipped")}
        counts["pending"] = len(self.jobs) - len(self.records)
        return {"id": self.id, "state": self.state, "total": len(self.jobs), "counts": counts,
                "current": self.current, "error": self.error, "results": results}


def _safe_key(value: Any, index: int) -> str:
    key = re.sub(r"[^\w.-]+", "_", str(value)).strip("._") if value not in (None, "") else ""
    return key[:80] or f"job{index}"


class BatchQueue:
    """Batches submitted over REST and the thread that runs them."""

    def __init__(self, runner: JobRunner, lock, control: JobControl):
        self.runner, self.lock, self.control = runner, lock, control
        self._batches: dict[str, _Batch] = {}
        self._queue: queue.Queue[_Batch] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._start_guard = threading.Lock()

    def submit(self, body: bytes, limits: Limits) -> _Batch:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(400, None, "the body is not UTF-8 text; send one JSON object per line.") from None
        rows = parse_jsonl(text)
        if not rows:
            raise RequestError(400, None, "the body holds no jobs; send one JSON object per line (JSONL), each "
                                          "like a /generate request.")
        batch_id = secrets.token_hex(8)
        folder = Path(self.runner.config().output_dir) / "batches" / batch_id
        inputs = folder / ".inputs"
        jobs = []
        for index, row in enumerate(rows, 1):
            row = dict(row)
            key = _safe_key(row.pop("key", None), index)
            error = row.pop("_error", None)
            job = BatchJob(key, None, None, {}, folder / f"{key}.mp4", error=error)
            if error is None:
                workdir = inputs / str(index)
                workdir.mkdir(parents=True)
                try:
                    image, audio, config, source_video = parse_generate_request(row, workdir, limits)
                except RequestError as problem:
                    job.error = problem.message
                else:
                    if image is not None:
                        image.save(workdir / "image.png")
                        job.source_image = str(workdir / "image.png")
                    job.options = config  # validated once, here: prepare() takes it as it is
                    job.source_video = str(source_video) if source_video is not None else None
                    job.driven_audio = str(audio) if audio else None
            jobs.append(job)
        batch = _Batch(batch_id, folder, _unique_keys(jobs))
        self._batches[batch_id] = batch
        self._queue.put(batch)
        with self._start_guard:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="sadtalker-batch", daemon=True)
                self._thread.start()
        return batch

    def get(self, batch_id: str) -> _Batch | None:
        return self._batches.get(batch_id)

    def _work(self) -> None:
        while True:
            batch = self._queue.get()
            batch.state = "running"
            try:
                run_batch(batch.jobs, {}, batch.folder, LocalExecutor(self.runner, self.lock, self.control),
                          batch.on_event)
            except Exception as error:  # the batch is reported failed; the server and later batches go on
                batch.error = one_line(error)
            finally:
                shutil.rmtree(batch.folder / ".inputs", ignore_errors=True)
                batch.state = "done"


def add_batch_routes(app, runner: JobRunner, *, lock, control: JobControl, dependencies: Sequence = (),
                     limits: Limits | Callable[[], Limits] = Limits(), prefix: str = PREFIX) -> BatchQueue:
    batches = BatchQueue(runner, lock, control)
    current_limits = limits if callable(limits) else (lambda: limits)

    def missing(batch_id: str):
        return JSONResponse(status_code=404, content={"error": "NotFound", "field": None,
                                                      "detail": f"no batch {batch_id!r} on this server."})

    async def submit(request: Request):
        body = await request.body()
        try:
            batch = await run_in_threadpool(batches.submit, body, current_limits())
        except RequestError as error:
            return JSONResponse(status_code=error.status, content={"error": "RequestError", "field": error.field,
                                                                   "detail": error.message})
        return {"id": batch.id, "jobs": [j.key for j in batch.jobs], "status": f"{prefix}/batch/{batch.id}"}

    def status(batch_id: str):
        batch = batches.get(batch_id)
        return batch.describe(prefix) if batch is not None else missing(batch_id)

    def video(batch_id: str, key: str):
        batch = batches.get(batch_id)
        if batch is None:
            return missing(batch_id)
        job = next((j for j in batch.jobs if j.key == key), None)
        record = batch.records.get(key)
        if job is None or record is None or record["status"] == "failed" or not job.output.is_file():
            return JSONResponse(status_code=404, content={"error": "NotFound", "field": "key",
                                                          "detail": f"batch {batch_id} has no finished video "
                                                                    f"{key!r}."})
        return FileResponse(job.output, media_type="video/mp4", filename=job.output.name)

    deps = list(dependencies)
    app.add_api_route(f"{prefix}/batch", submit, methods=["POST"], dependencies=deps,
                      summary="Queue a batch: JSONL body, one /generate request per line -> batch id")
    app.add_api_route(f"{prefix}/batch/{{batch_id}}", status, methods=["GET"], dependencies=deps,
                      summary="State, counts and results of a batch")
    app.add_api_route(f"{prefix}/batch/{{batch_id}}/video/{{key}}", video, methods=["GET"], dependencies=deps,
                      summary="A finished video of a batch")
    return batches
