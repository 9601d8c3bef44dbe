"""Dubbing: an existing video + new speech -> the same video whose lips follow the speech.

Every frame of the video is a source. Its face is tracked (landmarks per frame, smoothed over time so the
crop does not jitter); its own 3DMM coefficients give the pose and the crop, ExpNet gives the expression
from the speech with the frame's own expression as reference; the face is rendered from that frame and
pasted back into it (``paste.Paster``, the usual ``blend`` modes). With ``mouth_only`` (default) only a
feathered lower-face region around the mouth, from the frame's landmarks, takes the rendered pixels, so
the video's own eyes, blinks and brows stay. Frames without a face pass through untouched.

The output follows the audio: a shorter audio cuts the video, a longer one runs it forward and backward
(ping-pong, no jump). Frames are decoded once into an unnamed temporary file (deleted by the OS even if
the process dies) and read back one at a time, so memory stays flat in the video's length; only the
small per-frame arrays (landmarks, coefficients) grow with it.
"""

from __future__ import annotations

import os
import random
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np
import torch
from scipy.ndimage import gaussian_filter1d

from . import stages
from .errors import InputError, NoFaceError, OptionError, VideoError
from .face import align, crop, landmarks
from .media import video
from .motion import audio, coeffs
from .options import NOT_WITH_VIDEO, GenerationConfig, Preprocess
from .progress import Stage
from .render import animate, paste
from .runtime.models import ModelRuntime

#: temporal smoothing of the tracked landmarks (in frames): removes detector jitter, keeps head motion
TRACK_SMOOTH_SIGMA = 1.5
#: a detection overlapping the previous frame's face less than this is another face (the tracked one is lost)
TRACK_MIN_IOU = 0.2
#: lower-face polygon of the mouth_only region: jaw points 2..14 (cheek to cheek below the cheekbones) and
#: the nostrils 31..35; the mouth (48..67) lies inside it
_LOWER_FACE = list(range(2, 15)) + list(range(31, 36))
#: feather of the mouth_only region, as a share of the face width (jaw point 2 to 14)
MOUTH_FEATHER = 0.06
#: sample rate of the mixed sound track when the video's own audio is kept under the speech
_MIX_RATE = 48000


def check_options(config: GenerationConfig) -> None:
    """Refuses options that have no meaning when the source is a video (the video gives pose and blinks)."""
    given = [name for name in NOT_WITH_VIDEO if getattr(config, name) is not None]
    if given:
        problem = ("cannot be used when dubbing a video: dubbing takes the head pose, eyes and face position from "
                   "the video itself. Remove it, or animate a still image instead.")
        raise OptionError(f"option(s) {', '.join(given)} cannot be used with source_video: dubbing takes the "
                          "head pose, eyes and face position from the video itself. Remove them, or animate a "
                          "still image (source_image) instead.", option=given[0], problem=problem)


def paste_mode(preprocess: str) -> str:
    """Dubbing always pastes back into the frame: ``extfull`` for the ext* modes (larger box), else ``full``."""
    return "extfull" if Preprocess(preprocess).shows_margin else "full"


def pingpong_indices(num_output: int, num_frames: int) -> np.ndarray:
    """Video frame shown at each output frame: 0, 1, .., n-1, n-2, .., 1, 0, 1, .. cut to ``num_output``."""
    t = np.arange(num_output)
    if num_frames <= 1:
        return np.zeros(num_output, dtype=np.int64)
    period = 2 * num_frames - 2
    phase = t % period
    return np.where(phase < num_frames, phase, period - phase).astype(np.int64)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


class FaceTracker:
    """Follows one face through the frames: the first frame with faces picks it (``face_index``, 0 =
    largest), later frames take the detection overlapping it most; none overlapping enough = no face."""

    def __init__(self, face_index: int | None = None):
        self.face_index = face_index
        self.box: tuple | None = None

    def __call__(self, faces: Sequence[landmarks.Face]) -> np.ndarray | None:
        if not faces:
            return None
        if self.box is None:
            face = landmarks.select_face(faces, self.face_index)
        else:
            face = max(faces, key=lambda f: _iou(f.box, self.box))
            if _iou(face.box, self.box) < TRACK_MIN_IOU:
                return None
        self.box = face.box
        return np.asarray(face.landmarks68, dtype=np.float32)


