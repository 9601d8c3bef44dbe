"""The SadTalker Gradio Blocks, shared by the WebUI tab and the standalone app.

One code base for gradio 3.41 (A1111), 3.43 (SD.Next), 4.40 (Forge) and 6.x (standalone): every keyword
that not all of them share is passed only when the running gradio declares it (feature detection, no
version checks), and nothing uses ``.style()``. Every element id starts with ``sadtalker_`` so it never
collides with host ids.
"""

from __future__ import annotations

import contextlib
import html
import inspect
import json
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager

from ..errors import Cancelled, OptionError, SadTalkerError
from ..options import OPTIONS, OPTIONS_BY_NAME, REF_INFO, GenerationConfig, Option, RefInfo
from .jobs import JobControl, JobRunner

#: options the reference-video box covers (one upload + what to take from it)
REFERENCE_OPTIONS = ("ref_video", "ref_info", "ref_pose", "ref_eyeblink")
MAIN_OPTIONS = ("preprocess", "size", "still", "pose_style", "expression_scale", "head_motion_scale", "blink",
                "enhancer", "batch_size")
#: slider ranges narrower than the option's valid range, where the full range is never useful in a UI (every
#: other slider spans the table's minimum..maximum)
SLIDER_RANGES = {"expression_scale": (0.0, 3.0, 0.05), "head_motion_scale": (0.0, 3.0, 0.05),
                 "batch_size": (1, 32, 1)}
NONE_CHOICE = "none"
#: the reference-video box: its two components stand for ref_video and ref_info
REF_VIDEO_LABEL = "Reference video"
REF_USE_LABEL = "Use from the reference video"
#: what a reference video gives when the user uploads one and changes nothing
REF_USE_DEFAULT = RefInfo.POSE_BLINK.value
#: seconds between live-preview refreshes of the standalone app (a new frame is shown at most this often)
PREVIEW_INTERVAL = 0.25
CONSENT_NOTE = ("Use only portraits and voices you have the right to use, with the consent of the people "
                "shown. The video is marked as AI-generated; do not present it as a real recording.")


def _accepted_params(fn: Callable) -> set[str] | None:
    """Keyword names ``fn`` declares, or ``None`` when it is an opaque ``*args, **kwargs`` wrapper."""
    try:
        parameters = inspect.signature(inspect.unwrap(fn)).parameters
    except (TypeError, ValueError):
        return None
    names = {n for n, p in parameters.items()
             if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    names.discard("self")
    return names or None


def supported_kwargs(fn: Callable, **kwargs: Any) -> dict[str, Any]:
    accepted = _accepted_params(fn)
    return kwargs if accepted is None else {k: v for k, v in kwargs.items() if k in accepted}


def make(cls, **kwargs: Any):
    """``cls(**kwargs)`` minus the keywords this gradio's ``cls`` does not declare."""
    return cls(**supported_kwargs(cls.__init__, **kwargs))


def listen(event: Callable, fn: Callable | None, *, js: str | None = None, **kwargs: Any):
    """Wires an event; ``js`` goes to ``js=`` (gradio 4+) or ``_js=`` (gradio 3)."""
    accepted = _accepted_params(event)
    if js is not None:
        if accepted is None or "js" in accepted:
            kwargs["js"] = js
        else:
            kwargs["_js"] = js
    if accepted is not None:
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    return event(fn=fn, **kwargs)


def option_label(name: str) -> str:
    """The label of an option's component ("face_box" -> "Face box"); errors name the option by it."""
    if name == "ref_video":
        return REF_VIDEO_LABEL
    if name == "ref_info":
        return REF_USE_LABEL
    return name.replace("_", " ").capitalize()


def shown_in_ui(error: SadTalkerError) -> str:
    """The error's message with an option named by its component's label ("Face box: got ...")."""
    if isinstance(error, OptionError) and error.option is not None:
        return error.shown_as(option_label(error.option))
    return str(error)


def option_component(gr, option: Option, default: Any):
    """The input component for one option, with the option's help as ``info``."""
    common = dict(label=option_label(option.name), info=option.help, elem_id=f"sadtalker_{option.name}")
    if option.kind == "bool":
        return make(gr.Checkbox, value=bool(default), **common)
    if option.choices is not None:
        choices = [str(c) for c in option.choices] + ([NONE_CHOICE] if option.optional else [])
        value = NONE_CHOICE if default is None else str(default)
        if len(choices) <= 5:
            return make(gr.Radio, choices=choices, value=value, **common)
        return make(gr.Dropdown, choices=choices, value=value, **common)
    if option.kind in ("int", "float") and not option.optional:
        lo, hi, step = SLIDER_RANGES.get(option.name, (option.minimum, option.maximum,
                                                         1 if option.kind == "int" else 0.01))
        return make(gr.Slider, minimum=lo, maximum=hi, step=step, value=default, **common)
    placeholder = {"angles": "e.g. -20 20 (degrees)", "box": "x0 y0 x1 y1", "landmarks": "JSON: [[x, y], ...]",
                   "int": "empty = automatic", "float": "empty = off"}.get(option.kind, "")
    value = "" if default is None else (json.dumps(default) if isinstance(default, list) else str(default))
    return make(gr.Textbox, value=value, placeholder=placeholder, lines=1, **common)


def ui_value_to_option(option: Option, value: Any) -> Any:
    """What ``GenerationConfig.from_options`` should see for a component value (empty and "none" mean unset)."""
    if isinstance(value, str):
        text = value.strip()
        if option.optional and text in ("", NONE_CHOICE):
            return None
        if option.kind == "landmarks" and text.startswith(("[", "{")):
            try:
                return json.loads(text)
            except ValueError:
                return text
        return text
    return value


def _file_of(value: Any) -> Any:
    """A video component's value as a path (some gradio versions hand back {"name"/"path": ...}), or None."""
    if isinstance(value, dict):
        value = value.get("path") or value.get("name")
    return value or None


def _ref_options(ref_video: Any, ref_use: str | None) -> dict:
    ref_video = _file_of(ref_video)
    if not ref_video:
        return {}
    return {"ref_video": ref_video, "ref_info": ref_use or REF_USE_DEFAULT}


def format_info(result) -> str:
    # the seed first: a random run can only be repeated with the seed it used
    shown = {"seed": result.options.get("seed"), **result.info}
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                   for k, v in shown.items())
    return (f"<div class='sadtalker-info'><p>Saved <code>{html.escape(str(result.video_path))}</code> "
            f"(parameters in <code>{html.escape(result.sidecar_path.name)}</code>)</p>"
            f"<table>{rows}</table></div>")


