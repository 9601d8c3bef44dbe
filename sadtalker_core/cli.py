"""``python -m sadtalker_core``: the official ``inference.py`` flags (same names, same defaults) plus new ones.

Prints the output path on success (exit 0); on failure one line ``error: ...`` on stderr and exit 1
(2 for bad command-line usage, 130 when interrupted).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

from .checkpoint_files import default_checkpoint_dir
from .errors import Cancelled, SadTalkerError, one_line
from .options import (BACKGROUND_ENHANCERS, BLEND_MODES, ENHANCERS, FACE_DETECTORS, OPTIONS,
                      OPTIONS_BY_NAME, PREPROCESS_MODES, REF_INFO, WATERMARK_POSITIONS,
                      validate_options)
from .progress import TerminalBar

# Flags of the official face3d renderer (``--face3dvis`` and its BFM settings). They only matter for a debug
# visualisation this project does not ship; they are accepted so existing scripts keep working.
_IGNORED_OFFICIAL_FLAGS = (
    ("--net_recon", str), ("--init_path", str), ("--use_last_fc", str), ("--bfm_folder", str),
    ("--bfm_model", str), ("--focal", float), ("--center", float), ("--camera_d", float),
    ("--z_near", float), ("--z_far", float),
)


#: the official default of --source_image (used when neither a source image nor a video is given)
_OFFICIAL_SOURCE = "./examples/source_image/full_body_1.png"


def _help(name: str) -> str:
    return OPTIONS_BY_NAME[name].help


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sadtalker_core",
        description="Portrait + speech -> talking-head video (SadTalker).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,  # every flag's default in --help
    )
    official = p.add_argument_group("official inference.py flags")
    official.add_argument("--driven_audio", default="./examples/driven_audio/bus_chinese.wav",
                          help="Speech audio (wav, mp3, m4a, ogg, flac, or a video's audio track).")
    official.add_argument("--source_image", default=None,
                          help=f"Portrait image (or a video: its first frame is used); default {_OFFICIAL_SOURCE}.")
    official.add_argument("--ref_eyeblink", default=None, help=_help("ref_eyeblink"))
    official.add_argument("--ref_pose", default=None, help=_help("ref_pose"))
    official.add_argument("--checkpoint_dir", "--checkpoint-dir", dest="checkpoint_dir",
                          default=str(default_checkpoint_dir()),
                          help="Folder with the SadTalker weights (default: $SADTALKER_CHECKPOINTS, else "
                               "./checkpoints).")
    official.add_argument("--result_dir", default="./results", help="Folder for the output video.")
    official.add_argument("--pose_style", type=int, default=0, help=_help("pose_style"))
    official.add_argument("--batch_size", type=int, default=2, help=_help("batch_size"))
    official.add_argument("--size", type=int, default=256, help=_help("size"))
    official.add_argument("--expression_scale", type=float, default=1.0, help=_help("expression_scale"))
    official.add_argument("--input_yaw", nargs="+", type=float, default=None, help=_help("input_yaw"))
    official.add_argument("--input_pitch", nargs="+", type=float, default=None, help=_help("input_pitch"))
    official.add_argument("--input_roll", nargs="+", type=float, default=None, help=_help("input_roll"))
    official.add_argument("--enhancer", default=None, choices=ENHANCERS, help=_help("enhancer"))
    official.add_argument("--background_enhancer", default=None, choices=BACKGROUND_ENHANCERS,
                          help=_help("background_enhancer"))
    official.add_argument("--cpu", action="store_true", help="Run on the CPU even when a GPU is available.")
    official.add_argument("--face3dvis", action="store_true",
                          help="Accepted for compatibility; the 3D face visualisation is not part of this project.")
    official.add_argument("--still", action="store_true", help=_help("still"))
    official.add_argument("--preprocess", default="crop", choices=PREPROCESS_MODES, help=_help("preprocess"))
    official.add_argument("--verbose", action="store_true", help="Also save the intermediate coefficients.")
    official.add_argument("--old_version", action="store_true",
                          help="Use the old .pth checkpoint set instead of the safetensors files.")
    for flag, kind in _IGNORED_OFFICIAL_FLAGS:
        official.add_argument(flag, type=kind, default=None, help=argparse.SUPPRESS)

    new = p.add_argument_group("new flags")
    new.add_argument("--seed", type=int, default=None, help=_help("seed"))
    new.add_argument("--fps", type=int, default=25, help=_help("fps"))
    new.add_argument("--head_motion_scale", type=float, default=1.0, help=_help("head_motion_scale"))
    new.add_argument("--no_blink", action="store_true", help="Do not add eye blinks.")
    new.add_argument("--face_detector", default=OPTIONS_BY_NAME["face_detector"].default, choices=FACE_DETECTORS,
                     help=_help("face_detector"))
    new.add_argument("--face_index", type=int, default=None, help=_help("face_index"))
    new.add_argument("--face_box", nargs=4, type=float, default=None, metavar=("X0", "Y0", "X1", "Y1"),
                     help=_help("face_box"))
    new.add_argument("--landmarks", default=None, metavar="FILE",
                     help="JSON file with 68 [x, y] landmarks in image pixels (skips detection).")
    new.add_argument("--idle_seconds", type=float, default=None, help=_help("idle_seconds"))
    new.add_argument("--ref_video", default=None, help=_help("ref_video"))
    new.add_argument("--ref_info", default=None, choices=REF_INFO, help=_help("ref_info"))
    new.add_argument("--blend", default="seamless", choices=BLEND_MODES, help=_help("blend"))
    new.add_argument("--crf", type=int, default=18, help=_help("crf"))
    new.add_argument("--watermark", default=None, help=_help("watermark"))
    new.add_argument("--watermark_position", default="bottom-right", choices=WATERMARK_POSITIONS,
                     help=_help("watermark_position"))
    new.add_argument("--watermark_opacity", type=float, default=0.6, help=_help("watermark_opacity"))
    new.add_argument("--c2pa_cert", "--c2pa-cert", dest="c2pa_cert", default=None, metavar="PEM",
                     help="Certificate chain (PEM) to sign C2PA content credentials into the video "
                          "(default: $SADTALKER_C2PA_CERT).")
    new.add_argument("--c2pa_key", "--c2pa-key", dest="c2pa_key", default=None, metavar="PEM",
                     help="Private key (PEM) of --c2pa_cert (default: $SADTALKER_C2PA_KEY).")
    new.add_argument("--source_video", default=None,
                     help="A video to dub instead of animating --source_image: its lips follow --driven_audio, its "
                          "head, eyes and scene stay.")
    new.add_argument("--mouth_only", action=argparse.BooleanOptionalAction, default=True, help=_help("mouth_only"))
    new.add_argument("--video_audio_volume", type=float, default=0.0, help=_help("video_audio_volume"))
    new.add_argument("--device", default=None, help="torch device, e.g. cuda:1 (default: cuda, mps, cpu).")
    new.add_argument("--quiet", action="store_true", help="No progress bar.")
    return p


def options_from_args(args: argparse.Namespace) -> dict:
    """Generation options (``options.py`` names) from parsed flags."""
    # every option has a flag of its name, except the two whose flag means something else on the command line
    options = {o.name: getattr(args, o.name) for o in OPTIONS if o.name not in ("blink", "landmarks")}
    options["blink"] = not args.no_blink
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


def _command(name: str):
    """The ``main`` of a sub-command (``python -m sadtalker_core batch|download|verify|doctor ...``)."""
    if name == "batch":
        from .batch import main as command
    elif name in ("download", "verify"):
        from .download import main as checkpoints_main

        return lambda rest: checkpoints_main([name, *rest])
    else:
        from .doctor import main as command
    return command


COMMANDS = ("batch", "download", "verify", "doctor")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in COMMANDS:
        return _command(argv[0])(argv[1:])
    args = build_parser().parse_args(argv)
    progress = None if args.quiet or not sys.stderr.isatty() else TerminalBar()
    try:
        # bad flag values fail here, before the pipeline (torch) is imported
        options = validate_options(options_from_args(args))
        from .pipeline import SadTalker
        from .provenance import C2paCredentials

        signing = C2paCredentials.resolve(args.c2pa_cert, args.c2pa_key)

        device = "cpu" if args.cpu else args.device
        talker = SadTalker(args.checkpoint_dir, device=device, old_version=args.old_version)
        audio = None if args.idle_seconds is not None else args.driven_audio
        image = args.source_image
        if image is None and args.source_video is None:
            image = _OFFICIAL_SOURCE
        result = talker.generate(image, audio, source_video=args.source_video, result_dir=args.result_dir,
                                 progress=progress, keep_intermediates=args.verbose, signing=signing,
                                 **options)
        from .jobs import write_sidecar

        write_sidecar(result, image, audio, talker.checkpoint_dir, source_video=args.source_video,
                      extra={"host": "cli"})
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Cancelled as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 130
    except SadTalkerError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
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
    print(result.video_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
