"""``python -m sadtalker_core``: official flags, and one ``error: ...`` line with a non-zero exit for bad input.

The successful run (exit 0, the path on stdout, the same video as the API for the same seed) is
``test_pipeline.py::test_cli_with_the_same_seed_reproduces_the_api_video``; it shares that module's render.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import golden
from sadtalker_core.frontends.cli import build_parser, options_from_args
from sadtalker_core.errors import SadTalkerError
from sadtalker_core.options import validate_options

MEDIA = golden.MEDIA


def run_cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sadtalker_core", *args], cwd=golden.REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The failure contract: exit 1, nothing on stdout, exactly one ``error: ...`` line on stderr."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture
def job_args(checkpoints_256, speech_clip, tmp_path):
    """Flags of a valid job; a test replaces the one it breaks. The result folder must stay absent."""
    results = tmp_path / "results"
    yield {"--driven_audio": str(speech_clip(0.04)), "--source_image": str(MEDIA / "happy.png"),
           "--checkpoint_dir": str(checkpoints_256), "--result_dir": str(results), "--face_detector": "dlib",
           "--seed": "1", "--cpu": None}
    assert not results.exists()


def flags(args: dict) -> list[str]:
    return [item for flag, value in args.items() for item in ((flag,) if value is None else (flag, value))]


def test_missing_checkpoints_fail_fast_naming_files_and_folder(job_args, tmp_path):
    with socket.socket() as probe:  # a loopback port nobody listens on: the download is refused at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path / "empty_checkpoints"
    folder.mkdir()
    job_args["--checkpoint_dir"] = str(folder)
    started = time.perf_counter()
    line = error_line(run_cli(*flags(job_args), env={"SADTALKER_DOWNLOAD_BASE_URL": f"http://127.0.0.1:{port}"}))
    assert time.perf_counter() - started < 60  # python + torch import included; no network waits
    assert "SadTalker_V0.0.2_256.safetensors" in line and "mapping_00229-model.pth.tar" in line
    assert str(folder) in line and "Download them by hand" in line
    assert list(folder.iterdir()) == []


def test_bad_source_image(job_args, tmp_path):
    job_args["--source_image"] = str(tmp_path / "no_such_portrait.png")
    line = error_line(run_cli(*flags(job_args)))
    assert "not found" in line and "no_such_portrait.png" in line


def test_bad_audio(job_args, tmp_path):
    noise = tmp_path / "noise.wav"
    noise.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    job_args["--driven_audio"] = str(noise)
    assert "noise.wav" in error_line(run_cli(*flags(job_args)))


def usage_error(proc: subprocess.CompletedProcess) -> str:
    """The usage-error contract: exit 2, nothing on stdout, the last stderr line argparse's ``...: error: ...``."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    return proc.stderr.splitlines()[-1]


@pytest.mark.parametrize("flag, value, match", [
    ("--pose_style", "99", "--pose_style: got 99, expected a value from 0 to 45."),
    ("--batch_size", "0", "--batch_size: got 0, expected a value from 1 to 256."),
    ("--idle_seconds", "0", "--idle_seconds: got 0.0, expected a value from 0.04 to 3600."),
])
def test_out_of_range_values_are_usage_errors_naming_the_flag(job_args, flag, value, match):
    job_args[flag] = value
    assert usage_error(run_cli(*flags(job_args), timeout=120)).endswith("error: " + match)


def test_a_box_error_names_the_flag_as_typed_on_the_command_line(job_args):
    line = usage_error(run_cli(*flags(job_args), "--face-box", "50", "50", "10", "10", timeout=120))
    assert line.endswith("error: --face_box: got [50.0, 50.0, 10.0, 10.0], expected x0 < x1 and y0 < y1.")
    assert "option 'face_box'" not in line


def test_landmarks_file_that_is_not_json(job_args, tmp_path):
    landmarks = tmp_path / "points.json"
    landmarks.write_text("68 points, trust me")
    job_args["--landmarks"] = str(landmarks)
    assert "points.json is not JSON" in error_line(run_cli(*flags(job_args)))


def test_usage_errors_exit_2():
    proc = run_cli("--preprocess", "zoom", timeout=120)
    assert proc.returncode == 2 and "invalid choice: 'zoom'" in proc.stderr