def smooth_tracks(points: np.ndarray, found: np.ndarray, sigma: float = TRACK_SMOOTH_SIGMA) -> np.ndarray:
    """Landmarks (N, 68, 2) smoothed over time with a Gaussian, separately in each run of frames with a face
    (a cut or a lost face must not blend two different positions)."""
    out = np.array(points, dtype=np.float32, copy=True)
    start = 0
    while start < len(found):
        if not found[start]:
            start += 1
            continue
        stop = start
        while stop < len(found) and found[stop]:
            stop += 1
        if stop - start > 1 and sigma > 0:
            out[start:stop] = gaussian_filter1d(points[start:stop].astype(np.float64), sigma, axis=0,
                                                mode="nearest")
        start = stop
    return out


def mouth_mask(lm: np.ndarray, height: int, width: int) -> np.ndarray:
    """Feathered lower-face weight (H, W) float32 in [0, 1] around the mouth, from 68 frame landmarks."""
    polygon = cv2.convexHull(np.round(lm[_LOWER_FACE]).astype(np.int32))
    mask = np.zeros((height, width), np.float32)
    cv2.fillConvexPoly(mask, polygon, 1.0)
    face_width = float(np.hypot(*(lm[14] - lm[2])))
    sigma = max(MOUTH_FEATHER * face_width, 1.0)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    # weights too small to move an 8-bit value are zero, so the eyes and the rest stay exactly the video's
    mask[mask < 1 / 512] = 0
    return mask


class FrameStore:
    """Decoded frames spilled to an unnamed temporary file and read back by index (flat memory, any order)."""

    def __init__(self):
        self._file = tempfile.TemporaryFile(prefix="sadtalker-dub-")
        self.shape: tuple[int, int, int] | None = None
        self.count = 0

    def append(self, frame: np.ndarray) -> None:
        if self.shape is None:
            self.shape = frame.shape
        elif frame.shape != self.shape:
            raise VideoError(f"the video changes frame size ({self.shape[1]}x{self.shape[0]} -> {frame.shape[1]}x"
                             f"{frame.shape[0]}); re-encode it to one size.")
        self._file.seek(self.count * frame.nbytes)
        self._file.write(np.ascontiguousarray(frame).data)
        self.count += 1

    def __getitem__(self, index: int) -> np.ndarray:
        frame = np.empty(self.shape, np.uint8)
        self._file.seek(int(index) * frame.nbytes)
        self._file.readinto(memoryview(frame).cast("B"))
        return frame

    def close(self) -> None:
        self._file.close()


def _mixed_track(speech_path, video_path: Path, num_output: int, num_frames: int, fps: float,
                 volume: float) -> np.ndarray:
    """The speech with the video's own sound under it at ``volume`` (float32 mono at ``_MIX_RATE``).

    The video's sound follows the pictures: it plays forward, then backward while the video ping-pongs
    (a continuous triangle over the first ``num_frames`` frames, never a jump), within a frame of the
    picture it belongs to."""
    speech = audio.load_audio(speech_path, _MIX_RATE)
    under = audio.load_audio(video_path, _MIX_RATE)
    per_frame = _MIX_RATE / fps
    length = int(round(num_output * per_frame))
    frames = np.arange(length) / per_frame  # output time in frames
    if num_frames > 1:
        period = 2 * (num_frames - 1)
        phase = frames % period
        position = np.where(phase <= num_frames - 1, phase, period - phase)
    else:
        position = frames % 1.0
    under = under[np.clip(np.rint(position * per_frame).astype(np.int64), 0, len(under) - 1)]
    speech = np.pad(speech[:length], (0, max(0, length - len(speech))))
    return np.clip(speech + np.float32(volume) * under, -1.0, 1.0).astype(np.float32)


@dataclass
class _Clip:
    """What dubbing knows about the video frames it uses (all small per-frame arrays besides the store)."""

    store: FrameStore  # the decoded frames
    points: np.ndarray  # (N, 68, 2) smoothed landmarks in frame pixels
    found: np.ndarray  # (N,) bool: the tracked face is in the frame
    mode: str  # paste-back mode: full or extfull
    size: int  # render size
    coeff: np.ndarray | None = None  # (N, 73) each frame's own coefficients (zeros without a face)
    crop_infos: list[crop.CropInfo | None] | None = None  # each frame's crop (None without a face)

    def crop(self, index: int, frame: np.ndarray | None = None) -> crop.CropResult:
        frame = self.store[index] if frame is None else frame
        return crop.crop_face(frame, self.points[index], self.mode, self.size)


