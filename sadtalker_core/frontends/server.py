"""Standalone HTTP server with the WebUI extension's routes:
``python -m sadtalker_core server --host 127.0.0.1 --port N [--checkpoint-dir D] [--api-auth user:pass]``.

``POST /sadtalker/v1/generate``, ``GET /sadtalker/v1/status``, ``GET /sadtalker/v1/options``,
``GET /sadtalker/v1/progress``, ``GET /sadtalker/v1/preview`` (the running job's newest frame, PNG),
``POST /sadtalker/v1/interrupt``; one job at a time (a lock).
Batches: ``POST /sadtalker/v1/batch`` (JSONL), ``GET /sadtalker/v1/batch/{id}`` (see ``batch_api``).
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from .api import add_routes, auth_dependencies
from .app import standalone_config
from .batch_api import add_batch_routes
from .jobs import JobControl, JobRunner


def create_app(checkpoint_dir: str | Path | None = None, result_dir: str | Path = "results", device: Any = None,
               api_auth: str | None = None, talker_factory: Callable | None = None,
               c2pa_cert: str | Path | None = None, c2pa_key: str | Path | None = None):
    from fastapi import FastAPI

    from .. import __version__

    app = FastAPI(title="SadTalker", version=__version__)
    runner = JobRunner(standalone_config(checkpoint_dir, result_dir, device, c2pa_cert=c2pa_cert,
                                         c2pa_key=c2pa_key))
    if talker_factory is not None:
        runner.talker_factory = talker_factory
    lock, control, dependencies = threading.Lock(), JobControl(), auth_dependencies(api_auth)
    add_routes(app, runner, lock=lock, control=control, dependencies=dependencies)
    add_batch_routes(app, runner, lock=lock, control=control, dependencies=dependencies)
    return app


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m sadtalker_core server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7861)
    parser.add_argument("--checkpoint-dir", "--checkpoint_dir", dest="checkpoint_dir", default=None,
                        help="default: $SADTALKER_CHECKPOINTS or ./checkpoints")
    parser.add_argument("--result-dir", default="results")
    parser.add_argument("--device", default=None)
    parser.add_argument("--api-auth", default=None, help='HTTP Basic credentials "user:pass[,user2:pass2]"')
    parser.add_argument("--c2pa-cert", default=None, help="certificate chain (PEM) to sign C2PA content "
                        "credentials into every video (default: $SADTALKER_C2PA_CERT)")
    parser.add_argument("--c2pa-key", default=None, help="private key (PEM) of --c2pa-cert")
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.checkpoint_dir, args.result_dir, args.device, args.api_auth,
                           c2pa_cert=args.c2pa_cert, c2pa_key=args.c2pa_key), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
