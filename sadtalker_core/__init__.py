"""SadTalker re-implementation: one portrait + speech audio -> talking-head video.

    from sadtalker_core import SadTalker
    talker = SadTalker("checkpoints")            # device=None: cuda, else mps, else cpu
    result = talker.generate("face.png", "speech.wav", preprocess="crop", still=False)
    print(result.video_path)

Heavy modules (torch, the networks) are imported on first use, so importing the package is cheap.
"""

from .errors import (AudioError, Cancelled, CheckpointError, CheckpointMismatchError, CheckpointNotFoundError,
                     CorruptCheckpointError, ImageError, InputError, NoFaceError, OptionError, SadTalkerError)
from .options import GenerationConfig

__version__ = "0.1.0"

__all__ = [
    "SadTalker",
    "GenerationResult",
    "GenerationConfig",
    "AudioError",
    "Cancelled",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "ImageError",
    "InputError",
    "NoFaceError",
    "OptionError",
    "SadTalkerError",
    "__version__",
]


def __getattr__(name):
    if name in ("SadTalker", "GenerationResult"):
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'sadtalker_core' has no attribute {name!r}")
