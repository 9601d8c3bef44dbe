"""Standalone Gradio app: ``python -m sadtalker_core app [--checkpoint-dir D] [--result-dir R] [--port N]``.

The same Blocks as the WebUI tab (``sadtalker_core.frontends.ui``), with a plain lock instead of the host's queue
lock and an event for Interrupt.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

from .jobs import JobControl, JobRunner, RunnerConfig
from .ui import TabParts, build_ui


def standalone_config(checkpoint_dir: str | Path | None, result_dir: str | Path, device: Any = None,
                      keep_loaded: bool = True, c2pa_cert: str | Path | None = None,
                      c2pa_key: str | Path | None = None) -> Callable[[], RunnerConfig]:
    from ..runtime.checkpoint_files import default_checkpoint_dir

    folders = [Path(checkpoint_dir)] if checkpoint_dir else [default_checkpoint_dir()]
    return lambda: RunnerConfig(checkpoint_dirs=folders, output_dir=Path(result_dir), device=device,
                                keep_loaded=keep_loaded, extra_sidecar={"host": "standalone"},
                                c2pa_cert=c2pa_cert, c2pa_key=c2pa_key)


def build_app(checkpoint_dir: str | Path | None = None, result_dir: str | Path = "results", device: Any = None,
              talker_factory: Callable | None = None, c2pa_cert: str | Path | None = None,
              c2pa_key: str | Path | None = None) -> TabParts:
    runner = JobRunner(standalone_config(checkpoint_dir, result_dir, device, c2pa_cert=c2pa_cert,
                                         c2pa_key=c2pa_key))
    if talker_factory is not None:
        runner.talker_factory = talker_factory
    return build_ui(runner, JobControl(), lock=threading.Lock(), title="SadTalker")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sadtalker_core app", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", "--checkpoint_dir", dest="checkpoint_dir", default=None,
                        help="folder with the SadTalker weights (default: $SADTALKER_CHECKPOINTS or ./checkpoints)")
    parser.add_argument("--result-dir", default="results", help="where videos and their JSON go")
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: the best available)")
    parser.add_argument("--c2pa-cert", default=None, help="certificate chain (PEM) to sign C2PA content "
                        "credentials into every video (default: $SADTALKER_C2PA_CERT)")
    parser.add_argument("--c2pa-key", default=None, help="private key (PEM) of --c2pa-cert "
                        "(default: $SADTALKER_C2PA_KEY)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    parts = build_app(args.checkpoint_dir, args.result_dir, args.device, c2pa_cert=args.c2pa_cert,
                      c2pa_key=args.c2pa_key)
    parts.blocks.queue()
    parts.blocks.launch(server_name=args.host, server_port=args.port,
                        allowed_paths=[str(Path(args.result_dir).resolve())])


if __name__ == "__main__":
    main()
