"""The ComfyUI nodes: SadTalker Loader, SadTalker Animate, SadTalker Dub Video, SadTalker Face Crop.

Thin: inputs in ComfyUI's types (IMAGE tensors, the AUDIO waveform dict, the VIDEO object) become what
``sadtalker_core`` takes, ``SadTalker.generate`` does the work, and its frames come back as IMAGE. Progress goes
to ComfyUI's progress bar (with the latest frame as preview), ComfyUI's interrupt is honoured at every progress
step, errors are raised with the core's message (ComfyUI shows it on the node), and the only files written
outside the output folder live in a temporary folder removed when the node returns.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import wave
from pathlib import Path
from typing import Iterator

import folder_paths
import numpy as np

from sadtalker_core.errors import OptionError
from sadtalker_core.frontends.jobs import write_sidecar
from sadtalker_core.options import OPTIONS_BY_NAME, GenerationConfig
from sadtalker_core.progress import Stage

from . import widgets

MODEL_FOLDER = "sadtalker"
MODEL_TYPE = "SADTALKER_MODEL"
CATEGORY = "SadTalker"

# ComfyUI's models/sadtalker (extra_model_paths.yaml may add more under the same name).
folder_paths.add_model_folder_path(MODEL_FOLDER, os.path.join(folder_paths.models_dir, MODEL_FOLDER))


def checkpoint_choices() -> list[str]:
    """``.`` (the registered folder itself) and its sub-folders: each may hold one set of checkpoints."""
    names = ["."]
    for base in folder_paths.get_folder_paths(MODEL_FOLDER):
        if os.path.isdir(base):
            names += sorted(entry.name for entry in os.scandir(base) if entry.is_dir() and entry.name not in names)
    return names


def checkpoint_dir(name: str) -> Path:
    bases = folder_paths.get_folder_paths(MODEL_FOLDER)
    for base in bases:
        candidate = Path(base, name)
        if candidate.is_dir():
            return candidate
    return Path(bases[0], name)  # missing: the loader's error names where the files were looked for


class SadTalkerHandle:
    """What flows between the nodes: one loaded ``SadTalker`` and the size its networks were loaded for.

    ComfyUI keeps the Loader's output cached, so the networks stay loaded between prompts; when ComfyUI drops
    its caches ("free model and node cache", or a changed Loader input) the handle goes and the networks with it.
    """

    def __init__(self, talker, size: int):
        self.talker = talker
        self.size = size

    def __repr__(self) -> str:
        return f"SadTalker({self.talker.checkpoint_dir}, size {self.size}, {self.talker.device})"


class SadTalkerLoader:
    DESCRIPTION = "Loads the SadTalker networks from a folder under models/sadtalker."
    CATEGORY = CATEGORY
    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("sadtalker",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "checkpoints": (checkpoint_choices(), {"tooltip": "Folder with the SadTalker checkpoints: '.' is "
                                                   "models/sadtalker itself, other names its sub-folders."}),
            "size": widgets.widget(OPTIONS_BY_NAME["size"]),
            "device": (["auto", "cpu"], {"default": "auto", "tooltip": "auto: ComfyUI's device."}),
            "precision": (["auto", "fp32", "fp16", "bf16"], {
                "default": "auto", "tooltip": "Renderer precision; auto: half where ComfyUI uses it, else fp32."}),
        }}

    def load(self, checkpoints, size, device, precision):
        import comfy.model_management as mm
        import torch

        from sadtalker_core import SadTalker

        size = widgets.option_value(OPTIONS_BY_NAME["size"], size)
        torch_device = mm.get_torch_device() if device == "auto" else torch.device("cpu")
        if precision == "auto":
            dtype = torch.float16 if mm.should_use_fp16(torch_device) else torch.float32
        else:
            dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]
        # download=False: a node never fetches files behind the user's back; the error says where they go
        talker = SadTalker(checkpoint_dir(checkpoints), device=torch_device, dtype=dtype, download=False)
        talker.runtime.prepare(size, "crop")  # a wrong folder fails here, on the Loader node
        return (SadTalkerHandle(talker, size),)


def _save_inputs(prefix: str) -> dict[str, tuple]:
    """The save_video / filename_prefix widgets of the nodes that render a video."""
    return {"save_video": ("BOOLEAN", {"default": True, "tooltip": "Also write the mp4 (with sound) to the "
                                                                   "output folder."}),
            "filename_prefix": ("STRING", {"default": prefix})}


class SadTalkerAnimate:
    DESCRIPTION = ("Animates each portrait of the IMAGE batch with the speech of AUDIO. Outputs the frames "
                   "(IMAGE), the matching audio and the frame rate, for ComfyUI's video nodes; optionally saves "
                   "the mp4 itself.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("frames", "audio", "fps")
    FUNCTION = "animate"
    OUTPUT_NODE = True  # the saved video shows in the UI and in /history

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "sadtalker": (MODEL_TYPE,),
                "image": ("IMAGE", {"tooltip": "Portrait(s); each image of the batch gives one video, one after "
                                               "the other in the output frames."}),
                **widgets.input_types(widgets.ANIMATE_OPTIONS),
                **_save_inputs("sadtalker/SadTalker"),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Speech; not needed with idle_seconds."}),
            },
        }

    def animate(self, sadtalker, image, save_video=True, filename_prefix="sadtalker/SadTalker", audio=None,
                **values):
        import torch

        options = {o.name: widgets.option_value(o, values[o.name]) for o in widgets.ANIMATE_OPTIONS}
        for name in ("ref_eyeblink", "ref_pose", "ref_video"):
            if options[name] is not None:
                options[name] = _input_path(options[name])
        config = _config(options, size=sadtalker.size)
        if audio is None and config.idle_seconds is None:  # the node outputs the AUDIO it was given
            raise ValueError("SadTalker Animate needs speech: connect an AUDIO input (e.g. Load Audio), or set "
                             "idle_seconds for a video without speech.")
        portraits = _uint8_images(image)
        progress = _Progress(len(portraits))
        videos, frames, sounds = [], [], []
        with _work_folder() as temp:
            speech = _write_wav(audio, temp / "speech.wav") if audio is not None else None
            for index, portrait in enumerate(portraits):
                target = temp / f"video_{index}.mp4"
                if save_video:
                    target, saved = _output_file(filename_prefix, portrait.shape[1], portrait.shape[0])
                    videos.append(saved)
                kept = _KeptFrames(progress)
                with _errors_name_widgets():
                    result = sadtalker.talker.generate(portrait, speech, output_path=target, on_frames=kept,
                                                       progress=progress.stage_callback(index), config=config)
                if save_video:
                    write_sidecar(result, portrait, speech, sadtalker.talker.checkpoint_dir,
                                  extra={"host": "comfyui"})
                frames.append(_resize_all(_even_size(kept.all()), frames[0].shape[1:3] if frames else None))
                sounds.append(_track(audio, result.info["num_frames"] / config.fps))
        out = _as_image(np.concatenate(frames))
        sound = {"waveform": torch.cat([s["waveform"] for s in sounds], dim=-1), "sample_rate": sounds[0]["sample_rate"]}
        ui = {"images": videos, "animated": (True,)} if videos else {}
        return {"ui": ui, "result": (out, sound, float(config.fps))}


class SadTalkerDubVideo:
    DESCRIPTION = ("Dubs a VIDEO with the speech of AUDIO: the lips follow the speech while the head, eyes and "
                   "scene stay the video's. The result has the video's frame size and frame rate and the length "
                   "of the audio (a longer audio plays the video forward and backward). Outputs the frames "
                   "(IMAGE), the matching audio and the frame rate; optionally saves the mp4 itself.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "AUDIO", "FLOAT")
    RETURN_NAMES = ("frames", "audio", "fps")
    FUNCTION = "dub"
    OUTPUT_NODE = True  # the saved video shows in the UI and in /history

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "sadtalker": (MODEL_TYPE,),
            # ComfyUI's own video type: Load Video (a file of the input folder, with upload), Create Video...
            "video": ("VIDEO", {"tooltip": "The video to dub, e.g. from Load Video; a face must be visible."}),
            "audio": ("AUDIO", {"tooltip": "The new speech; the result lasts as long as it."}),
            **widgets.input_types(widgets.DUB_VIDEO_OPTIONS),
            **_save_inputs("sadtalker/SadTalker_dub"),
        }}

    def dub(self, sadtalker, video, audio, save_video=True, filename_prefix="sadtalker/SadTalker_dub", **values):
        config = _config({o.name: widgets.option_value(o, values[o.name]) for o in widgets.DUB_VIDEO_OPTIONS},
                         size=sadtalker.size)
        progress = _Progress(1)
        videos = []
        with _work_folder() as temp:
            source = _video_file(video, temp)
            speech = _write_wav(audio, temp / "speech.wav")
            target = temp / "dubbed.mp4"
            if save_video:
                target, saved = _output_file(filename_prefix, *video.get_dimensions())
                videos.append(saved)
            kept = _KeptFrames(progress)
            with _errors_name_widgets():
                result = sadtalker.talker.generate(source_video=source, driven_audio=speech, output_path=target,
                                                   on_frames=kept, progress=progress.stage_callback(0),
                                                   config=config)
            if save_video:
                write_sidecar(result, None, speech, sadtalker.talker.checkpoint_dir, source_video=source,
                              extra={"host": "comfyui"})
            fps = float(result.info["fps"])  # the video's own rate
            seconds = result.info["num_frames"] / fps
            if config.video_audio_volume > 0:
                # the core mixed the video's sound under the speech into the file: that mix is the sound of
                # these frames, so AUDIO carries it too (decoded back, as only the file holds it)
                sound = _track(_file_sound(target, int(audio["sample_rate"])), seconds)
            else:
                sound = _track(audio, seconds)
        ui = {"images": videos, "animated": (True,)} if videos else {}
        return {"ui": ui, "result": (_as_image(_even_size(kept.all())), sound, fps)}


class SadTalkerFaceCrop:
    DESCRIPTION = ("Shows what SadTalker animates: the face crop the networks see, and the source with the crop "
                   "region (green) and, in full/extfull modes, the paste-back box (red).")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("crop", "preview")
    FUNCTION = "crop"
    _OPTIONS = ("preprocess", "size", "face_detector", "face_index", "face_box")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), **widgets.input_types([OPTIONS_BY_NAME[n] for n in cls._OPTIONS])},
                "optional": {"sadtalker": (MODEL_TYPE, {"tooltip": "Where the fan backend finds its weights "
                                                                   "and which device it runs on."})}}

    def crop(self, image, sadtalker=None, **values):
        import cv2

        from sadtalker_core.face import crop, landmarks
        from sadtalker_core.render import paste

        config = _config({n: widgets.option_value(OPTIONS_BY_NAME[n], values[n]) for n in self._OPTIONS})
        if sadtalker is not None:
            runtime = sadtalker.talker.runtime
            where = dict(weights_dir=runtime.checkpoint_dir, device=str(runtime.device), detectors=runtime.detectors)
        else:
            # loaded once for this node run's pictures
            where = dict(weights_dir=checkpoint_dir("."), device="cpu", detectors=landmarks.Detectors())
        crops, previews = [], []
        for picture in _uint8_images(image):
            with _errors_name_widgets():
                face = landmarks.locate_face(picture, backend=str(config.face_detector), face_box=config.face_box,
                                             face_index=config.face_index, **where)
            result = crop.crop_face(picture, face.landmarks68, str(config.preprocess), config.size)
            preview = picture.copy()
            thickness = max(2, round(max(picture.shape[:2]) / 300))
            x0, y0, x1, y1 = (int(v) for v in result.region)
            cv2.rectangle(preview, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 0), thickness)
            if config.preprocess in ("full", "extfull"):
                x0, y0, x1, y1 = paste.paste_box(result.crop_info, str(config.preprocess))
                cv2.rectangle(preview, (x0, y0), (x1 - 1, y1 - 1), (255, 0, 0), thickness)
            crops.append(result.frame)
            previews.append(preview)
        return (_as_image(np.stack(crops)), _as_image(np.stack(previews)))


# -- helpers ---------------------------------------------------------------------------------------------
def widget_error(error: OptionError) -> OptionError:
    """The error with its option named as the node shows it: the widget has the option's name."""
    if error.option is None:
        return error
    return OptionError(error.shown_as(error.option), option=error.option, problem=error.problem)