def dub_video(runtime: ModelRuntime, source_video, driven_audio, config: GenerationConfig, out_path: Path, job,
              delivery) -> tuple[dict, np.ndarray]:
    """Renders the dubbed video to ``out_path``; returns (info, crop preview). ``runtime`` holds the networks
    and detectors; ``job`` reports the stages (``stage(name, done, total)``, ``check()`` for cancellation,
    ``progress``); ``delivery(frame_size)`` is what the frames and the file get on their way out
    (watermark, previews, provenance; see ``pipeline``)."""
    check_options(config)
    if not isinstance(source_video, (str, os.PathLike)):
        raise VideoError(f"source_video must be a path to a video file, got {type(source_video).__name__}.")
    if driven_audio is None:
        raise InputError("dubbing needs the new speech: pass driven_audio (an audio file).")
    path = Path(source_video)
    meta = video.video_info(path)
    if not meta.n_frames:
        raise VideoError(f"{path.name} has no video frames (zero-length video); give a video with a face in it.")
    fps = float(meta.fps or config.fps)
    mode, size = paste_mode(config.preprocess), config.size

    job.stage(Stage.AUDIO)
    features = audio.prepare_audio(driven_audio, fps=fps)
    num_output = features.num_frames

    job.stage(Stage.LOAD)
    runtime.prepare(size, mode, progress=job.progress)

    store = FrameStore()
    try:
        needed = min(num_output, meta.n_frames)
        job.stage(Stage.FACE, 0, needed)
        detector, detector_note = stages.face_backend(runtime, config.face_detector)
        clip = _track(runtime, path, store, detector, config, needed, mode, size, job)
        indices = pingpong_indices(num_output, store.count)

        job.stage(Stage.COEFFS)
        _frame_coefficients(runtime, clip)
        expression = _expressions(runtime, features, clip, indices, config)

        if config.video_audio_volume > 0 and meta.has_audio:
            track: Any = _mixed_track(driven_audio, path, num_output, store.count, fps,
                                      config.video_audio_volume)
        else:
            track = driven_audio
        # created only now, so a call that fails on its inputs leaves no new folder behind
        out_path.parent.mkdir(parents=True, exist_ok=True)
        job.stage(Stage.RENDER, 0, num_output)
        output_size, marks = _render(runtime, clip, expression, indices, config, fps, track, out_path, job, delivery)
        preview = clip.crop(int(np.argmax(clip.found))).frame
    finally:
        store.close()
    rendered = int(clip.found[indices].sum())
    info = {
        "num_frames": num_output, "fps": fps, "duration_s": num_output / fps, "size": size,
        "source_video_frames": int(store.count), "frames_with_face": int(clip.found.sum()),
        "frames_passed_through": num_output - rendered, "video_loops": bool(num_output > store.count),
        "paste_mode": mode, "face_detector": detector_note or detector, "output_size": list(output_size),
        **marks,
    }
    return info, preview


def _track(runtime: ModelRuntime, path: Path, store: FrameStore, detector: str, config: GenerationConfig,
           needed: int, mode: str, size: int, job) -> _Clip:
    """Decodes the frames the output needs into ``store`` and tracks the face through them."""
    tracker = FaceTracker(config.face_index)
    points, found = [], []
    for i, frame in enumerate(video.read_video_frames(path, max_frames=needed)):
        job.stage(Stage.FACE, i, needed)
        store.append(frame)
        lm = tracker(runtime.faces(frame, detector))
        found.append(lm is not None)
        points.append(lm if lm is not None else np.zeros((68, 2), np.float32))
    if store.count == 0:
        raise VideoError(f"{path.name} decoded to no frames (zero-length or damaged video); re-encode it to MP4.")
    found_arr = np.array(found)
    if not found_arr.any():
        raise NoFaceError(f"no face was found in any of the {store.count} frames of {path.name} by the "
                          f"{detector} detector; give a video where a face is clearly visible.")
    return _Clip(store, smooth_tracks(np.stack(points), found_arr), found_arr, mode, size)


def _frame_coefficients(runtime: ModelRuntime, clip: _Clip) -> None:
    """Each frame's 3DMM coefficients (73) and crop, batched through the regressor."""
    clip.coeff = np.zeros((clip.store.count, coeffs.EXPRESSION_POSE_SIZE + coeffs.CROP_PARAM_SIZE), np.float32)
    clip.crop_infos = [None] * clip.store.count
    with_face = np.flatnonzero(clip.found)
    for start in range(0, len(with_face), stages.RECON_BATCH):
        chunk = with_face[start:start + stages.RECON_BATCH]
        cropped = [clip.crop(i) for i in chunk]
        clip.coeff[chunk] = stages.face_coefficients(runtime, [c.frame for c in cropped],
                                                     [c.landmarks_in_frame for c in cropped])
        for i, c in zip(chunk, cropped):
            clip.crop_infos[i] = c.crop_info