def format_notes(notes: list[str]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li>{html.escape(note)}</li>" for note in notes)
    return f"<div class='sadtalker-notes'><ul>{items}</ul></div>"


def format_error(message: str) -> str:
    return f"<div class='sadtalker-error'><pre>{html.escape(message)}</pre></div>"


def servable_path(path) -> str:
    """``path``, or a temp copy when it lies outside the working folder and the temp folder: gradio 4+
    refuses to serve other files unless the app allowed their folder."""
    path = Path(path).resolve()
    for root in (Path.cwd(), Path(tempfile.gettempdir())):
        if path.is_relative_to(root.resolve()):
            return str(path)
    copy = Path(tempfile.mkdtemp(prefix="sadtalker_")) / path.name
    shutil.copyfile(path, copy)
    return str(copy)


@dataclass
class TabParts:
    blocks: Any
    source_image: Any
    generate_button: Any
    interrupt_button: Any
    video: Any
    crop_preview: Any
    output_dir: Any
    info: Any
    checkpoint_notice: Any
    generate: Callable  # the function wired to the Generate button (wrapped), inputs in ``inputs`` order
    inputs: list
    live_preview: Any = None  # the image updated while rendering (streaming front ends only)
    consent_note: Any = None


def build_ui(runner: JobRunner, control: JobControl, *, lock: ContextManager | None = None,
             wrap: Callable[[Callable], Callable] | None = None, task_id: bool = False,
             submit_js: str | None = None, defaults: dict | None = None,
             title: str | None = None, live_preview: bool | None = None) -> TabParts:
    """Builds the Blocks; ``wrap`` wraps the generate function (the host's GPU-queue wrapper).

    With ``task_id`` the first input is a hidden task-id textbox that ``submit_js`` fills, so the host's
    progress bar can follow the job. The last output is an HTML box (the host appends "Time taken" to it).
    ``live_preview``: the Generate function is a generator that shows the newest rendered frame while the
    job runs, then the video. Default: only without ``wrap``, since host wrappers return what the function
    returns and do not iterate generators (hosts show previews through their own progress API instead).
    """
    if live_preview is None:
        live_preview = wrap is None
    import gradio as gr

    values = {o.name: o.default for o in OPTIONS}
    values.update(defaults or {})
    option_inputs: dict[str, Any] = {}

    with gr.Blocks(analytics_enabled=False) as blocks:
        if title:
            gr.Markdown(f"## {title}")
        def notice_html(size, preprocess) -> str:
            """What the chosen size / preprocess still miss, as the checkpoint folders are now (a user may
            download the files while the UI is up)."""
            problem = runner.checkpoint_problem(size=int(size), preprocess=str(preprocess))
            return (format_error(problem) if problem else "") + format_notes(runner.setup_notes())

        checkpoint_notice = make(gr.HTML, value=notice_html(values["size"], values["preprocess"]),
                                 elem_id="sadtalker_checkpoint_notice")
        with make(gr.Row, elem_id="sadtalker_main_row"):
            with make(gr.Column, elem_id="sadtalker_inputs"):
                # a PIL image, not a file path: Forge replaces gradio's save_pil_to_cache with a function that
                # lacks its name= argument, so every type="filepath" image fails there (real Forge, TypeError)
                source_image = make(gr.Image, label="Source image", type="pil",
                                    elem_id="sadtalker_source_image")
                consent_note = make(gr.Markdown, value=CONSENT_NOTE, elem_id="sadtalker_consent")
                audio_inputs = _audio_inputs(gr)
                with make(gr.Accordion, label="Dub a video instead (optional)", open=False,
                          elem_id="sadtalker_dub"):
                    source_video = make(gr.Video, label="Video to dub: its lips follow the audio (leave the "
                                        "source image empty)", sources=["upload"],
                                        elem_id="sadtalker_source_video")
                with make(gr.Accordion, label="Reference video (optional)", open=False,
                          elem_id="sadtalker_reference"):
                    ref_video = make(gr.Video, label=REF_VIDEO_LABEL, sources=["upload"],
                                     elem_id="sadtalker_ref_video")
                    ref_use = make(gr.Radio, label=REF_USE_LABEL, choices=list(REF_INFO),
                                   value=REF_USE_DEFAULT, info=OPTIONS_BY_NAME["ref_info"].help,
                                   elem_id="sadtalker_ref_use")
            with make(gr.Column, elem_id="sadtalker_settings"):
                for name in MAIN_OPTIONS:
                    option_inputs[name] = option_component(gr, OPTIONS_BY_NAME[name], values[name])
                with make(gr.Accordion, label="Advanced", open=False, elem_id="sadtalker_advanced"):
                    for option in OPTIONS:
                        if option.name not in MAIN_OPTIONS and option.name not in REFERENCE_OPTIONS:
                            option_inputs[option.name] = option_component(gr, option, values[option.name])
            with make(gr.Column, elem_id="sadtalker_outputs"):
                with make(gr.Row):
                    generate_button = make(gr.Button, value="Generate", variant="primary",
                                           elem_id="sadtalker_generate")
                    interrupt_button = make(gr.Button, value="Interrupt", elem_id="sadtalker_interrupt")
                live = None
                if live_preview:
                    live = make(gr.Image, label="Rendering...", type="numpy", interactive=False, visible=False,
                                elem_id="sadtalker_live_preview")
                video = make(gr.Video, label="Result", interactive=False, elem_id="sadtalker_result")
                crop_preview = make(gr.Image, label="Face crop", type="numpy", interactive=False,
                                    elem_id="sadtalker_crop_preview")
                output_dir = make(gr.Textbox, label="Output folder", value=str(runner.config().output_dir),
                                  interactive=False, elem_id="sadtalker_output_dir")
                info = make(gr.HTML, value="", elem_id="sadtalker_info")
        task_box = make(gr.Textbox, visible=False, elem_id="sadtalker_id_task") if task_id else None

        option_names = list(option_inputs)

        def generate(*args):
            if task_id:
                args = args[1:]
            count = len(audio_inputs)
            image, audio_values = args[0], args[1:1 + count]
            video_in, use, option_values = args[1 + count], args[2 + count], args[3 + count:-1]
            to_dub = _file_of(args[-1])
            audio = next((a for a in audio_values if a), None)
            folder = str(runner.config().output_dir)
            if image is None and not to_dub:
                return None, None, folder, format_error("Add a source image (a portrait) first, or a video to dub.")
            if image is not None and to_dub:
                return None, None, folder, format_error("Give either a source image or a video to dub, not both: "
                                                        "clear one of them.")
            raw = {n: ui_value_to_option(OPTIONS_BY_NAME[n], v) for n, v in zip(option_names, option_values)}
            raw.update(_ref_options(video_in, use))
            try:  # validated once, here; the job gets the config as it is
                config = GenerationConfig.from_options(raw)
            except OptionError as error:
                return None, None, folder, format_error(shown_in_ui(error))
            if audio is None and config.needs_audio:
                return None, None, folder, format_error(
                    f"Add the driving audio (upload or record), or set {option_label('idle_seconds')} for a video "
                    f"without speech, or a {REF_VIDEO_LABEL.lower()} with \"{RefInfo.ALL}\" to use its audio.")
            with (lock or contextlib.nullcontext()), \
                    control.scope("sadtalker", runner.timings) as (progress, cancel):
                try:
                    result = runner.run(image, audio, config, progress=progress, cancel=cancel,
                                        preview=control.preview, source_video=to_dub)
                except Cancelled:
                    return None, None, folder, format_error("Interrupted.")
                except SadTalkerError as error:
                    return None, None, folder, format_error(shown_in_ui(error))
            return (servable_path(result.video_path), result.crop_preview, str(result.video_path.parent),
                    format_info(result))

        def generate_streaming(*args):
            """``generate`` in a worker thread; yields the newest frame while it runs, then the results."""
            outcome: dict = {}

            def work():
                try:
                    outcome["result"] = generate(*args)
                except BaseException as error:  # re-raised below, in the event's own thread
                    outcome["error"] = error

            worker = threading.Thread(target=work, name="sadtalker-job", daemon=True)
            worker.start()
            shown = None
            try:
                while worker.is_alive():
                    worker.join(PREVIEW_INTERVAL)
                    frame = control.latest_frame()
                    if frame is not None and frame is not shown:
                        shown = frame
                        yield (gr.update(value=frame, visible=True),) + (gr.update(),) * 4
            finally:
                if worker.is_alive():  # the page went away mid-job: stop rendering instead of holding the lock
                    control.interrupt()
                    worker.join()
            if "error" in outcome:
                raise outcome["error"]
            yield (gr.update(value=None, visible=False), *outcome["result"])

        inputs = ([task_box] if task_box is not None else []) + [source_image, *audio_inputs, ref_video,
                                                                   ref_use, *option_inputs.values(), source_video]
        outputs = [video, crop_preview, output_dir, info]
        if live_preview:
            handler = wrap(generate_streaming) if wrap else generate_streaming
            outputs = [live, *outputs]
        else:
            handler = wrap(generate) if wrap else generate
        # with submit_js the host's own progress bar follows the job; gradio's overlay would be a second one
        listen(generate_button.click, handler, js=submit_js, inputs=inputs, outputs=outputs,
               show_progress=submit_js is None)
        notice_inputs = [option_inputs["size"], option_inputs["preprocess"]]
        for event in (generate_button.click, option_inputs["size"].change, option_inputs["preprocess"].change):
            listen(event, notice_html, inputs=notice_inputs, outputs=[checkpoint_notice], queue=False,
                   show_progress=False)
        listen(interrupt_button.click, control.interrupt, inputs=[], outputs=[], queue=False)

    return TabParts(blocks=blocks, source_image=source_image, generate_button=generate_button,
                    interrupt_button=interrupt_button, video=video, crop_preview=crop_preview,
                    output_dir=output_dir, info=info, checkpoint_notice=checkpoint_notice, generate=handler,
                    inputs=inputs, live_preview=live, consent_note=consent_note)


def _audio_inputs(gr) -> list:
    """Upload and microphone in one component where gradio allows it (4+), else two (gradio 3)."""
    accepted = _accepted_params(gr.Audio.__init__)
    if accepted is None or "sources" in accepted:
        return [make(gr.Audio, label="Driving audio (upload or record)", type="filepath",
                     sources=["upload", "microphone"], elem_id="sadtalker_audio")]
    with make(gr.Tabs, elem_id="sadtalker_audio_tabs"):
        with make(gr.TabItem, label="Upload audio"):
            upload = make(gr.Audio, label="Driving audio", type="filepath", source="upload",
                          elem_id="sadtalker_audio")
        with make(gr.TabItem, label="Record"):
            record = make(gr.Audio, label="Record audio", type="filepath", source="microphone",
                          elem_id="sadtalker_audio_record")
    return [upload, record]
