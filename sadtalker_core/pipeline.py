"""Portrait + speech -> talking-head video: the whole SadTalker pipeline behind one call.

    talker = SadTalker("checkpoints")
    result = talker.generate("face.png", "speech.wav", preprocess="full", still=True, seed=7)

Stages: source image -> 68 landmarks -> crop/align -> 3DMM coefficients of the source; audio -> mel
windows; ExpNet + PoseVAE + blinks -> coefficients per frame; MappingNet -> keypoints -> renderer, in
batches that stream straight into the video encoder (memory stays flat for any audio length);
aspect restore / paste-back / optional face restoration on the way; AAC audio muxed in.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import stages
from .errors import Cancelled, InputError
from .media import provenance, video
from .options import GenerationConfig
from .progress import Stage
from .runtime.models import ModelRuntime
from .stages import ProgressFn

#: receives the newest finished frame, (H, W, 3) uint8 RGB as written to the video, after each batch
PreviewFn = Callable[[np.ndarray], None]


@dataclass
class GenerationResult:
    video_path: Path
    config: GenerationConfig  # the options used, the seed of a random run included
    info: dict[str, Any] = field(default_factory=dict)
    crop_preview: np.ndarray | None = None

    @property
    def options(self) -> dict[str, Any]:
        """The options used as plain JSON values (what the parameters file records)."""
        return self.config.to_dict()


class _Job:
    """Progress and cancellation of one ``generate`` call."""

    def __init__(self, progress: ProgressFn | None, cancel):
        self.progress = progress
        self.cancel = cancel
        self.seconds: dict[str, float] = {}
        self._stage_start = time.perf_counter()
        self._stage = None

    def stage(self, name: str, done: int = 0, total: int = 1) -> None:
        self.check()
        now = time.perf_counter()
        if name != self._stage:
            if self._stage is not None:
                self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + now - self._stage_start
            self._stage, self._stage_start = name, now
        if self.progress is not None:
            self.progress(name, done, total)

    def finish(self) -> None:
        if self._stage is not None:
            self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + time.perf_counter() - self._stage_start
            self._stage = None

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled("generation was cancelled; nothing was saved.")


class SadTalker:
    """One set of loaded networks; ``generate`` may be called any number of times (not concurrently)."""

    def __init__(self, checkpoint_dir: str | os.PathLike | None = None, device=None,
                 dtype: torch.dtype | None = None, old_version: bool = False, download: bool = True):
        self.runtime = ModelRuntime(checkpoint_dir, device, dtype, old_version=old_version, download=download)

    @property
    def checkpoint_dir(self) -> Path:
        return self.runtime.checkpoint_dir

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    def unload(self) -> None:
        """Frees the networks, detectors and enhancers (and GPU memory); the next ``generate`` loads them again."""
        self.runtime.unload()

    # ------------------------------------------------------------------------------------------------------
    # ------------------------------------------------------------------------------------------------------
    def generate(self, source_image=None, driven_audio=None, *, source_video=None,
                 result_dir: str | os.PathLike | None = None,
                 output_path: str | os.PathLike | None = None, progress: ProgressFn | None = None,
                 cancel=None, keep_intermediates: bool = False, preview: PreviewFn | None = None,
                 signing: provenance.C2paCredentials | None = None,
                 on_frames: Callable[[np.ndarray], None] | None = None, config: GenerationConfig | None = None,
                 **options) -> GenerationResult:
        """Renders one video; returns its path, the options used (seed included) and an info dict.

        ``source_image`` animates a still picture; ``source_video`` dubs a video instead (see ``dub.py``):
        give exactly one of them. ``progress(stage, done, total)`` follows the stages; ``preview(frame)``
        (opt-in, nothing is copied without it) gets the newest finished frame after every rendered batch,
        pasted into the full picture in full modes. ``on_frames`` receives each batch of finished frames,
        (N, H, W, 3) uint8, as it is written (front ends that keep the frames themselves, such as the
        ComfyUI nodes). ``signing``: C2PA credentials; ``None`` reads $SADTALKER_C2PA_CERT / _KEY, and
        without any the video carries the AI-generated metadata only (``info["provenance"]`` says so).
        The options come as ``config`` (a ``GenerationConfig``, already checked: front ends validate once at
        their edge) and/or keyword arguments by option name (checked here, over ``config``).
        """
        if (source_image is None) == (source_video is None):
            raise InputError("give exactly one source: source_image (a picture to animate) or source_video (a "
                             "video to dub), " + ("not both." if source_video is not None else "none was given."))
        config = GenerationConfig.from_options(config, **options)
        if signing is None:
            signing = provenance.C2paCredentials.resolve()
        config = config.with_seed()  # a random run reports the seed it drew
        job = _Job(progress, cancel)
        started = time.perf_counter()
        out_path = self._output_path(result_dir, output_path)
        hooks = dict(preview=preview, on_frames=on_frames, signing=signing)
        if source_video is not None:
            return self._dub(source_video, driven_audio, config, out_path, job, started, hooks)
        pick, runtime = functools.partial(_pick, config), self.runtime
        try:
            # the cheap input checks come first: a wrong path must not wait for (or download) the networks
            job.stage(Stage.AUDIO)
            features, track = stages.driving_audio(driven_audio, **pick(*_AUDIO_OPTIONS))
            image = stages.load_source(source_image)
            job.stage(Stage.LOAD)
            runtime.prepare(config.size, config.preprocess, progress=job.progress)
            job.stage(Stage.FACE)
            paths = pick(*stages.REFERENCE_ROLES)
            detector, note = stages.face_backend(runtime, config.face_detector, landmarks=config.landmarks,
                                                 references=paths.values())
            backend = detector or config.face_detector
            source = stages.analyse_source(runtime, image, backend=backend, **pick(*_SOURCE_OPTIONS))
            references = stages.reference_coefficients(
                runtime, paths, backend=backend, preprocess=config.preprocess, progress=job.stage,
                max_frames=None if config.ref_info == "all" else features.num_frames)
            job.stage(Stage.COEFFS)
            motion = stages.motion_coefficients(runtime, features, source, references, **pick(*_MOTION_OPTIONS))
            # created only now, so a call that fails on its inputs leaves no new folder behind either
            out_path.parent.mkdir(parents=True, exist_ok=True)
            if keep_intermediates:
                np.save(out_path.with_suffix(".coeffs.npy"), motion.coefficients)
            delivery = functools.partial(_Delivery, config, out_path, job,
                                         ingredients=_ingredients((source_image, track)), **hooks)
            rendered = stages.render_portrait(runtime, image, source, motion, track, out_path, delivery,
                                              progress=job.stage, cancel=job.cancel, **pick(*_RENDER_OPTIONS))
        except BaseException:
            out_path.with_suffix(".coeffs.npy").unlink(missing_ok=True)
            raise
        job.finish()
        info = {"num_frames": motion.num_frames, "fps": config.fps, "duration_s": motion.num_frames / config.fps,
                "size": config.size, "face_detector": note or detector or "landmarks given",
                **self._run_info(job, started), **rendered}
        return GenerationResult(video_path=out_path, config=config, info=info, crop_preview=source.frame)

    def _run_info(self, job: _Job, started: float) -> dict:
        return {"device": str(self.device), "precision": str(self.runtime.render_dtype).replace("torch.", ""),
                "seconds": {k: round(v, 3) for k, v in job.seconds.items()},
                "total_seconds": round(time.perf_counter() - started, 3)}

    def _dub(self, source_video, driven_audio, config: GenerationConfig, out_path: Path, job: _Job, started: float,
             hooks: dict) -> GenerationResult:
        from . import dub

        def delivery(frame_size: tuple[int, int]) -> _Delivery:
            return _Delivery(config, out_path, job, frame_size, ingredients=(
                (source_video, "source video"), (driven_audio, "driving audio")), **hooks)

        info, preview = dub.dub_video(self.runtime, source_video, driven_audio, config, out_path, job, delivery)
        job.finish()
        info.update(self._run_info(job, started))
        return GenerationResult(video_path=out_path, config=config, info=info, crop_preview=preview)

    # -- stages -------------------------------------------------------------------------------------------
    @staticmethod
    def _output_path(result_dir, output_path) -> Path:
        if output_path is not None:
            path = Path(output_path)
        else:
            folder = Path(result_dir if result_dir is not None else "results")
            stamp = datetime.now().strftime("%Y_%m_%d_%H.%M.%S")
            path = folder / f"{stamp}.mp4"
            n = 1
            while path.exists():
                path = folder / f"{stamp}_{n}.mp4"
                n += 1
        return path


def _ingredients(inputs: tuple) -> tuple:
    """(input, role) pairs for the C2PA manifest: the portrait (a file or a picture) and the sound file;
    idle-mode samples are no input file."""
    portrait, sound = inputs
    return (portrait, "source portrait"), (sound if isinstance(sound, (str, os.PathLike)) else None, "driving audio")


class _Delivery:
    """What every written frame and file gets on its way out, whichever path rendered it (a portrait or a
    dubbed video): the watermark, the live preview and frame hooks, the provenance tags and the signature."""

    def __init__(self, config: GenerationConfig, out_path: Path, job: _Job, frame_size: tuple[int, int], *,
                 preview: PreviewFn | None, on_frames: PreviewFn | None,
                 signing: provenance.C2paCredentials | None, ingredients: tuple = ()):
        self.preview, self.on_frames = preview, on_frames
        self.mark = None
        if config.watermark:
            self.mark = provenance.Watermark(config.watermark, frame_size, config.watermark_position,
                                             config.watermark_opacity)
        self.digest = provenance.params_digest(config.to_dict())
        self.sign = None
        if signing is not None and out_path.suffix.lower() in (".mp4", ".m4v", ".mov"):
            provenance.require_c2pa()  # before any frame is rendered, not after the last

            def sign(encoded: Path, dest: Path) -> None:
                # the inputs are hashed only now: nothing the first frame does not need runs before it
                job.stage(Stage.SIGN)
                found = [provenance.Ingredient.of(item, role) for item, role in ingredients]
                manifest = provenance.c2pa_manifest(out_path.name, [i for i in found if i], self.digest)
                provenance.sign_mp4(encoded, dest, signing, manifest)

            self.sign = sign
            self.credentials = f"signed content credentials (C2PA, {signing.cert.name})"
        else:
            self.credentials = provenance.NO_CREDENTIALS_NOTE

    def writer_options(self) -> dict:
        """``VideoWriter`` arguments: the AI-generated tags in the encode, the signature after it."""
        return {"metadata": provenance.mp4_metadata(self.digest), "finalize": self.sign}

    def write(self, writer: video.VideoWriter, frames) -> None:
        """(N, H, W, 3) uint8 frames (torch or numpy) marked, shown and written."""
        if self.mark is not None:
            self.mark.apply(frames)
        batch = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else frames
        if self.preview is not None:
            self.preview(batch[-1].copy())
        writer.write(batch)
        if self.on_frames is not None:
            self.on_frames(batch)

    def info(self) -> dict:
        return {"params_sha256": self.digest, "provenance": self.credentials}


#: the options each stage takes by name (``generate`` hands them over from the validated options)
_AUDIO_OPTIONS = ("fps", "idle_seconds", "ref_info", "ref_video")
_SOURCE_OPTIONS = ("preprocess", "size", "landmarks", "face_box", "face_index")
_MOTION_OPTIONS = ("preprocess", "seed", "pose_style", "blink", "head_motion_scale", "ref_info", "still",
                   "expression_scale", "input_yaw", "input_pitch", "input_roll")
_RENDER_OPTIONS = ("size", "preprocess", "fps", "crf", "batch_size", "blend", "seed", "enhancer",
                   "background_enhancer")


def _pick(config: GenerationConfig, *names: str) -> dict:
    """{name: value} of these options, for a stage's keyword parameters."""
    return {name: getattr(config, name) for name in names}
