"""The pipeline's stages as public functions with typed hand-offs.

    audio -> driving_audio()          AudioFeatures + the sound track to mux
    face  -> load_source(), analyse_source()       SourceFace (frame, crop, coefficients, region)
             reference_coefficients()              coefficients of reference videos
    coeffs -> motion_coefficients()   MotionCoefficients (per-frame rows + what the renderer needs)
    render -> render_portrait()       RenderedBatch after RenderedBatch, finished (restore, paste-back) and
                                      delivered

Each stage takes the ``models.ModelRuntime`` whose primitives it calls and its options as explicit
parameters, so ``SadTalker.generate``, dubbing, tests and benchmarks compose the same functions.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

import cv2
import numpy as np
import torch

from .errors import AudioError, ImageError, InputError
from .face import align, crop
from .face.crop import CropInfo
from .media import image_io, video
from .motion import audio, coeffs
from .options import Preprocess
from .progress import Stage
from .render import animate, paste
from .runtime.models import ModelRuntime

ProgressFn = Callable[[str, int, int], None]

#: faces per 3DMM regressor call
RECON_BATCH = 32
#: the longest reference video read (frames), and the size its frames are analysed at (official)
MAX_REFERENCE_FRAMES = 25 * 60 * 10
REFERENCE_SIZE = 256
#: option names of the reference videos, in the order they are read
REFERENCE_ROLES = ("ref_eyeblink", "ref_pose", "ref_video")


@dataclass(frozen=True)
class SourceFace:
    """The analysed source picture."""

    frame: np.ndarray  # (size, size, 3) uint8: what the networks see
    crop: CropInfo  # where ``frame`` lies in the picture (paste-back, aspect restore)
    coeff: np.ndarray  # (1, 73) 3DMM coefficients: expression, pose, crop parameters
    region: tuple  # original-image pixels shown in ``frame``


@dataclass(frozen=True)
class MotionCoefficients:
    """The animation of one clip, per frame."""

    coefficients: np.ndarray  # (T, 70) generated expression + pose (what ``keep_intermediates`` saves)
    targets: np.ndarray  # (T, C) render rows: expression scaled, crop parameters (full modes), still pose
    source_semantics: np.ndarray  # (1, C, 27) the source row over a window
    cameras: dict  # {"yaw" | "pitch" | "roll": (T,) free-view degrees or None}

    @property
    def num_frames(self) -> int:
        return int(self.coefficients.shape[0])


# -- audio ---------------------------------------------------------------------------------------------------

def driving_audio(driven_audio, *, fps: int, idle_seconds: Optional[float] = None,
                  ref_info: Optional[str] = None, ref_video=None) -> tuple[audio.AudioFeatures, Any]:
    """Mel windows for every frame, and what to mux as the sound track (a path or samples). Idle mode
    (``idle_seconds``) makes silence; re-enactment (``ref_info="all"``) speaks with the reference's sound."""
    if idle_seconds is not None:
        features = audio.idle_features(max(1, int(idle_seconds * fps)), fps)
        return features, features.wav
    if driven_audio is None and ref_info == "all":
        driven_audio = ref_video
    if driven_audio is None:
        raise AudioError("no driving audio was given; pass an audio file, or idle_seconds for a video "
                         "without speech.")
    if not isinstance(driven_audio, (str, os.PathLike)):
        raise AudioError(f"driven_audio must be a path to an audio file, got {type(driven_audio).__name__}.")
    return audio.prepare_audio(driven_audio, fps=fps), driven_audio


# -- face ----------------------------------------------------------------------------------------------------

def load_source(source_image) -> np.ndarray:
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


def face_backend(runtime: ModelRuntime, face_detector: str, *, landmarks=None,
                 references: Iterable[Any] = ()) -> tuple[Optional[str], str]:
    """(landmark backend for this job, how "auto" chose it); no backend when ``landmarks`` are given and no
    reference video needs detection. Resolved once, so "auto" tries a download at most once per job."""
    if landmarks is not None and all(path is None for path in references):
        return None, ""
    return runtime.landmark_backend(face_detector)


