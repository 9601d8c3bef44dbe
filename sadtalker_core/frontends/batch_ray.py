"""Batch jobs spread over a Ray cluster (``python -m sadtalker_core batch ... --ray auto|ADDRESS``).

One actor per GPU (per CPU slot on machines without GPUs), each holding one ``JobRunner`` so its networks
load once. Inputs travel to the actor as bytes and the video comes back as bytes, so workers need no shared
filesystem; the driver writes each output under a temporary name and renames it, as a local run does. Each
actor needs the checkpoints in ``checkpoint_dir`` on its node (downloaded there on first use otherwise).
When this module starts or joins Ray, the package itself is shipped to the workers (``runtime_env``
``py_modules``); a program that called ``ray.init`` itself passes ``package_runtime_env()`` there (or has
sadtalker_core installed on every node). Torch and the other dependencies must be installed on every node.
Ray is an optional extra: ``pip install ray``.
"""

from __future__ import annotations

import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from ..errors import one_line
from ..options import GenerationConfig
from .batch import (PATH_OPTIONS, BatchError, BatchJob, JobOutcome, LocalExecutor, Task, ensure_checkpoints_for,
                    local_runner)

_FILE_FIELDS = ("source_image", "driven_audio", "source_video")


def package_runtime_env() -> dict:
    """A Ray ``runtime_env`` that ships this package to the workers (Ray accepts a local folder only at
    ``ray.init``, so a program that starts Ray itself passes this to its ``ray.init``)."""
    import sadtalker_core

    return {"py_modules": [str(Path(sadtalker_core.__file__).resolve().parent)]}


def _connect(address: str):
    try:
        import ray
    except ImportError:
        raise BatchError("--ray needs Ray, an optional extra: pip install ray (or drop --ray to run the jobs "
                         "on this machine).") from None
    if not ray.is_initialized():
        runtime_env = package_runtime_env()
        if address == "auto":
            try:
                ray.init(address="auto", runtime_env=runtime_env, log_to_driver=False)
            except ConnectionError:  # no running cluster: a local one on this machine
                ray.init(runtime_env=runtime_env, log_to_driver=False, include_dashboard=False)
        else:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    return ray


def _pack(path: Any) -> tuple[str, bytes | str] | None:
    """(file name, bytes) of a readable local file; the path itself otherwise, so the worker reports the
    same error a local run would (or finds the file on a shared filesystem)."""
    if path is None:
        return None
    p = Path(path)
    try:
        return (p.name, p.read_bytes())
    except OSError:
        return (p.name, str(path))