def _expressions(runtime: ModelRuntime, features: audio.AudioFeatures, clip: _Clip, indices: np.ndarray,
                 config: GenerationConfig) -> np.ndarray:
    """Expression (T, 64) per output frame: ExpNet on the speech, each frame's own expression as reference.
    Generated blinks only when the whole face is re-rendered (mouth_only keeps the video's eyes)."""
    num_output = len(indices)
    ratio = np.zeros((num_output, 1), np.float32)
    if config.blink and not config.mouth_only:
        ratio = coeffs.blink_ratio(num_output, random.Random(config.seed))
    device = runtime.device
    windows = torch.from_numpy(features.windows).to(device)[None, :, None]
    ref = torch.from_numpy(clip.coeff[indices, :coeffs.EXPRESSION_SIZE]).to(device)[None]
    exp = runtime.expression(windows, ref, torch.from_numpy(ratio).to(device)[None])
    return exp[0].float().cpu().numpy()


def _render(runtime: ModelRuntime, clip: _Clip, expression: np.ndarray, indices: np.ndarray,
            config: GenerationConfig, fps: float, track, out_path: Path, job, delivery) -> tuple[tuple[int, int], dict]:
    """Streams the output: batches of output frames, the ones with a face rendered together and pasted back,
    the others passed through; returns the encoded (width, height) and the delivery's info."""
    num_output, batch = len(indices), config.batch_size
    height, width = clip.store.shape[:2]
    out = delivery((width, height))
    with video.VideoWriter(out_path, (width, height), fps=fps, audio=track, duration=num_output / fps,
                           crf=config.crf, audio_sample_rate=_MIX_RATE, **out.writer_options()) as writer:
        for start in range(0, num_output, batch):
            job.check()
            ts = np.arange(start, min(start + batch, num_output))
            frames = [clip.store[indices[t]] for t in ts]
            faces = [k for k, t in enumerate(ts) if clip.found[indices[t]]]
            if faces:
                rendered = _render_faces(runtime, clip, expression, indices, ts[faces], [frames[k] for k in faces],
                                         config.expression_scale)
                for k, face in zip(faces, rendered):
                    i = indices[ts[k]]
                    frames[k] = _paste(frames[k], face, clip.crop_infos[i], clip.points[i], clip.mode, config,
                                       runtime.device)
            out.write(writer, np.stack(frames))
            job.stage(Stage.RENDER, int(ts[-1]) + 1, num_output)
    return writer.encoded_size, out.info()


def _render_faces(runtime: ModelRuntime, clip: _Clip, expression: np.ndarray, indices: np.ndarray, ts: np.ndarray,
                  frames: list, expression_scale: float) -> torch.Tensor:
    """Rendered faces (b, 3, S, S) for output frames ``ts``, each with its own video frame as the source: the
    frame's own pose and crop, the speech's expression windowed over the neighbouring output frames."""
    rows = clip.coeff[indices[ts]]  # (b, 73)
    window = 2 * animate.SEMANTIC_RADIUS + 1
    sources = [clip.crop(indices[t], frame).frame for t, frame in zip(ts, frames)]
    source_images = torch.from_numpy(np.concatenate([align.recon_input(s) for s in sources]))
    source_semantics = np.repeat(rows[:, :, None], window, axis=2)
    neighbours = np.clip(ts[:, None] + np.arange(window)[None] - animate.SEMANTIC_RADIUS, 0, len(indices) - 1)
    # the pose and crop part of each target window stays the frame's own (like still mode), so the head
    # does not move against its own frame; only the expression varies
    targets = source_semantics.copy()
    targets[:, :coeffs.EXPRESSION_SIZE] = expression[neighbours].transpose(0, 2, 1) * np.float32(expression_scale)
    return runtime.render_per_source(source_images, torch.from_numpy(source_semantics), torch.from_numpy(targets),
                                     clip.size, clip.mode)


def _paste(frame: np.ndarray, face: torch.Tensor, crop_info: crop.CropInfo, lm: np.ndarray, mode: str,
           config: GenerationConfig, device) -> np.ndarray:
    """The rendered face pasted into its own frame (``blend``); with ``mouth_only`` only the feathered
    lower-face region takes the pasted pixels."""
    pasted = paste.Paster(frame, paste.paste_box(crop_info, mode), blend=config.blend, device=device
                          ).paste(face[None])[0].cpu().numpy()
    if not config.mouth_only:
        return pasted
    weight = mouth_mask(lm, *frame.shape[:2])[..., None]
    # outside the paste box pasted == frame bit for bit, so the blend leaves those pixels unchanged
    mixed = frame.astype(np.float32) + weight * (pasted.astype(np.float32) - frame.astype(np.float32))
    return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
