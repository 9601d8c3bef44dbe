"""Stage 1 parity (audio -> samples -> mel -> per-frame windows), driven by the kit's ``stages/s1_*.json``."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import golden
import tolerances
from sadtalker_core.motion import audio
from sadtalker_core.media import ffmpeg_io

SIDECARS = golden.sidecars("stages", "s1_*.json")
_AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".m4a", ".ogg")


def _clip_path(meta: dict, sidecar: Path) -> Path:
    """The audio clip a stage-1 sidecar was made from: a kit-relative path named in one of its text fields,
    else the only audio file beside the sidecar."""
    for value in meta.values():
        if not isinstance(value, str):
            continue
        for token in re.findall(r"[\w./-]+", value):
            if token.lower().endswith(_AUDIO_EXTENSIONS):
                for base in (golden.kit_dir(), sidecar.parent):
                    if (base / token).is_file():
                        return base / token
    beside = [p for p in sidecar.parent.iterdir() if p.suffix.lower() in _AUDIO_EXTENSIONS]
    if len(beside) != 1:
        pytest.fail(f"{sidecar.name}: cannot tell which audio clip it was made from ({beside})")
    return beside[0]


def _native_rate(path: Path) -> int | None:
    streams = ffmpeg_io.parse_report(ffmpeg_io.read_report(path))["audio"]
    return streams[0]["sample_rate"] if streams else None


@pytest.mark.parity
@pytest.mark.skipif(not SIDECARS, reason="no stages/s1_*.json in the golden kit")
@pytest.mark.parametrize("sidecar", SIDECARS, ids=lambda p: p.stem)
def test_stage1_audio_features(sidecar: Path):
    meta, arrays = golden.load_sidecar(sidecar)
    fps, sample_rate = float(meta["fps"]), int(meta["sample_rate"])
    clip = _clip_path(meta, sidecar)
    name = sidecar.with_suffix(".npz").name

    wav = audio.load_audio(clip, sample_rate)
    # without resampling the official samples are int16/32768 averaged: bit-exact; resampled kits are only close
    compare_wav = tolerances.exact if _native_rate(clip) == sample_rate else tolerances.close
    compare_wav(name, "wav_loaded", wav, arrays["wav_loaded"])

    features = audio.prepare_audio(clip, fps=fps)
    assert features.num_frames == int(meta["num_frames"])
    compare_wav(name, "wav_cropped", features.wav, arrays["wav_cropped"])
    tolerances.mel(name, "orig_mel", features.mel, arrays["orig_mel"])
    golden_windows = arrays["indiv_mels"]
    assert features.windows.dtype == golden_windows.dtype == np.float32
    tolerances.mel(name, "indiv_mels", features.windows.reshape(golden_windows.shape), golden_windows)


@pytest.mark.parity
@pytest.mark.skipif(not SIDECARS, reason="no stages/s1_*.json in the golden kit")
@pytest.mark.parametrize("sidecar", SIDECARS, ids=lambda p: p.stem)
def test_stage1_mel_from_golden_samples(sidecar: Path):
    """Mel and windows from the kit's own cropped samples and mel, so decoding cannot hide an error here."""
    meta, arrays = golden.load_sidecar(sidecar)
    name = sidecar.with_suffix(".npz").name
    num_frames = int(meta["num_frames"])
    tolerances.mel(name, "orig_mel(from wav_cropped)", audio.mel_spectrogram(arrays["wav_cropped"]),
                   arrays["orig_mel"])
    windows = audio.mel_windows(arrays["orig_mel"], num_frames, fps=float(meta["fps"]))
    tolerances.mel(name, "indiv_mels(from orig_mel)", windows.reshape(arrays["indiv_mels"].shape),
                   arrays["indiv_mels"])
