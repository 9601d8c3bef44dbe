"""Portrait + speech -> talking-head video: the whole SadTalker pipeline behind one call.

    talker = SadTalker("checkpoints")
    result = talker.generate("face.png", "speech.wav", preprocess="full", still=True, seed=7)

Stages: source image -> 68 landmarks -> crop/align -> 3DMM coefficients of the source; audio -> mel
windows; ExpNet + PoseVAE + blinks -> coefficients per frame; MappingNet -> keypoints -> renderer, in
batches that stream straight into the video encoder (memory stays flat for any audio length);
aspect restore / paste-back / optional face restoration on the way; AAC audio muxed in.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
import torch

from . import animate, audio, coeffs, image_io, paste, provenance, video
from .errors import AudioError, Cancelled, ImageError, InputError
from .face import align, crop, landmarks
from .models import SadTalkerModels, pick_device, pick_render_dtype
from .options import GenerationConfig

ProgressFn = Callable[[str, int, int], None]
#: receives the newest finished frame, (H, W, 3) uint8 RGB as written to the video, after each batch
PreviewFn = Callable[[np.ndarray], None]


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
            from .checkpoints import default_checkpoint_dir

            checkpoint_dir = default_checkpoint_dir()
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
        opts = GenerationConfig.from_options(config, **options).to_dict()
        if signing is None:
            signing = provenance.C2paCredentials.resolve()
        if opts["seed"] is None:
            # Runs vary like the original, but the seed used is reported so any run can be reproduced.
            opts["seed"] = int.from_bytes(os.urandom(6), "little")
        job = _Job(progress, cancel)
        started = time.perf_counter()
        out_path = self._output_path(result_dir, output_path)
        if source_video is not None:
            return self._dub(source_video, driven_audio, opts, out_path, job, started,
                             hooks=dict(preview=preview, on_frames=on_frames, signing=signing))

        try:
            # the cheap input checks come first: a wrong path must not wait for (or download) the networks
            job.stage("audio")
            features, audio_track = self._audio(driven_audio, opts)
            image = _load_source(source_image)

            job.stage("load")
            self.models.prepare(opts["size"], opts["preprocess"], progress=job.progress)

            job.stage("face")
            detector, detector_note = self._face_detector(opts)
            source = self._analyse_source(image, opts, detector)
            references = self._references(opts, None if opts["ref_info"] == "all" else features.num_frames, job,
                                          detector)

            job.stage("coeffs")
            generated = self._coefficients(features, source, references, opts)
            # created only now, so a call that fails on its inputs leaves no new folder behind either
            out_path.parent.mkdir(parents=True, exist_ok=True)
            if keep_intermediates:
                np.save(out_path.with_suffix(".coeffs.npy"), generated)

            rendered = self._render_video(image, source, generated, audio_track, opts, out_path, job,
                                          preview=preview, signing=signing, on_frames=on_frames,
                                          inputs=(source_image, audio_track))
        except BaseException:
            out_path.with_suffix(".coeffs.npy").unlink(missing_ok=True)
            raise
        job.finish()
        info = {
            "num_frames": int(generated.shape[0]),
            "fps": opts["fps"],
            "duration_s": generated.shape[0] / opts["fps"],
            "size": opts["size"],
            "device": str(self.device),
            "precision": str(self.render_dtype).replace("torch.", ""),
            "face_detector": detector_note or detector or "landmarks given",
            "seconds": {k: round(v, 3) for k, v in job.seconds.items()},
            "total_seconds": round(time.perf_counter() - started, 3),
            **rendered,
        }
        return GenerationResult(video_path=out_path, options=opts, info=info, crop_preview=source.frame)

    def _dub(self, source_video, driven_audio, opts: dict, out_path: Path, job: _Job, started: float,
             hooks: dict) -> GenerationResult:
        from . import dub

        def delivery(frame_size: tuple[int, int]) -> _Delivery:
            return _Delivery(opts, out_path, job, frame_size, ingredients=(
                (source_video, "source video"), (driven_audio, "driving audio")), **hooks)

        info, preview = dub.dub_video(self, source_video, driven_audio, opts, out_path, job, delivery)
        job.finish()
        info.update(device=str(self.device), precision=str(self.render_dtype).replace("torch.", ""),
                    seconds={k: round(v, 3) for k, v in job.seconds.items()},
                    total_seconds=round(time.perf_counter() - started, 3))
        return GenerationResult(video_path=out_path, options=opts, info=info, crop_preview=preview)

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

    def _face_detector(self, opts: dict) -> tuple[str | None, str]:
        """(landmark backend for this job, how "auto" chose it); no backend when landmarks are given and no
        reference video needs detection. Resolved once, so "auto" tries a download at most once per job."""
        needs_detection = opts["landmarks"] is None or any(
            opts[name] is not None for name in ("ref_eyeblink", "ref_pose", "ref_video"))
        if not needs_detection:
            return None, ""
        return landmarks.resolve_backend(opts["face_detector"], self.checkpoint_dir, download=self.models.download)

    def _analyse_source(self, image: np.ndarray, opts: dict, detector: str | None = None) -> "_Source":
        """Landmarks -> crop -> 224 alignment -> 3DMM coefficients (1, 73) of the source face."""
        face = landmarks.locate_face(image, backend=detector or opts["face_detector"], landmarks=opts["landmarks"],
                                     face_box=opts["face_box"], face_index=opts["face_index"],
                                     weights_dir=self.checkpoint_dir, device=str(self.device))
        cropped = crop.crop_face(image, face.landmarks68, opts["preprocess"], opts["size"])
        coeff = self._coeff_73([cropped.frame], [cropped.landmarks_in_frame])
        return _Source(frame=cropped.frame, crop_info=cropped.crop_info, coeff=coeff, region=cropped.region)

    def _coeff_73(self, frames, frame_landmarks) -> np.ndarray:
        """(N, 73) coefficients of square face frames, batched through the 3DMM regressor."""
        inputs, params = [], []
        for frame, lm in zip(frames, frame_landmarks):
            aligned, trans_params, _ = align.align_for_recon(frame, lm)
            inputs.append(align.recon_input(aligned))
            params.append(trans_params)
        out = []
        with torch.inference_mode():
            for start in range(0, len(inputs), _RECON_BATCH):
                batch = torch.from_numpy(np.concatenate(inputs[start:start + _RECON_BATCH])).to(self.device)
                out.append(self.models.face_recon()(batch).float().cpu().numpy())
        full = np.concatenate(out)
        return np.concatenate([align.coeff_73(full[i:i + 1], params[i]) for i in range(len(params))])

    def _references(self, opts: dict, num_frames: int | None, job: _Job, detector: str | None = None
                    ) -> dict[str, np.ndarray]:
        """Coefficients (N, 73) of each reference video named by the options, read once per path."""
        paths = {"ref_eyeblink": opts["ref_eyeblink"], "ref_pose": opts["ref_pose"], "ref_video": opts["ref_video"]}
        by_path: dict[str, np.ndarray] = {}
        out = {}
        for role, path in paths.items():
            if path is None:
                continue
            if path not in by_path:
                by_path[path] = self._video_coeffs(path, opts, num_frames, job, detector)
            out[role] = by_path[path]
        return out

    def _video_coeffs(self, path: str, opts: dict, max_frames: int | None, job: _Job, detector: str | None
                      ) -> np.ndarray:
        """Per-frame coefficients of a reference video: the crop of its first frame is used for every frame
        and landmarks are found again in each frame (official behaviour, at the reference size 256)."""
        frames = list(video.read_video_frames(path, max_frames=max_frames or _MAX_REFERENCE_FRAMES))
        if not frames:
            raise InputError(f"the reference video {path} has no frames; give another video.")
        detect = dict(backend=detector or opts["face_detector"], weights_dir=self.checkpoint_dir,
                      device=str(self.device))
        first = landmarks.locate_face(frames[0], **detect)
        region = crop.crop_face(frames[0], first.landmarks68, opts["preprocess"], _REFERENCE_SIZE).region
        x0, y0, x1, y1 = region
        crops, crop_landmarks, previous = [], [], first.landmarks68
        for i, frame in enumerate(frames):
            job.stage("reference", i, len(frames))
            faces = landmarks.detect_faces(frame, face_box=None, **detect) if i else [first]
            # a frame without a detectable face (blur, occlusion) reuses the previous frame's landmarks
            previous = faces[0].landmarks68 if faces else previous
            crops.append(cv2.resize(np.ascontiguousarray(frame[y0:y1, x0:x1]), (_REFERENCE_SIZE,) * 2,
                                    interpolation=cv2.INTER_LINEAR))
            crop_landmarks.append(crop.map_landmarks(previous, region, _REFERENCE_SIZE))
        return self._coeff_73(crops, crop_landmarks)

    def _audio(self, driven_audio, opts: dict) -> tuple[audio.AudioFeatures, Any]:
        """Mel windows for every frame, and what to mux as the sound track (a path or samples)."""
        fps = opts["fps"]
        if opts["idle_seconds"] is not None:
            features = audio.idle_features(max(1, int(opts["idle_seconds"] * fps)), fps)
            return features, features.wav
        if driven_audio is None and opts["ref_info"] == "all":
            driven_audio = opts["ref_video"]
        if driven_audio is None:
            raise AudioError("no driving audio was given; pass an audio file, or idle_seconds for a video "
                             "without speech.")
        if not isinstance(driven_audio, (str, os.PathLike)):
            raise AudioError(f"driven_audio must be a path to an audio file, got {type(driven_audio).__name__}.")
        return audio.prepare_audio(driven_audio, fps=fps), driven_audio

    def _coefficients(self, features: audio.AudioFeatures, source: "_Source", references: dict,
                      opts: dict) -> np.ndarray:
        seed = opts["seed"]
        windows = torch.from_numpy(features.windows).to(self.device)[None, :, None]
        generated = coeffs.generate_coeffs(
            self.models.expnet(), self.models.posevae(), windows, source.coeff,
            pose_style=opts["pose_style"], blink=opts["blink"], head_motion_scale=opts["head_motion_scale"],
            rng=random.Random(seed), generator=torch.Generator().manual_seed(seed),
            ref_eyeblink=references.get("ref_eyeblink"), ref_pose=references.get("ref_pose"),
            ref_video=references.get("ref_video"),
            ref_info=(opts["ref_info"] or "pose") if "ref_video" in references else None)
        # re-enactment ("all") follows the reference's length; the video follows the audio's
        return coeffs.tile_frames(generated, features.num_frames)

    def _render_video(self, image: np.ndarray, source: "_Source", generated: np.ndarray, audio_track,
                      opts: dict, out_path: Path, job: _Job, preview: PreviewFn | None = None,
                      signing: provenance.C2paCredentials | None = None, on_frames=None,
                      inputs: tuple = (None, None)) -> dict:
        size, preprocess = opts["size"], opts["preprocess"]
        num_frames = generated.shape[0]
        targets = animate.render_targets(generated, source.coeff, preprocess, opts["still"],
                                         opts["expression_scale"])
        cameras = {axis: animate.camera_sequence(opts[f"input_{axis}"], num_frames)
                   for axis in ("yaw", "pitch", "roll")}
        source_image = torch.from_numpy(align.recon_input(source.frame)).to(self.device)

        face_enhancer = upscaler = None
        if opts["enhancer"] is not None:
            from . import enhance

            face_enhancer = enhance.load_enhancer(opts["enhancer"], self.checkpoint_dir, self.device,
                                                  seed=opts["seed"])
            if opts["background_enhancer"] is not None:
                upscaler = enhance.load_enhancer(opts["background_enhancer"], self.checkpoint_dir, self.device)
        finish = _FrameFinisher(image, source.crop_info, preprocess, size, opts["blend"], self.device,
                                face_enhancer, upscaler)
        frame_size = finish.output_size
        delivery = _Delivery(opts, out_path, job, frame_size, preview=preview, on_frames=on_frames,
                             signing=signing, ingredients=_ingredients(inputs))

        def on_render(stage: str, done: int, total: int) -> None:
            job.stage(stage, done, total)

        # the source encoding and the first batch belong to "render" (timings, progress, cancellation)
        job.stage("render", 0, num_frames)

        with video.VideoWriter(out_path, frame_size, fps=opts["fps"], audio=audio_track,
                               duration=num_frames / opts["fps"], crf=opts["crf"], **delivery.writer_options()
                               ) as writer:
            for _, frames in animate.render_frames(
                    self.models.kp_detector(size), self.models.mapping_net(preprocess),
                    self.models.generator(size), source_image, animate.source_semantics(source.coeff, preprocess),
                    animate.semantic_windows(targets), yaw=cameras["yaw"], pitch=cameras["pitch"],
                    roll=cameras["roll"], batch_size=opts["batch_size"], dtype=self.render_dtype,
                    progress=on_render, cancel=job.cancel):
                delivery.write(writer, finish(frames))
        # output_size: what the file holds, padded to even sizes
        return {"output_size": list(writer.encoded_size), **delivery.info()}


def _ingredients(inputs: tuple) -> tuple:
    """(input, role) pairs for the C2PA manifest: the portrait (a file or a picture) and the sound file;
    idle-mode samples are no input file."""
    portrait, sound = inputs
    return (portrait, "source portrait"), (sound if isinstance(sound, (str, os.PathLike)) else None, "driving audio")


class _Delivery:
    """What every written frame and file gets on its way out, whichever path rendered it (a portrait or a
    dubbed video): the watermark, the live preview and frame hooks, the provenance tags and the signature."""

    def __init__(self, opts: dict, out_path: Path, job: _Job, frame_size: tuple[int, int], *,
                 preview: PreviewFn | None, on_frames: PreviewFn | None,
                 signing: provenance.C2paCredentials | None, ingredients: tuple = ()):
        self.preview, self.on_frames = preview, on_frames
        self.mark = None
        if opts["watermark"]:
            self.mark = provenance.Watermark(opts["watermark"], frame_size, opts["watermark_position"],
                                             opts["watermark_opacity"])
        self.digest = provenance.params_digest(opts)
        self.sign = None
        if signing is not None and out_path.suffix.lower() in (".mp4", ".m4v", ".mov"):
            provenance.require_c2pa()  # before any frame is rendered, not after the last

            def sign(encoded: Path, dest: Path) -> None:
                # the inputs are hashed only now: nothing the first frame does not need runs before it
                job.stage("sign")
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


class _FrameFinisher:
    """Rendered face frames (N, 3, S, S) in [0, 1] -> output frames (N, H, W, 3) uint8 on the device:
    face restoration, then paste-back (full modes) or the official aspect restore, with optional upscaling.

    In full modes the upscaler enlarges the (constant) background once and the face is restored straight
    to the enlarged box size, instead of upscaling every pasted frame.
    """

    def __init__(self, image: np.ndarray, crop_info, preprocess: str, size: int, blend: str,
                 device: torch.device, face_enhancer=None, upscaler=None):
        self.crop_info, self.size = crop_info, size
        self.face_enhancer, self.upscaler = face_enhancer, upscaler
        scale = upscaler.scale if upscaler is not None else 1
        self.face_box = _face_box_in_frame(crop_info, size) if preprocess.startswith("ext") else None
        self.paster = None
        if animate.is_full_mode(preprocess):
            background, box = image, paste.paste_box(crop_info, preprocess)
            if upscaler is not None:
                picture = torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255.0)
                background = animate.to_uint8(upscaler.enhance_frames(picture))[0].cpu().numpy()
                box = tuple(v * scale for v in box)
            self.paster = paste.Paster(background, box, blend=blend, device=device)
            self.face_size = (box[3] - box[1], box[2] - box[0])
            self.output_size = (background.shape[1], background.shape[0])
        else:
            width, height = paste.aspect_size(crop_info, size)
            self.output_size = (width * scale, height * scale)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if self.paster is not None:
            if self.face_enhancer is not None:
                frames = self.face_enhancer.enhance_frames(frames, self.face_box, out_size=self.face_size)
            return self.paster.paste(frames)
        if self.face_enhancer is not None:
            frames = self.face_enhancer.enhance_frames(frames, self.face_box)
        scale = 1
        if self.upscaler is not None:
            frames, scale = self.upscaler.enhance_frames(frames), self.upscaler.scale
        return animate.to_uint8(paste.restore_aspect_torch(frames, self.crop_info, self.size * scale))


def _face_box_in_frame(crop_info, size: int) -> tuple[float, float, float, float]:
    """The inner face box of an ext* crop in rendered-frame pixels (the frame shows the whole crop box)."""
    _, (clx, cly, crx, cry), (lx, ly, rx, ry) = crop_info
    sx, sy = size / (crx - clx), size / (cry - cly)
    return (lx * sx, ly * sy, rx * sx, ry * sy)


_MAX_REFERENCE_FRAMES = 25 * 60 * 10
_REFERENCE_SIZE = 256
_RECON_BATCH = 32


@dataclass
class _Source:
    frame: np.ndarray  # (size, size, 3) uint8: what the networks see
    crop_info: Any  # official crop tuple (paste-back, aspect restore)
    coeff: np.ndarray  # (1, 73)
    region: tuple  # original-image pixels shown in ``frame``


def _load_source(source_image) -> np.ndarray:
    """The source picture; a video file gives its first frame (as in the official code)."""
    try:
        return image_io.load_image(source_image)
    except ImageError as not_an_image:
        if not isinstance(source_image, (str, os.PathLike)):
            raise
        try:
            frames = list(video.read_video_frames(source_image, max_frames=1))
        except InputError:
            raise not_an_image from None
        if not frames:
            raise not_an_image
        return image_io.load_image(frames[0])
