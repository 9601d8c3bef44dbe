"""REST routes ``/sadtalker/v1/*`` shared by the standalone server and the WebUI extension.

``add_routes(app, runner, lock=..., control=...)`` registers them on a FastAPI app or router. Bodies are
checked by hand (``GenerationConfig.from_options`` plus the media fields) so errors are 4xx JSON naming the field
as the JSON body spells it (``face_box: got ...``), the
same under pydantic 1 (A1111's fastapi 0.94) and pydantic 2. Media travel as base64 or data URLs; the video
comes back as raw base64 (no ``data:`` prefix), which is what ``webuiapi``'s ``custom_post`` expects.

Reference videos are accepted only as base64 uploads: a path field would let any client read files on the
server.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from .. import __version__
from ..errors import (AudioError, Cancelled, CheckpointError, CheckpointNotFoundError, ImageError, InputError,
                      NoFaceError, OptionError, SadTalkerError, VideoError)
from ..options import OPTIONS_BY_NAME, GenerationConfig, describe_options
from .jobs import JobControl, JobRunner

PREFIX = "/sadtalker/v1"
MEDIA_FIELDS = ("image", "audio", "ref_video", "ref_pose", "ref_eyeblink", "video")
#: the original SadTalker's names (its inference.py flags and its predictor) for the same two fields, and the
#: API's name for the video to dub
FIELD_ALIASES = {"source_image": "image", "driven_audio": "audio", "source_video": "video"}


@dataclass(frozen=True)
class Limits:
    """Largest decoded upload per field, in bytes."""

    image: int = 32 << 20
    audio: int = 64 << 20
    video: int = 256 << 20

    def for_field(self, name: str) -> int:
        return {"image": self.image, "audio": self.audio}.get(name, self.video)


class RequestError(Exception):
    """A request the client must fix: HTTP status, the offending field, a message."""

    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


def auth_dependencies(api_auth: str | None) -> list:
    """FastAPI dependencies enforcing HTTP Basic for ``"user:pass,user2:pass2"`` (the host's ``--api-auth``)."""
    if not api_auth:
        return []

    users = {}
    for pair in api_auth.split(","):
        user, _, password = pair.strip().partition(":")
        if user:
            users[user] = password
    basic = HTTPBasic()

    def check_credentials(credentials: HTTPBasicCredentials = Depends(basic)) -> None:
        expected = users.get(credentials.username)
        if expected is None or not secrets.compare_digest(credentials.password.encode(), expected.encode()):
            raise HTTPException(status_code=401, detail="Incorrect username or password",
                                headers={"WWW-Authenticate": "Basic"})

    return [Depends(check_credentials)]


def decode_media(field: str, value: Any, limit: int) -> bytes:
    """Bytes of a base64 string or ``data:`` URL; ``RequestError`` naming ``field`` otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise RequestError(422, field, f"field '{field}': expected a base64 string or a data: URL.")
    text = value.strip()
    if text.startswith("data:"):
        header, sep, text = text.partition(",")
        if not sep or ";base64" not in header:
            raise RequestError(422, field, f"field '{field}': data: URL must be base64-encoded "
                                           "(data:<type>;base64,<data>).")
    text = re.sub(r"\s+", "", text)
    if len(text) * 3 // 4 > limit:
        raise RequestError(413, field, f"field '{field}': about {len(text) * 3 // 4 / 1e6:.1f} MB, larger "
                                       f"than the {limit / 1e6:.1f} MB limit.")
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(422, field, f"field '{field}': not valid base64.") from None
    if not data:
        raise RequestError(422, field, f"field '{field}': empty.")
    return data


def _decode_image(data: bytes):
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise RequestError(422, "image", "field 'image': not a readable image (PNG, JPEG, WebP...).") from None
    return ImageOps.exif_transpose(image).convert("RGB")


def _suffix_for(data: bytes) -> str:
    signatures = ((b"RIFF", ".wav"), (b"ID3", ".mp3"), (b"\xff\xfb", ".mp3"), (b"\xff\xf3", ".mp3"),
                  (b"OggS", ".ogg"), (b"fLaC", ".flac"), (b"\x1a\x45\xdf\xa3", ".webm"))
    for magic, suffix in signatures:
        if data.startswith(magic):
            return suffix
    return ".mp4" if data[4:8] == b"ftyp" else ".bin"


def _field_of(error: Exception) -> str | None:
    if isinstance(error, (ImageError, NoFaceError)):
        return "image"
    if isinstance(error, AudioError):
        return "audio"
    if isinstance(error, OptionError):
        return error.option  # options are JSON fields of the same name
    return None


def _shown(error: Exception) -> str:
    """The message with an option named as its JSON field."""
    if isinstance(error, OptionError) and error.option is not None:
        return error.shown_as(error.option)
    return str(error)


def _error_response(status: int, error: str, field: str | None, message: str):
    return JSONResponse(status_code=status, content={"error": error, "field": field, "detail": message})


def parse_generate_request(payload: Any, workdir: Path, limits: Limits = Limits()
                           ) -> tuple[Any, Path | None, GenerationConfig, Path | None]:
    """(source image or None, audio path or None, the options' config, video to dub or None) from a JSON body;
    media written under ``workdir``. Exactly one of 'image' and 'video' is the source. The options are
    validated here, once: the config goes on to the job as it is."""
    if not isinstance(payload, dict):
        raise RequestError(422, None, "the body must be a JSON object with 'image', 'audio' and options.")
    payload = _resolve_aliases(payload)
    nested = payload.pop("options", None) or {}
    if not isinstance(nested, dict):
        raise RequestError(422, "options", "field 'options': expected an object of option names to values.")
    if "image" in payload and "video" in payload:
        raise RequestError(422, "video", "fields 'image' and 'video' are both sources: send 'image' to animate a "
                                         "portrait or 'video' to dub a video, not both.")
    if "image" not in payload and "video" not in payload:
        raise RequestError(422, "image", "field 'image' is required: the portrait as base64 or a data: URL (or "
                                         "'video' to dub a video).")
    image = _decode_image(decode_media("image", payload.pop("image"), limits.image)) if "image" in payload else None
    raw_options = {**nested, **{k: v for k, v in payload.items() if k not in MEDIA_FIELDS}}
    media_paths: dict[str, Path] = {}
    for name in MEDIA_FIELDS[1:]:
        value = payload.get(name)
        if value is None:
            continue
        data = decode_media(name, value, limits.for_field(name))
        path = workdir / f"{name}{_suffix_for(data)}"
        path.write_bytes(data)
        media_paths[name] = path
    for name in ("ref_video", "ref_pose", "ref_eyeblink"):
        if name in media_paths:
            raw_options[name] = str(media_paths[name])
    try:
        config = GenerationConfig.from_options(raw_options)
    except OptionError as error:
        raise RequestError(422, _field_of(error), _shown(error)) from None
    audio = media_paths.get("audio")
    if audio is None and config.needs_audio:
        raise RequestError(422, "audio", "field 'audio' is required (base64 or data: URL of speech), unless "
                                         "'idle_seconds' is set or ref_info is 'all'.")
    return image, audio, config, media_paths.get("video")


def _resolve_aliases(payload: dict) -> dict:
    """A copy of ``payload`` with the original's field names mapped onto ours; both spellings at once is an error."""
    payload = dict(payload)
    for alias, name in FIELD_ALIASES.items():
        if alias not in payload:
            continue
        if name in payload:
            raise RequestError(422, alias, f"fields '{alias}' and '{name}' are the same input: send only one.")
        payload[name] = payload.pop(alias)
    return payload


def add_routes(app, runner: JobRunner, *, lock: ContextManager, control: JobControl | None = None,
               dependencies: Sequence = (), limits: Limits | Callable[[], Limits] = Limits(),
               prefix: str = PREFIX) -> JobControl:
    """Registers generate / status / options / progress / preview / interrupt on ``app``; returns the job control.

    ``lock`` serializes jobs (the host's ``queue_lock``: UI and API jobs never overlap).
    """
    control = control or JobControl()
    current_limits = limits if callable(limits) else (lambda: limits)

    def run_job(body: bytes) -> dict:
        try:
            payload = json.loads(body or b"null")
        except ValueError as error:
            raise RequestError(400, None, f"the body is not valid JSON: {error}.") from None
        with tempfile.TemporaryDirectory(prefix="sadtalker_api_") as workdir:
            image, audio, config, source_video = parse_generate_request(payload, Path(workdir), current_limits())
            with lock, control.scope("sadtalker-api", runner.timings) as (progress, cancel):
                try:
                    result = runner.run(image, str(audio) if audio else None, config, progress=progress,
                                        cancel=cancel, preview=control.preview,
                                        source_video=source_video)
                except (NoFaceError, VideoError) as error:
                    if source_video is None:
                        raise
                    raise RequestError(422, "video", str(error)) from None  # name the field that caused it
        return {
            "video": base64.b64encode(result.video_path.read_bytes()).decode("ascii"),
            "info": result.info,
            "options": result.options,
            "path": str(result.video_path),
            "sidecar": str(result.sidecar_path),
        }

    async def generate(request: Request):
        body = await request.body()
        try:
            return await run_in_threadpool(run_job, body)
        except RequestError as error:
            return _error_response(error.status, "RequestError", error.field, error.message)
        except Cancelled as error:
            return _error_response(409, "Cancelled", None, str(error) or "the job was interrupted.")
        except CheckpointNotFoundError as error:
            return _error_response(503, type(error).__name__, None, str(error))
        except InputError as error:
            return _error_response(422, type(error).__name__, _field_of(error), _shown(error))
        except (CheckpointError, SadTalkerError) as error:
            return _error_response(500, type(error).__name__, None, str(error))

    def status():
        job = control.snapshot()
        return {**runner.status(), "busy": bool(job.get("active")), "job": job}

    def options():
        return {"options": describe_options(), "version": __version__}

    def progress():
        return control.snapshot()

    def preview():
        frame = control.latest_frame()
        if frame is None:
            return _error_response(404, "NoPreview", None, "no frame yet: previews exist only while a job is "
                                                           "rendering (see /status).")
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="PNG", compress_level=1)
        return Response(content=buffer.getvalue(), media_type="image/png", headers={"Cache-Control": "no-store"})

    def interrupt():
        control.interrupt()
        return {"interrupted": True}

    deps = list(dependencies)
    app.add_api_route(f"{prefix}/generate", generate, methods=["POST"], dependencies=deps,
                      summary="Portrait + speech -> talking-head mp4 (base64)",
                      openapi_extra={"requestBody": {"content": {"application/json": {
                          "schema": _request_schema()}}, "required": True}})
    app.add_api_route(f"{prefix}/status", status, methods=["GET"], dependencies=deps,
                      summary="Checkpoints found, device, version; the running job's stage, frames, ETA")
    app.add_api_route(f"{prefix}/options", options, methods=["GET"], dependencies=deps,
                      summary="Every generation option: default, type, help")
    app.add_api_route(f"{prefix}/progress", progress, methods=["GET"], dependencies=deps,
                      summary="The job in flight")
    app.add_api_route(f"{prefix}/preview", preview, methods=["GET"], dependencies=deps,
                      summary="The running job's newest frame as PNG (404 when none)",
                      responses={200: {"content": {"image/png": {}}}, 404: {"description": "no frame yet"}})
    app.add_api_route(f"{prefix}/interrupt", interrupt, methods=["POST"], dependencies=deps,
                      summary="Stop the job in flight between batches")
    return control


_JSON_TYPES = {"bool": "boolean", "int": "integer", "float": "number", "str": "string", "path": "string",
               "angles": "array", "box": "array", "landmarks": "array"}


def _request_schema() -> dict:
    properties: dict[str, Any] = {
        "image": {"type": "string", "description": "portrait, base64 or data: URL"},
        "audio": {"type": "string", "description": "speech (wav, mp3, m4a...), base64 or data: URL"},
        "video": {"type": "string", "description": "a video to dub instead of animating 'image': its lips "
                                                   "follow 'audio', base64 or data: URL"},
    }
    for alias, name in FIELD_ALIASES.items():
        properties[alias] = {"type": "string", "description": f"the original SadTalker's name for '{name}'"}
    for option in OPTIONS_BY_NAME.values():
        entry: dict[str, Any] = {"type": _JSON_TYPES[option.kind], "description": option.help}
        if option.kind == "path":
            entry["description"] += " (base64 or data: URL of the video)"
        if option.choices:
            entry["enum"] = list(option.choices)
        if option.default is not None:
            entry["default"] = option.default
        properties[option.name] = entry
    return {"type": "object", "properties": properties,
            "oneOf": [{"required": ["image"]}, {"required": ["source_image"]}, {"required": ["video"]},
                      {"required": ["source_video"]}]}