@contextlib.contextmanager
def _errors_name_widgets() -> Iterator[None]:
    """Option errors raised inside (by the pipeline, deep down) come out naming the widget."""
    try:
        yield
    except OptionError as error:
        raise widget_error(error) from None


def _config(values: dict, **fixed) -> GenerationConfig:
    """A node's widget values as a config, checked once here and handed on as it is."""
    with _errors_name_widgets():
        return GenerationConfig.from_options(values, **fixed)


class _Progress:
    """Pipeline stages -> ComfyUI's progress bar (100 steps per portrait); the interrupt is checked each time."""

    _BEFORE_RENDER = {Stage.AUDIO: 0, Stage.LOAD: 2, Stage.FACE: 4, Stage.REFERENCE: 6, Stage.COEFFS: 8}

    def __init__(self, portraits: int):
        import comfy.utils

        self.bar = comfy.utils.ProgressBar(100 * portraits)

    def stage_callback(self, index: int):
        import comfy.model_management as mm

        def report(stage: str, done: int, total: int) -> None:
            mm.throw_exception_if_processing_interrupted()
            step = self._BEFORE_RENDER.get(stage)
            if step is None:  # render: 10..100
                step = 10 + (90 * done // total if total else 0)
            elif stage == Stage.FACE and total > 1:  # dubbing tracks the face frame by frame: 4..6
                step += 2 * done // total
            self.bar.update_absolute(100 * index + step)

        return report

    def show(self, frame: np.ndarray) -> None:
        """The latest finished frame as the node's preview (ComfyUI sends it to the browser as a JPEG)."""
        from PIL import Image

        self.bar.update_absolute(self.bar.current, preview=("JPEG", Image.fromarray(frame), 512))


class _KeptFrames:
    """The ``on_frames`` hook of one video: keeps its finished frames, the newest shown as the preview."""

    def __init__(self, progress: _Progress):
        self.progress = progress
        self.batches: list[np.ndarray] = []

    def __call__(self, batch: np.ndarray) -> None:
        self.batches.append(batch)
        self.progress.show(batch[-1])

    def all(self) -> np.ndarray:
        return np.concatenate(self.batches)


@contextlib.contextmanager
def _work_folder() -> Iterator[Path]:
    """A temporary folder in ComfyUI's temp directory, removed with everything in it when the node returns,
    fails or is interrupted."""
    temp_root = Path(folder_paths.get_temp_directory())
    temp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sadtalker_", dir=temp_root) as folder:
        yield Path(folder)


def _as_image(frames: np.ndarray):
    """(B, H, W, 3) uint8 -> ComfyUI's IMAGE: float32 in 0..1."""
    import torch

    return torch.from_numpy(frames).float().div_(255.0)


def _uint8_images(image) -> list[np.ndarray]:
    """IMAGE (B, H, W, C) floats in 0..1 -> B RGB uint8 arrays."""
    array = image.detach().cpu().float().numpy()
    if array.ndim == 3:
        array = array[None]
    array = array[..., :3]
    return [np.ascontiguousarray(a) for a in (array * 255.0).round().clip(0, 255).astype(np.uint8)]


def _even_size(frames: np.ndarray) -> np.ndarray:
    """Odd widths/heights (the aspect restore follows the crop box) padded by repeating the last column/row,
    as the core's mp4 writer does: H.264 in yuv420p, and so ComfyUI's own video nodes, need even sizes."""
    height, width = frames.shape[1:3]
    if height % 2 == 0 and width % 2 == 0:
        return frames
    return np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")


def _resize_all(frames: np.ndarray, size_hw) -> np.ndarray:
    """Later portraits of a batch may give another frame size (the crop follows the face): match the first."""
    if size_hw is None or frames.shape[1:3] == tuple(size_hw):
        return frames
    import cv2

    height, width = size_hw
    return np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_AREA) for f in frames])


