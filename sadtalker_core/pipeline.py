"""Portrait + speech -> talking-head video: the whole SadTalker pipeline behind one call.

    talker = SadTalker("checkpoints")
    result = talker.generate("face.png", "speech.wav", preprocess="full", still=True, seed=7)

Stages: source image -> 68 landmarks -> crop/align -> 3DMM coefficients of the source; audio -> mel
windows; ExpNet + PoseVAE + blinks -> coefficients per frame; MappingNet -> keypoints -> renderer, in
batches that stream straight into the video encoder (memory stays flat for any audio length);
aspect restore / paste-back / optional face restoration on the way; AAC audio muxed in.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import animate, audio, coeffs, image_io, paste, video
from .errors import AudioError, Cancelled, InputError, OptionError
from .face import align, crop, landmarks
from .models import SadTalkerModels, pick_device, pick_render_dtype
from .options import validate_options

ProgressFn = Callable[[str, int, int], None]


@dataclass
class GenerationResult:
    video_path: Path
    options: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    crop_preview: np.ndarray | None = None


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
        if checkpoint_dir is None:
            checkpoint_dir = os.environ.get("SADTALKER_CHECKPOINTS", "checkpoints")
        self.device = pick_device(device)
        self.render_dtype = pick_render_dtype(self.device, dtype)
        self.models = SadTalkerModels(checkpoint_dir, self.device, self.render_dtype,
                                      old_version=old_version, download=download)

    @property
    def checkpoint_dir(self) -> Path:
        return self.models.checkpoint_dir

    def unload(self) -> None:
        """Frees the networks (and GPU memory); the next ``generate`` loads them again."""
        self.models.unload()

    # ------------------------------------------------------------------------------------------------------
    def generate(self, source_image, driven_audio=None, *, result_dir: str | os.PathLike | None = None,
                 output_path: str | os.PathLike | None = None, progress: ProgressFn | None = None,
                 cancel=None, keep_intermediates: bool = False, **options) -> GenerationResult:
        opts = validate_options(options)
        if opts["seed"] is None:
            # Runs vary like the original, but the seed used is reported so any run can be reproduced.
            opts["seed"] = int.from_bytes(os.urandom(6), "little")
        job = _Job(progress, cancel)
        started = time.perf_counter()
        out_path = self._output_path(result_dir, output_path)

        job.stage("load")
        self.models.prepare(opts["size"], opts["preprocess"])

        job.stage("face")
        image = image_io.load_image(source_image)
        source = self._analyse_source(image, opts)
        reference = self._reference_motion(opts, source, job)

        job.stage("audio")
        features, audio_source = self._audio(driven_audio, opts, reference)

        job.stage("coeffs")
        generated = self._coefficients(features, source, reference, opts)

        result_info = self._render_video(image, source, generated, audio_source, features, opts, out_path, job)
        job.finish()
        info = {
            "num_frames": int(generated.shape[0]),
            "fps": opts["fps"],
            "duration_s": generated.shape[0] / opts["fps"],
            "size": opts["size"],
            "device": str(self.device),
            "render_dtype": str(self.render_dtype).replace("torch.", ""),
            "seconds": {k: round(v, 3) for k, v in job.seconds.items()},
            "total_seconds": round(time.perf_counter() - started, 3),
            **result_info,
        }
        if keep_intermediates:
            np.save(out_path.with_suffix(".coeffs.npy"), generated)
        return GenerationResult(video_path=out_path, options=opts, info=info, crop_preview=source.frame)

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
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def _analyse_source(self, image: np.ndarray, opts: dict):
        """Landmarks -> crop -> 224 alignment -> 3DMM coefficients (1, 73) of the source face."""
        if opts["landmarks"] is not None:
            points = np.asarray(opts["landmarks"], dtype=np.float32)
        else:
            faces = landmarks.detect_faces(image, backend=opts["face_detector"], face_box=opts["face_box"],
                                           model_dir=self.checkpoint_dir)
            points = landmarks.select_face(faces, opts["face_index"]).landmarks
        cropped = crop.crop_face(image, points, opts["preprocess"], opts["size"])
        coeff = self._coeff_73([cropped])[0:1]
        return _Source(frame=cropped.frame, crop_info=cropped.crop_info, coeff=coeff, landmarks=points)

    def _coeff_73(self, crops) -> np.ndarray:
        """(N, 73) coefficients for cropped frames (batched through the 3DMM regressor)."""
        aligned, params = [], []
        for c in crops:
            a, trans_params, _ = align.align_for_recon(c.frame, c.landmarks_in_frame)
            aligned.append(a)
            params.append(trans_params)
        batch = torch.from_numpy(np.stack(aligned)).permute(0, 3, 1, 2).float().div(255.0).to(self.device)
        with torch.inference_mode():
            full = self.models.face_recon()(batch).float().cpu().numpy()
        return np.stack([align.coeff_73(full[i:i + 1], params[i])[0] for i in range(len(crops))])

    def _reference_motion(self, opts: dict, source, job: _Job):
        """Coefficients (N, 73) of the reference videos, keyed by use ("pose", "blink", "all")."""
        uses: dict[str, str] = {}
        if opts["ref_video"] is not None:
            info = opts["ref_info"] or "pose"
            for use in ("pose", "blink", "all"):
                if use in info.split("+") or info == use:
                    uses[use] = opts["ref_video"]
        if opts["ref_pose"] is not None:
            uses["pose"] = opts["ref_pose"]
        if opts["ref_eyeblink"] is not None:
            uses["blink"] = opts["ref_eyeblink"]
        done: dict[str, np.ndarray] = {}
        by_path: dict[str, np.ndarray] = {}
        for use, path in uses.items():
            if path not in by_path:
                by_path[path] = self._video_coeffs(path, opts, job)
            done[use] = by_path[path]
        return done

    def _video_coeffs(self, path: str, opts: dict, job: _Job) -> np.ndarray:
        frames = list(video.read_video_frames(path, max_frames=_MAX_REFERENCE_FRAMES))
        if not frames:
            raise InputError(f"the reference video {path} has no frames; give another video.")
        first = landmarks.select_face(
            landmarks.detect_faces(frames[0], backend=opts["face_detector"], model_dir=self.checkpoint_dir), 0)
        box = crop.reference_crop(frames[0], first.landmarks, opts["preprocess"])
        crops = []
        for i, frame in enumerate(frames):
            job.stage("reference", i, len(frames))
            faces = landmarks.detect_faces(frame, backend=opts["face_detector"], model_dir=self.checkpoint_dir)
            lm = faces[0].landmarks if faces else (crops[-1].source_landmarks if crops else first.landmarks)
            crops.append(crop.crop_with(frame, lm, box, 256))
        out = []
        for start in range(0, len(crops), 32):
            out.append(self._coeff_73(crops[start:start + 32]))
        return np.concatenate(out)

    def _audio(self, driven_audio, opts: dict, reference):
        """Mel windows for every frame, and the audio to mux (a path, or None for silence)."""
        fps = opts["fps"]
        if opts["idle_seconds"] is not None:
            num_frames = max(1, int(opts["idle_seconds"] * fps))
            return audio.idle_features(num_frames, fps), None
        if driven_audio is None and "all" in reference:
            driven_audio = opts["ref_video"]
        if driven_audio is None:
            raise AudioError("no driving audio was given; pass an audio file, or idle_seconds for a video "
                             "without speech.")
        if not isinstance(driven_audio, (str, os.PathLike)):
            raise AudioError(f"driven_audio must be a file path, got {type(driven_audio).__name__}.")
        features = audio.prepare_audio(driven_audio, fps=fps)
        return features, driven_audio

    def _coefficients(self, features, source, reference, opts: dict) -> np.ndarray:
        seed = opts["seed"]
        return coeffs.generate_coeffs(
            expnet=self.models.expnet(), posevae=self.models.posevae(), windows=features.windows,
            source_coeff=source.coeff, pose_style=opts["pose_style"], blink=opts["blink"],
            head_motion_scale=opts["head_motion_scale"], ref_pose=reference.get("pose"),
            ref_blink=reference.get("blink"), ref_all=reference.get("all"),
            rng=random.Random(seed), generator=torch.Generator().manual_seed(seed), device=self.device)

    def _render_video(self, image, source, generated, audio_source, features, opts, out_path, job) -> dict:
        size, preprocess = opts["size"], opts["preprocess"]
        num_frames = generated.shape[0]
        targets = animate.render_targets(generated, source.coeff, preprocess, opts["still"],
                                         opts["expression_scale"])
        windows = animate.semantic_windows(targets)
        source_windows = animate.semantic_windows(animate.source_semantics(source.coeff, preprocess))[:1]
        cameras = {axis: animate.camera_sequence(opts[f"input_{axis}"], num_frames)
                   for axis in ("yaw", "pitch", "roll")}
        source_tensor = torch.from_numpy(np.ascontiguousarray(source.frame)).permute(2, 0, 1)[None]
        source_tensor = source_tensor.float().div(255.0).to(self.device)

        full_mode = "full" in preprocess
        paster = paste.Paster(image, source.crop_info, preprocess, blend=opts["blend"],
                              device=self.device) if full_mode else None
        enhancer = None
        if opts["enhancer"] is not None:
            from . import enhance

            enhancer = enhance.load_enhancer(opts["enhancer"], self.checkpoint_dir, self.device,
                                             background=opts["background_enhancer"])
        frame_size = paster.output_size if full_mode else paste.restored_size(source.crop_info, size)
        if enhancer is not None and not full_mode:
            frame_size = (frame_size[0] * enhancer.scale, frame_size[1] * enhancer.scale)

        def on_render(done: int, total: int) -> None:
            job.stage("render", done, total)

        with video.VideoWriter(out_path, frame_size, fps=opts["fps"], audio=audio_source,
                               duration=num_frames / opts["fps"], crf=opts["crf"]) as writer:
            with torch.inference_mode():
                for _, frames in animate.render_frames(
                        kp_detector=self.models.kp_detector(size), generator=self.models.generator(size),
                        mapping_net=self.models.mapping_net(preprocess), source_image=source_tensor,
                        source_semantics=torch.from_numpy(source_windows).to(self.device),
                        target_windows=windows, cameras=cameras, batch_size=opts["batch_size"],
                        dtype=self.render_dtype, progress=on_render, cancel=job.cancel):
                    if enhancer is not None and not full_mode:
                        frames = enhancer.enhance(frames)
                    if full_mode:
                        out = paster.paste(frames, enhancer=enhancer)
                    else:
                        out = paste.restore_aspect(frames, source.crop_info, size)
                    writer.write(animate.to_uint8(out) if out.dtype != torch.uint8 else out)
        return {"output_size": list(frame_size)}


_MAX_REFERENCE_FRAMES = 25 * 60 * 10


@dataclass
class _Source:
    frame: np.ndarray
    crop_info: Any
    coeff: np.ndarray
    landmarks: np.ndarray
