"""``python -m sadtalker_core``: the official ``inference.py`` flags (same names, same defaults) plus new ones.

The generation flags are generated from the option table (``options.OPTIONS``): one flag per option with the
table's type, default, choices and help, so the command line cannot drift from the other front ends. Every
multi-word flag takes both spellings, ``--pose_style`` (the original's) and ``--pose-style``.

Prints the output path on stdout and ``seed N`` on stderr on success (exit 0); on failure one line
``error: ...`` on stderr and exit 1 (2 for bad command-line usage: a bad flag value or a missing input,
130 when interrupted).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from ..errors import Cancelled, OptionError, SadTalkerError, one_line
from ..options import OPTIONS, GenerationConfig, Option
from ..progress import TerminalBar
from ..runtime.checkpoint_files import default_checkpoint_dir

# Flags of the official face3d renderer (``--face3dvis`` and its BFM settings). They only matter for a debug
# visualisation this project does not ship; they are accepted so existing scripts keep working.
_IGNORED_OFFICIAL_FLAGS = (
    ("net_recon", str), ("init_path", str), ("use_last_fc", str), ("bfm_folder", str),
    ("bfm_model", str), ("focal", float), ("center", float), ("camera_d", float),
    ("z_near", float), ("z_far", float),
)
#: options whose flag is not generated from the table: on the command line the landmarks come from a file
_FILE_OPTIONS = ("landmarks",)
_TYPES = {"int": int, "float": float, "str": str, "path": str, "angles": float, "box": float}


def spellings(name: str) -> list[str]:
    """The flags of one name: ``--name_with_words`` (the original's) and ``--name-with-words``."""
    flags = [f"--{name}"]
    if "_" in name:
        flags.append(f"--{name.replace('_', '-')}")
    return flags


def flag_of(option_name: str) -> str:
    """How the command line shows an option (its errors name it so)."""
    return f"--{option_name}"


def _choice_of(option: Option):
    """Parses a value of a choice option the way the table does (any letter case) to its canonical text, so
    argparse's own ``choices`` check (and its usage error) applies to the canonical value."""
    def parse(text: str):
        value = _TYPES[option.kind](text)
        if isinstance(value, str):
            return next((c for c in option.choices if c.lower() == value.strip().lower()), value)
        return value

    parse.__name__ = option.name  # argparse names the type in its "invalid ... value" message
    return parse


def _add_option_flag(group, option: Option) -> None:
    """The flag of one table option: its type, default, choices and help all come from ``option``."""
    flags, common = spellings(option.name), dict(dest=option.name, default=option.default, help=option.help)
    if option.kind == "bool":
        if option.default:
            # on by default: --name / --no-name, and --no_name in the original's spelling (--no_blink)
            group.add_argument(*flags, action=argparse.BooleanOptionalAction, **common)
            group.add_argument(f"--no_{option.name}", action="store_false", dest=option.name,
                               default=argparse.SUPPRESS, help=f"Same as --no-{option.name}.")
        else:
            group.add_argument(*flags, action="store_true", **common)
        return
    kind = dict(type=_choice_of(option), choices=option.choices) if option.choices else \
        dict(type=_TYPES[option.kind])
    if option.kind == "angles":
        kind.update(nargs="+", metavar="DEGREES")
    elif option.kind == "box":
        kind.update(nargs=4, metavar=("X0", "Y0", "X1", "Y1"))
    group.add_argument(*flags, **kind, **common)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sadtalker_core",
        description="Portrait + speech -> talking-head video (SadTalker).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,  # every flag's default in --help
    )
    run = p.add_argument_group("inputs and run")

    def add(name: str, **kwargs) -> None:
        run.add_argument(*spellings(name), dest=name, **kwargs)

    add("source_image", default=None, help="Portrait image (or a video: its first frame is used).")
    add("driven_audio", default=None, help="Speech audio (wav, mp3, m4a, ogg, flac, or a video's audio track); "
        "not needed with --idle_seconds, or with --ref_video and --ref_info all (the reference's audio).")
    add("source_video", default=None, help="A video to dub instead of animating --source_image: its lips follow "
        "--driven_audio, its head, eyes and scene stay.")
    add("landmarks", default=None, metavar="FILE",
        help="JSON file with 68 [x, y] landmarks in image pixels (skips detection).")
    add("checkpoint_dir", default=str(default_checkpoint_dir()),
        help="Folder with the SadTalker weights ($SADTALKER_CHECKPOINTS when set, else ./checkpoints).")
    add("result_dir", default="./results", help="Folder for the output video.")
    add("cpu", action="store_true", help="Run on the CPU even when a GPU is available.")
    add("device", default=None, help="torch device, e.g. cuda:1 (none: cuda, mps, cpu, the first present).")
    add("verbose", action="store_true", help="Also save the intermediate coefficients; show the traceback of "
        "an unexpected error.")
    add("old_version", action="store_true", help="Use the old .pth checkpoint set instead of the safetensors "
        "files.")
    add("c2pa_cert", default=None, metavar="PEM", help="Certificate chain (PEM) to sign C2PA content "
        "credentials into the video (none: $SADTALKER_C2PA_CERT).")
    add("c2pa_key", default=None, metavar="PEM", help="Private key (PEM) of --c2pa_cert (none: "
        "$SADTALKER_C2PA_KEY).")
    add("quiet", action="store_true", help="No progress bar.")
    add("face3dvis", action="store_true",
        help="Accepted for compatibility; the 3D face visualisation is not part of this project.")
    for name, kind in _IGNORED_OFFICIAL_FLAGS:
        add(name, type=kind, default=None, help=argparse.SUPPRESS)

    generation = p.add_argument_group("generation options (the option table, options.py)")
    for option in OPTIONS:
        if option.name not in _FILE_OPTIONS:
            _add_option_flag(generation, option)
    return p