def face_coefficients(runtime: ModelRuntime, frames: Sequence[np.ndarray],
                      frame_landmarks: Sequence[np.ndarray]) -> np.ndarray:
    """(N, 73) coefficients of square face frames with their landmarks, batched through the 3DMM regressor."""
    inputs, params = [], []
    for frame, lm in zip(frames, frame_landmarks):
        aligned, trans_params, _ = align.align_for_recon(frame, lm)
        inputs.append(align.recon_input(aligned))
        params.append(trans_params)
    full = np.concatenate([runtime.recon_coefficients(torch.from_numpy(np.concatenate(inputs[i:i + RECON_BATCH])))
                           for i in range(0, len(inputs), RECON_BATCH)])
    return np.concatenate([align.coeff_73(full[i:i + 1], params[i]) for i in range(len(params))])


def analyse_source(runtime: ModelRuntime, image: np.ndarray, *, backend: str, preprocess: str, size: int,
                   landmarks=None, face_box=None, face_index: Optional[int] = None) -> SourceFace:
    """Landmarks -> crop -> 224 alignment -> 3DMM coefficients (1, 73) of the source face."""
    face = runtime.landmarks(image, backend, landmarks=landmarks, face_box=face_box, face_index=face_index)
    cropped = crop.crop_face(image, face.landmarks68, preprocess, size)
    coeff = face_coefficients(runtime, [cropped.frame], [cropped.landmarks_in_frame])
    return SourceFace(frame=cropped.frame, crop=cropped.crop_info, coeff=coeff, region=cropped.region)


def reference_coefficients(runtime: ModelRuntime, paths: dict, *, backend: str, preprocess: str,
                           max_frames: Optional[int] = None, progress: Optional[ProgressFn] = None
                           ) -> dict[str, np.ndarray]:
    """Coefficients (N, 73) of each reference video in ``paths`` ({role: path or None}, roles of
    ``REFERENCE_ROLES``), each path read once; ``max_frames`` limits how far (``None``: the whole video)."""
    by_path: dict[str, np.ndarray] = {}
    out = {}
    for role, path in paths.items():
        if path is None:
            continue
        if path not in by_path:
            by_path[path] = _video_coefficients(runtime, path, backend, preprocess, max_frames, progress)
        out[role] = by_path[path]
    return out


def _video_coefficients(runtime: ModelRuntime, path, backend: str, preprocess: str, max_frames: Optional[int],
                        progress: Optional[ProgressFn]) -> np.ndarray:
    """Per-frame coefficients of a reference video: the crop of its first frame is used for every frame
    and landmarks are found again in each frame (official behaviour, at the reference size 256)."""
    frames = list(video.read_video_frames(path, max_frames=max_frames or MAX_REFERENCE_FRAMES))
    if not frames:
        raise InputError(f"the reference video {path} has no frames; give another video.")
    first = runtime.landmarks(frames[0], backend)
    region = crop.crop_face(frames[0], first.landmarks68, preprocess, REFERENCE_SIZE).region
    x0, y0, x1, y1 = region
    crops, crop_landmarks, previous = [], [], first.landmarks68
    for i, frame in enumerate(frames):
        if progress is not None:
            progress(Stage.REFERENCE, i, len(frames))
        faces = runtime.faces(frame, backend) if i else [first]
        # a frame without a detectable face (blur, occlusion) reuses the previous frame's landmarks
        previous = faces[0].landmarks68 if faces else previous
        crops.append(cv2.resize(np.ascontiguousarray(frame[y0:y1, x0:x1]), (REFERENCE_SIZE,) * 2,
                                interpolation=cv2.INTER_LINEAR))
        crop_landmarks.append(crop.map_landmarks(previous, region, REFERENCE_SIZE))
    return face_coefficients(runtime, crops, crop_landmarks)


# -- coefficients --------------------------------------------------------------------------------------------