def test_help_lists_the_official_flags():
    proc = run_cli("--help", timeout=120)
    assert proc.returncode == 0
    for flag in ("--driven_audio", "--source_image", "--ref_eyeblink", "--ref_pose", "--checkpoint_dir",
                 "--result_dir", "--pose_style", "--batch_size", "--size", "--expression_scale", "--input_yaw",
                 "--enhancer", "--background_enhancer", "--cpu", "--still", "--preprocess", "--verbose",
                 "--old_version", "--seed", "--no_blink", "--face_index", "--idle_seconds"):
        assert flag in proc.stdout
    # defaults are shown (they come from the option table)
    help_text = " ".join(proc.stdout.split())
    assert "--batch_size BATCH_SIZE, --batch-size BATCH_SIZE Frames rendered per network call" in help_text
    assert "(default: 2)" in help_text and "(default: crop)" in help_text


def test_flags_map_to_options(tmp_path):
    points = tmp_path / "lm.json"
    points.write_text(json.dumps([[float(i), float(i)] for i in range(68)]))
    args = build_parser().parse_args([
        "--still", "--preprocess", "full", "--input_yaw", "-20", "20", "--no_blink", "--face_box", "1", "2", "30",
        "40", "--landmarks", str(points), "--seed", "9", "--fps", "30", "--face3dvis", "--net_recon", "resnet50",
        "--bfm_folder", "BFM_Fitting", "--ref_video", "ref.mp4", "--ref_info", "all"])
    options = validate_options(options_from_args(args))
    assert options["still"] is True and options["preprocess"] == "full" and options["blink"] is False
    assert options["input_yaw"] == [-20.0, 20.0] and options["face_box"] == [1.0, 2.0, 30.0, 40.0]
    assert options["landmarks"][5] == [5.0, 5.0] and options["seed"] == 9 and options["fps"] == 30
    assert options["ref_video"] == "ref.mp4" and options["ref_info"] == "all"
    # defaults are the official ones
    defaults = validate_options(options_from_args(build_parser().parse_args([])))
    assert defaults == validate_options(blink=True)


def test_unreadable_landmarks_file(tmp_path):
    args = build_parser().parse_args(["--landmarks", str(tmp_path / "missing.json")])
    with pytest.raises(SadTalkerError, match="cannot read the landmarks file"):
        options_from_args(args)


def test_checkpoint_folder_defaults_to_the_environment_and_takes_both_spellings(monkeypatch, tmp_path):
    """The README's $SADTALKER_CHECKPOINTS is the CLI's default too; --checkpoint-dir (the app's and server's
    spelling) works as well as the official --checkpoint_dir."""
    from sadtalker_core.frontends.cli import build_parser

    monkeypatch.setenv("SADTALKER_CHECKPOINTS", str(tmp_path / "weights"))
    assert Path(build_parser().parse_args([]).checkpoint_dir) == tmp_path / "weights"
    for flag in ("--checkpoint_dir", "--checkpoint-dir"):
        assert build_parser().parse_args([flag, "w"]).checkpoint_dir == "w"


def test_seed_minus_one_means_random_everywhere():
    """-1 is the WebUIs' "random seed"; it was refused. It now means not set (a random seed, reported)."""
    from sadtalker_core.errors import OptionError
    from sadtalker_core.options import validate_options

    for value in (-1, "-1"):
        assert validate_options(seed=value)["seed"] is None
    assert validate_options(seed=7)["seed"] == 7
    with pytest.raises(OptionError, match="seed"):
        validate_options(seed=-2)


@pytest.mark.slow
def test_a_cli_run_writes_its_parameters_next_to_the_video(checkpoints_256, speech_clip, tmp_path, capsys):
    """The CLI writes the same parameters JSON as the other front ends (with the seed a random run used)."""
    from sadtalker_core.frontends import cli

    code = cli.main(["--source_image", str(golden.MEDIA / "happy.png"), "--driven_audio", str(speech_clip(0.04)),
                     "--checkpoint_dir", str(checkpoints_256), "--result_dir", str(tmp_path), "--face_detector",
                     "dlib", "--seed", "-1", "--quiet"])
    assert code == 0
    out, err = capsys.readouterr()
    video = Path(out.strip().splitlines()[-1])
    record = json.loads(video.with_suffix(".json").read_text())
    assert record["host"] == "cli" and record["video"] == video.name and record["source_image"] == "happy.png"
    assert isinstance(record["options"]["seed"], int) and record["info"]["num_frames"] == 1
    # the random seed it used is shown, so the run can be repeated
    assert f"seed {record['options']['seed']} (parameters in {video.stem}.json)" in err