def options_from_args(args: argparse.Namespace) -> dict:
    """Generation options (``options.py`` names) from parsed flags; the landmarks file read."""
    options = {o.name: getattr(args, o.name) for o in OPTIONS if o.name not in _FILE_OPTIONS}
    if args.landmarks is not None:
        path = Path(args.landmarks)
        try:
            options["landmarks"] = json.loads(path.read_text())
        except OSError as exc:
            raise SadTalkerError(f"cannot read the landmarks file {path}: {exc.strerror}.") from None
        except json.JSONDecodeError as exc:
            raise SadTalkerError(f"the landmarks file {path} is not JSON ({exc.msg}); expected 68 [x, y] "
                                 "pairs.") from None
    return options


def missing_input(args: argparse.Namespace, config: GenerationConfig) -> str | None:
    """What the command lacks to run, naming the flag; ``None`` when the inputs are complete. Nothing falls
    back to a file the user did not name."""
    if args.source_image is None and args.source_video is None:
        return "--source_image is required: the portrait to animate (or --source_video, a video to dub)."
    if args.driven_audio is None and config.needs_audio:
        return ("--driven_audio is required: the speech to animate with (or --idle_seconds N for a video "
                "without speech, or --ref_video FILE --ref_info all to use the reference video's audio).")
    return None


def _command(name: str):
    """The ``main`` of a sub-command (``python -m sadtalker_core batch|download|verify|doctor|app|server ...``)."""
    if name == "batch":
        from .batch import main as command
    elif name == "app":
        from .app import main as command
    elif name == "server":
        from .server import main as command
    elif name in ("download", "verify"):
        from ..runtime.download import main as checkpoints_main

        return lambda rest: checkpoints_main([name, *rest])
    else:
        from .doctor import main as command
    return command


COMMANDS = ("batch", "download", "verify", "doctor", "app", "server")


def shown_on_command_line(error: SadTalkerError) -> str:
    """The error's message on one line, an option called by its flag (``--face_box: got ...``)."""
    if isinstance(error, OptionError) and error.option is not None:
        return error.shown_as(flag_of(error.option))
    return one_line(error)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return _command(argv[0])(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        # bad flag values are usage errors, found here before the pipeline (torch) is imported
        config = GenerationConfig.from_options(options_from_args(args))
    except OptionError as exc:
        parser.error(shown_on_command_line(exc))
    except SadTalkerError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 1
    problem = missing_input(args, config)
    if problem is not None:
        parser.error(problem)
    progress = None if args.quiet or not sys.stderr.isatty() else TerminalBar()
    try:
        from ..media.provenance import C2paCredentials
        from ..pipeline import SadTalker

        signing = C2paCredentials.resolve(args.c2pa_cert, args.c2pa_key)

        device = "cpu" if args.cpu else args.device
        talker = SadTalker(args.checkpoint_dir, device=device, old_version=args.old_version)
        audio = None if config.idle_seconds is not None else args.driven_audio
        image = args.source_image if args.source_video is None else None
        result = talker.generate(image, audio, source_video=args.source_video, result_dir=args.result_dir,
                                 progress=progress, keep_intermediates=args.verbose, signing=signing,
                                 config=config)
        from .jobs import write_sidecar

        sidecar = write_sidecar(result, image, audio, talker.checkpoint_dir, source_video=args.source_video,
                                extra={"host": "cli"})
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Cancelled as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 130
    except SadTalkerError as exc:
        print(f"error: {shown_on_command_line(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug, not bad input: still one line unless --verbose asks for the traceback
        if args.verbose:
            raise
        print(f"error: unexpected {type(exc).__name__}: {one_line(exc)} (rerun with --verbose for the traceback; "
              "please report it)", file=sys.stderr)
        return 1
    finally:
        if progress is not None:
            progress.close()
    # the seed of a random run is the only way to repeat it: on stderr, so stdout stays just the path
    print(f"seed {result.options['seed']} (parameters in {sidecar.name})", file=sys.stderr)
    print(result.video_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