def motion_coefficients(runtime: ModelRuntime, features: audio.AudioFeatures, source: SourceFace,
                        references: dict, *, preprocess: str, seed: int, pose_style: int = 0, blink: bool = True,
                        head_motion_scale: float = 1.0, ref_info: Optional[str] = None, still: bool = False,
                        expression_scale: float = 1.0, input_yaw: Optional[Sequence[float]] = None,
                        input_pitch: Optional[Sequence[float]] = None,
                        input_roll: Optional[Sequence[float]] = None) -> MotionCoefficients:
    """ExpNet + PoseVAE + blinks (+ references) -> per-frame coefficients, and the render rows from them."""
    windows = torch.from_numpy(features.windows).to(runtime.device)[None, :, None]
    generated = coeffs.generate_coeffs(
        runtime.expnet(), runtime.posevae(), windows, source.coeff,
        pose_style=pose_style, blink=blink, head_motion_scale=head_motion_scale,
        rng=random.Random(seed), generator=torch.Generator().manual_seed(seed),
        ref_eyeblink=references.get("ref_eyeblink"), ref_pose=references.get("ref_pose"),
        ref_video=references.get("ref_video"),
        ref_info=(ref_info or "pose") if "ref_video" in references else None)
    # re-enactment ("all") follows the reference's length; the video follows the audio's
    generated = coeffs.tile_frames(generated, features.num_frames)
    num_frames = generated.shape[0]
    angles = {"yaw": input_yaw, "pitch": input_pitch, "roll": input_roll}
    return MotionCoefficients(
        coefficients=generated,
        targets=animate.render_targets(generated, source.coeff, preprocess, still, expression_scale),
        source_semantics=animate.source_semantics(source.coeff, preprocess),
        cameras={axis: animate.camera_sequence(values, num_frames) for axis, values in angles.items()})


# -- render --------------------------------------------------------------------------------------------------

def render_portrait(runtime: ModelRuntime, image: np.ndarray, source: SourceFace, motion: MotionCoefficients,
                    audio_track, out_path, delivery, *, size: int, preprocess: str, fps: float, crf: int,
                    batch_size: int, blend: str, seed: int, enhancer: Optional[str] = None,
                    background_enhancer: Optional[str] = None, progress: Optional[ProgressFn] = None,
                    cancel=None) -> dict:
    """Renders ``motion`` from the source face, finishes every frame (restoration, paste-back or aspect
    restore, upscaling) and streams it through ``delivery(frame_size)`` (an object with ``writer_options()``,
    ``write(writer, frames)`` and ``info()``) into the video at ``out_path``; returns the render info."""
    face_enhancer = upscaler = None
    if enhancer is not None:
        face_enhancer = runtime.enhancer(enhancer, seed=seed)
        if background_enhancer is not None:
            upscaler = runtime.enhancer(background_enhancer)
    finish = FrameFinisher(image, source.crop, preprocess, size, blend, runtime.device, face_enhancer, upscaler)
    out = delivery(finish.output_size)
    # the source encoding and the first batch belong to "render" (timings, progress, cancellation)
    if progress is not None:
        progress(Stage.RENDER, 0, motion.num_frames)
    source_image = torch.from_numpy(align.recon_input(source.frame))
    with video.VideoWriter(out_path, finish.output_size, fps=fps, audio=audio_track,
                           duration=motion.num_frames / fps, crf=crf, **out.writer_options()) as writer:
        for batch in runtime.render(source_image, motion.source_semantics, animate.semantic_windows(motion.targets),
                                    size, preprocess, batch_size=batch_size, progress=progress, cancel=cancel,
                                    **motion.cameras):
            out.write(writer, finish(batch.frames))
    # output_size: what the file holds, padded to even sizes
    return {"output_size": list(writer.encoded_size), **out.info()}


class FrameFinisher:
    """Rendered face frames (N, 3, S, S) in [0, 1] -> output frames (N, H, W, 3) uint8 on the device:
    face restoration, then paste-back (full modes) or the official aspect restore, with optional upscaling.

    In full modes the upscaler enlarges the (constant) background once and the face is restored straight
    to the enlarged box size, instead of upscaling every pasted frame.
    """

    def __init__(self, image: np.ndarray, crop_info: CropInfo, preprocess: str, size: int, blend: str,
                 device: torch.device, face_enhancer=None, upscaler=None):
        self.crop_info, self.size = crop_info, size
        self.face_enhancer, self.upscaler = face_enhancer, upscaler
        scale = upscaler.scale if upscaler is not None else 1
        self.face_box = crop_info.face_box_in_frame(size) if Preprocess(preprocess).shows_margin else None
        self.paster = None
        if Preprocess(preprocess).pastes_back:
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