# -- the flags are generated from the option table -----------------------------------------------------------

def _action(parser, option_string: str):
    return parser._option_string_actions[option_string]


def test_every_option_has_a_flag_with_the_tables_default_choices_and_help():
    from sadtalker_core.options import OPTIONS

    parser = build_parser()
    defaults = vars(parser.parse_args([]))
    for option in OPTIONS:
        if option.name == "landmarks":  # a JSON file on the command line: its own test below
            continue
        action = _action(parser, f"--{option.name}")
        assert action.dest == option.name and action.help == option.help, option.name
        assert defaults[option.name] == option.default, option.name
        if option.choices is not None:
            assert tuple(action.choices) == option.choices, option.name
        if option.kind == "box":
            assert action.nargs == 4
        if option.kind == "angles":
            assert action.nargs == "+"


def test_every_multi_word_flag_takes_both_spellings():
    parser = build_parser()
    multi_word = [s for s in parser._option_string_actions if "_" in s and not s.startswith("--no_")]
    assert "--pose_style" in multi_word and "--checkpoint_dir" in multi_word and "--driven_audio" in multi_word
    for flag in multi_word:
        assert _action(parser, flag) is _action(parser, flag.replace("_", "-")), flag
    args = parser.parse_args(["--pose-style", "3", "--expression-scale", "0.5", "--face-box", "1", "2", "3", "4",
                              "--source-image", "a.png", "--no-blink", "--watermark-position", "top-left"])
    assert (args.pose_style, args.expression_scale, args.face_box) == (3, 0.5, [1.0, 2.0, 3.0, 4.0])
    assert args.source_image == "a.png" and args.blink is False and args.watermark_position == "top-left"
    assert parser.parse_args(["--no_blink"]).blink is False and parser.parse_args([]).blink is True


def test_choice_flags_take_any_letter_case_like_the_table():
    assert build_parser().parse_args(["--enhancer", "restoreformer"]).enhancer == "RestoreFormer"


def test_help_shows_every_tables_default(monkeypatch):
    from sadtalker_core.options import OPTIONS

    monkeypatch.setenv("COLUMNS", "10000")  # no line wrapping inside the help texts ("face- alignment")
    help_text = " ".join(build_parser().format_help().split())
    for option in OPTIONS:
        if option.name != "landmarks":
            assert f"{' '.join(option.help.split())} (default: {option.default})" in help_text, option.name


# -- no input the user did not name ----------------------------------------------------------------------------

def test_a_missing_audio_is_a_usage_error_naming_the_flag():
    proc = run_cli("--source_image", str(MEDIA / "happy.png"), timeout=120)
    line = usage_error(proc)
    assert "--driven_audio is required" in line and "bus_chinese" not in proc.stderr


def test_a_missing_portrait_is_a_usage_error_naming_the_flag(speech_clip):
    line = usage_error(run_cli("--driven_audio", str(speech_clip(0.04)), timeout=120))
    assert "--source_image is required" in line


@pytest.mark.parametrize("argv, missing", [
    (["--source_image", "a.png", "--idle_seconds", "2"], None),
    (["--source_image", "a.png", "--ref_video", "r.mp4", "--ref_info", "all"], None),
    (["--source_image", "a.png", "--ref_video", "r.mp4", "--ref_info", "pose"], "--driven_audio"),
    (["--source_video", "v.mp4", "--driven_audio", "s.wav"], None),
    (["--source_video", "v.mp4"], "--driven_audio"),
    (["--driven_audio", "s.wav"], "--source_image"),
])
def test_which_inputs_a_command_needs(argv, missing):
    from sadtalker_core.frontends.cli import missing_input
    from sadtalker_core.options import GenerationConfig

    args = build_parser().parse_args(argv)
    problem = missing_input(args, GenerationConfig.from_options(options_from_args(args)))
    assert (problem is None) if missing is None else problem.startswith(f"{missing} is required")


def test_an_option_error_found_by_the_pipeline_names_the_flag(job_args):
    """A face box is judged against the picture only when the face is located; that error names the flag too."""
    line = error_line(run_cli(*flags(job_args), "--face-box", "8000", "8000", "9000", "9000"))
    assert line.startswith("error: --face_box: [8000.0, 8000.0, 9000.0, 9000.0] lies outside the 256x256 image"), line