def _write_wav(audio: dict, path: Path) -> Path:
    """ComfyUI's AUDIO (waveform (B, C, N) floats, sample_rate) -> 16-bit PCM WAV of its first item."""
    waveform = audio["waveform"]
    samples = waveform[0] if waveform.dim() == 3 else waveform
    if samples.shape[-1] == 0:
        raise ValueError("the AUDIO input is empty (0 samples); give speech to animate.")
    pcm = (samples.detach().cpu().float().clamp(-1.0, 1.0).numpy().T * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(pcm.shape[1])
        out.setsampwidth(2)
        out.setframerate(int(audio["sample_rate"]))
        out.writeframes(pcm.tobytes())
    return path


def _track(audio: dict | None, seconds: float) -> dict:
    """The sound of one video, as AUDIO: the input's first item cut or padded to the video's length."""
    import torch

    if audio is None:
        rate = 16000
        return {"waveform": torch.zeros(1, 1, round(seconds * rate)), "sample_rate": rate}
    rate = int(audio["sample_rate"])
    waveform = audio["waveform"]
    waveform = (waveform if waveform.dim() == 3 else waveform[None])[:1]
    length = round(seconds * rate)
    if waveform.shape[-1] >= length:
        return {"waveform": waveform[..., :length], "sample_rate": rate}
    pad = torch.zeros(*waveform.shape[:-1], length - waveform.shape[-1], dtype=waveform.dtype)
    return {"waveform": torch.cat([waveform, pad], dim=-1), "sample_rate": rate}


def _output_file(prefix: str, width: int, height: int) -> tuple[Path, dict]:
    """A new mp4 path in ComfyUI's output folder, and how the UI refers to it (the size fills the prefix's
    %width% / %height%)."""
    output_dir = folder_paths.get_output_directory()
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(prefix, output_dir, width, height)
    os.makedirs(folder, exist_ok=True)
    filename = f"{name}_{counter:05}_.mp4"
    while os.path.exists(os.path.join(folder, filename)):  # several portraits in one call
        counter += 1
        filename = f"{name}_{counter:05}_.mp4"
    return Path(folder, filename), {"filename": filename, "subfolder": subfolder, "type": "output"}


def _video_file(video, folder: Path) -> str:
    """ComfyUI's VIDEO as a file the core reads: the file itself when the video comes from one (Load Video),
    else the video written to an mp4 in ``folder`` (Create Video's frames, an upload held in memory)."""
    from comfy_api.latest import InputImpl, Types

    # only a file-backed video is asked for its source: the base class's get_stream_source encodes any other
    # video into memory, where it cannot tell which container to write
    if isinstance(video, InputImpl.VideoFromFile):
        source = video.get_stream_source()
        if isinstance(source, str) and os.path.isfile(source):
            return source
    path = folder / "source.mp4"
    video.save_to(str(path), format=Types.VideoContainer.MP4)
    return str(path)


def _file_sound(path: Path, sample_rate: int) -> dict:
    """The sound track of a video file as AUDIO (mono)."""
    import torch

    from sadtalker_core.motion import audio

    return {"waveform": torch.from_numpy(audio.load_audio(path, sample_rate))[None, None],
            "sample_rate": sample_rate}


def _input_path(value: str) -> str:
    """A reference video: an absolute path, or a file name in ComfyUI's input folder."""
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else Path(folder_paths.get_input_directory(), value))


NODE_CLASS_MAPPINGS = {
    "SadTalkerLoader": SadTalkerLoader,
    "SadTalkerAnimate": SadTalkerAnimate,
    "SadTalkerDubVideo": SadTalkerDubVideo,
    "SadTalkerFaceCrop": SadTalkerFaceCrop,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "SadTalkerLoader": "SadTalker Loader",
    "SadTalkerAnimate": "SadTalker Animate",
    "SadTalkerDubVideo": "SadTalker Dub Video",
    "SadTalkerFaceCrop": "SadTalker Face Crop",
}
