"""Every error the package raises on purpose.

Each message names the problem and the fix, so front ends (CLI, Gradio, WebUI tab, REST API) can show
``str(error)`` as it is. Input problems derive from ``ValueError`` as well, so generic callers that catch
``ValueError`` keep working.
"""


class SadTalkerError(Exception):
    """Base class of every error raised on purpose by sadtalker_core."""


class CheckpointError(SadTalkerError):
    """A checkpoint file is missing, unreadable or does not fit the networks."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """Required checkpoint files are not in the checkpoint folder (and could not be downloaded)."""


class CorruptCheckpointError(CheckpointError):
    """A checkpoint file exists but cannot be read: truncated, damaged or not the expected format."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint's keys or tensor shapes do not match the network it is loaded into."""


class InputError(SadTalkerError, ValueError):
    """A user-supplied input (image, audio, video, option) is unusable."""


class ImageError(InputError):
    """The source image is missing, unreadable or not an image."""


class AudioError(InputError):
    """The driving audio is missing, unreadable, empty or not audio."""


class VideoError(InputError):
    """A reference video is missing, unreadable or has no video stream."""


class NoFaceError(InputError):
    """No face was found where one was needed."""


class OptionError(InputError):
    """An option has an invalid value or type.

    ``option`` names it as the Python API does and ``problem`` says what is wrong without the name, so each
    front end can name the option as it shows it (``--face_box`` on the command line, "Face box" in the tab).
    """

    def __init__(self, message: str, option: str | None = None, problem: str | None = None):
        super().__init__(message)
        self.option = option
        self.problem = problem

    def shown_as(self, label: str) -> str:
        """The message with the option called ``label``; unchanged when it is not about one option."""
        if self.option is None or self.problem is None:
            return str(self)
        return f"{label}: {self.problem}"


class FFmpegError(SadTalkerError):
    """The bundled ffmpeg (imageio-ffmpeg) is missing or failed while writing or reading media."""


class Cancelled(SadTalkerError):
    """The job was cancelled by the caller (Interrupt button, cancel event)."""


def one_line(error: BaseException) -> str:
    """The message on one line (some list files or URLs on lines of their own), so scripts can grep it; the
    error's type when it has no message."""
    return " ".join(str(error).split()) or type(error).__name__
