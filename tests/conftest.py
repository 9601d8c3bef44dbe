"""Shared fixtures: the golden kit, real media, synthetic checkpoints in the official file formats."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import golden  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

#: official file name -> manifest (relative to the kit)
NEW_SET = ("SadTalker_V0.0.2_256.safetensors", "SadTalker_V0.0.2_512.safetensors",
           "mapping_00229-model.pth.tar", "mapping_00109-model.pth.tar")
OLD_SET = ("auido2exp_00300-model.pth", "auido2pose_00140-model.pth", "facevid2vid_00189-model.pth.tar",
           "epoch_20.pth", "mapping_00229-model.pth.tar", "mapping_00109-model.pth.tar")


@pytest.fixture(scope="session")
def kit() -> Path:
    path = golden.kit_dir()
    if not path.is_dir():
        pytest.fail(f"golden kit not found at {path} (set SADTALKER_GOLDEN_DIR)")
    return path


@pytest.fixture(scope="session")
def media() -> Path:
    if not golden.MEDIA.is_dir():
        pytest.fail(f"test media not found at {golden.MEDIA}")
    return golden.MEDIA


class CheckpointFactory:
    """Writes synthetic checkpoints under their official names, in their official containers, once per
    (seed, file) for the whole session. Files are hard-linked into each requested folder."""

    def __init__(self, root: Path):
        self.root = root

    def file(self, name: str, seed: int = 0) -> Path:
        target = self.root / f"seed{seed}" / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            sw = golden.synth_weights()
            manifest = sw.load_manifest(str(golden.kit_dir() / "manifests" / f"{name}.json"))
            partial = target.with_name(target.name + ".partial")
            sw.save_checkpoint(manifest, str(partial), seed=seed)
            partial.rename(target)
        return target

    def folder(self, dest: Path, names=NEW_SET, seed: int = 0) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        for name in names:
            link = dest / name
            if not link.exists():
                try:
                    os.link(self.file(name, seed), link)
                except OSError:
                    shutil.copyfile(self.file(name, seed), link)
        return dest


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory) -> CheckpointFactory:
    return CheckpointFactory(tmp_path_factory.mktemp("synthetic_checkpoints"))


@pytest.fixture(scope="session")
def checkpoints_256(checkpoint_factory, tmp_path_factory) -> Path:
    """A checkpoint folder with the 256 safetensors and both mapping files (seed 0)."""
    return checkpoint_factory.folder(tmp_path_factory.mktemp("ckpt256"), names=(
        "SadTalker_V0.0.2_256.safetensors", "mapping_00229-model.pth.tar", "mapping_00109-model.pth.tar"))


@pytest.fixture(scope="session")
def sadtalker_256(checkpoints_256):
    """One ``SadTalker`` on the CPU over ``checkpoints_256``, shared so its networks load once per session."""
    from sadtalker_core import SadTalker

    return SadTalker(checkpoints_256, device="cpu")


@pytest.fixture(scope="session")
def speech_clip(media, tmp_path_factory):
    """``speech_clip(seconds)``: path of the first ``seconds`` of RD_Radio31_000.wav (cut once per length
    with the bundled ffmpeg, stream-copied PCM, so the samples are the original's)."""
    import subprocess

    import imageio_ffmpeg

    folder = tmp_path_factory.mktemp("speech_clips")

    def cut(seconds: float) -> Path:
        target = folder / f"speech_{seconds:.3f}s.wav"
        if not target.exists():
            subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-i",
                            str(media / "RD_Radio31_000.wav"), "-t", f"{seconds}", "-c:a", "pcm_s16le",
                            str(target)], check=True, capture_output=True)
        return target

    return cut


def pytest_terminal_summary(terminalreporter):
    if not golden.CHECKED:
        return
    terminalreporter.section("golden files checked")
    for file, array, stats in golden.CHECKED:
        terminalreporter.write_line(f"{file}:{array}: {stats}")