class _Worker:
    """The actor: one runner, jobs in a private temporary folder."""

    def __init__(self, checkpoint_dir: str, device: Any, old_version: bool, threads: int | None = None):
        if threads:
            import torch

            torch.set_num_threads(threads)  # Ray also sets OMP_NUM_THREADS to the slot's CPUs
        self.checkpoint_dir, self.old_version = checkpoint_dir, old_version
        self.runner = local_runner(checkpoint_dir, device, old_version)

    def run(self, key: str, files: dict, options: dict, output_name: str) -> dict:
        with tempfile.TemporaryDirectory(prefix="sadtalker_ray_") as tmp:
            inputs = {}
            for index, (name, packed) in enumerate(files.items()):
                if packed is None:
                    inputs[name] = None
                    continue
                file_name, content = packed
                if isinstance(content, str):
                    inputs[name] = content
                    continue
                folder = Path(tmp) / f"in{index}"
                folder.mkdir()
                (folder / file_name).write_bytes(content)
                inputs[name] = str(folder / file_name)
            options = {**options, **{k: inputs[k] for k in PATH_OPTIONS if k in inputs}}
            output = Path(tmp) / "out" / output_name
            job = BatchJob(key, inputs["source_image"], inputs["driven_audio"], {}, output,
                           source_video=inputs.get("source_video"))
            task = Task(job, GenerationConfig.from_options(options))  # checked again: it crossed processes
            try:
                ensure_checkpoints_for([task], self.checkpoint_dir, self.old_version)
            except Exception as error:  # reported per job, like any failure on the worker
                return {"outcome": JobOutcome(key, "failed", None, 0.0, options["seed"], one_line(error)).record()}
            outcome = LocalExecutor(self.runner).run_one(task, lambda *_: None)
            reply: dict = {"outcome": outcome.record()}
            if outcome.status == "ok":
                reply["video"] = output.read_bytes()
                sidecar = output.with_suffix(".json")
                if sidecar.is_file():
                    reply["sidecar"] = sidecar.read_bytes()
            return reply


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.{secrets.token_hex(6)}.partial{path.suffix}")
    try:
        temp.write_bytes(data)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _slots(ray, device: Any, max_workers: int | None, threads: int | None = None) -> tuple[int, dict]:
    """How many actors and what each one reserves: a GPU each, else ``threads`` CPUs (default 1) each."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus and device != "cpu":
        count, per_actor = gpus, {"num_gpus": 1}
    else:
        cpus = max(1, int(resources.get("CPU", 1)))
        per_slot = min(max(1, threads or 1), cpus)  # more threads than the cluster's CPUs: one worker, all CPUs
        count, per_actor = cpus // per_slot, {"num_cpus": per_slot}
    if max_workers:
        count = min(count, max_workers)
    return count, per_actor


def ray_executor(address: str, checkpoint_dir: str, device: Any = None, old_version: bool = False,
                 max_workers: int | None = None, threads: int | None = None):
    """An executor for ``batch.run_batch`` that runs tasks on Ray actors (connects now)."""
    ray = _connect(address)
    remote_worker = ray.remote(_Worker)

    def execute(tasks: list[Task], on_stage) -> Iterator[JobOutcome]:
        count, per_actor = _slots(ray, device, max_workers, threads)
        count = min(count, len(tasks))
        actors = [remote_worker.options(**per_actor).remote(str(checkpoint_dir), device, old_version, threads)
                  for _ in range(count)]
        queue = list(tasks)
        running: dict[Any, tuple[Any, Task, float]] = {}

        def submit(actor) -> None:
            task = queue.pop(0)
            job = task.job
            files = {name: _pack(getattr(job, name)) for name in _FILE_FIELDS}
            options = task.config.to_dict()  # plain JSON values travel to the worker
            files.update({name: _pack(options[name]) for name in PATH_OPTIONS if options[name]})
            ref = actor.run.remote(job.key, files, options, job.output.name)
            running[ref] = (actor, task, time.perf_counter())
            on_stage(job.key, "sent to a ray worker", 0, 1)

        try:
            for actor in actors:
                if queue:
                    submit(actor)
            while running:
                ready, _ = ray.wait(list(running), num_returns=1)
                actor, task, started = running.pop(ready[0])
                job = task.job
                try:
                    reply = ray.get(ready[0])
                except Exception as error:  # the actor died or raised: record the job, go on without it
                    yield JobOutcome(job.key, "failed", None, round(time.perf_counter() - started, 3),
                                     task.config.seed, f"ray worker failed: {one_line(error)}")
                    actors.remove(actor)
                    if not actors:
                        for left in queue:
                            yield JobOutcome(left.job.key, "failed", None, 0.0, left.config.seed,
                                             "no ray worker left to run this job")
                        queue.clear()
                    continue
                record = reply["outcome"]
                if record["status"] == "ok":
                    _write_atomic(job.output, reply["video"])
                    if "sidecar" in reply:
                        _write_atomic(job.output.with_suffix(".json"), reply["sidecar"])
                    record["output"] = str(job.output)
                yield JobOutcome(**record)
                if queue:
                    submit(actor)
        finally:
            for actor in actors:
                ray.kill(actor)

    return execute
