"""SadTalker tab for AUTOMATIC1111 / Forge / SD.Next: callbacks only, no work at import.

Registers the tab (``on_ui_tabs``), its settings (``on_ui_settings``), "Send to SadTalker" buttons beside the
txt2img / img2img send-to buttons (``on_after_component`` + the host's paste-field registration) and the REST
routes (``on_app_started``). Generation goes through the host's GPU queue wrapper, so the host's progress
bar, "Time taken" and Interrupt work; API jobs take the same ``queue_lock``.

Rules that keep the tab working on every supported host version: no ``name=`` on callbacks, ``state.begin``
never called with keywords, ``run_pip`` only positionally (install.py), paths from ``__file__``,
``modules.paths`` and ``opts``, feature detection instead of version checks.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from modules import script_callbacks

#: resolved now: the host's ``scripts.basedir()`` is the extension folder only while this file is imported
EXTENSION_DIR = Path(__file__).resolve().parents[1]
TAB_ID = "sadtalker"
TAB_TITLE = "SadTalker"
SETTINGS_SECTION = ("sadtalker", "SadTalker")
#: options whose tab default is a WebUI setting (``sadtalker_<name>``), with the setting's label; the choices
#: and the setting's own default come from the option table
DEFAULT_SETTINGS = {
    "size": "Default face size",
    "preprocess": "Default preprocess",
    "enhancer": "Default face enhancer",
    "face_detector": "Default face detector (auto: fan when its weights are there or can be downloaded, else "
                     "dlib)",
}
GALLERY_TABS = ("txt2img", "img2img")
PROGRESS_STEPS = 1000  # the host's "sampling steps" of a SadTalker job: thousandths of its expected time


def _import_core():
    """``sadtalker_core`` from this extension's folder (the host drops that folder from sys.path after import)."""
    added = str(EXTENSION_DIR) not in sys.path
    if added:
        sys.path.insert(0, str(EXTENSION_DIR))
    try:
        return importlib.import_module("sadtalker_core")
    finally:
        if added:
            sys.path.remove(str(EXTENSION_DIR))


_import_core()  # cheap: the package defers torch and the networks to the first job


def _host_module(*names: str):
    """The first importable module among ``names`` (hosts moved some modules between releases)."""
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def _opt(key: str, default):
    from modules import shared

    # unregistered under --nowebui (no on_ui_settings there): fall back instead of AttributeError
    value = getattr(shared.opts, key, default)
    return default if value is None else value


def _clean_path(text) -> str:
    return str(text).strip().strip('"').strip("'").strip() if text else ""


def checkpoint_candidates() -> list[Path]:
    """Discovery order: --sadtalker-checkpoints, $SADTALKER_CHECKPOINTS, the setting, models/SadTalker,
    the extension's checkpoints/."""
    from modules import paths, shared

    configured = (getattr(shared.cmd_opts, "sadtalker_checkpoints", None),
                  os.environ.get("SADTALKER_CHECKPOINTS"), _opt("sadtalker_checkpoint_dir", ""))
    folders = [Path(_clean_path(c)) for c in configured if _clean_path(c)]
    folders += [Path(paths.models_path) / "SadTalker", EXTENSION_DIR / "checkpoints"]
    return folders


def default_output_dir() -> Path:
    """SD.Next's video folder, else ``outdir_samples`` when set, else the host's outputs folder."""
    from modules import paths, shared

    video_dir = _clean_path(getattr(shared.opts, "outdir_video", ""))
    if video_dir:
        return Path(video_dir) / "sadtalker"
    samples = _clean_path(getattr(shared.opts, "outdir_samples", ""))
    if samples:
        return Path(samples) / "sadtalker"
    base = getattr(paths, "default_output_dir", None) or Path(paths.data_path) / "outputs"
    return Path(base) / "sadtalker"


def _device():
    from modules import devices

    device_for = getattr(devices, "get_device_for", None)
    if device_for is not None:
        try:
            return device_for("sadtalker")  # honours --use-cpu sadtalker
        except Exception:  # Forge's shim has a different signature; its `device` is the right one
            pass
    return getattr(devices, "device", None)


#: tab setting -> render precision; "auto" follows the host's flags and device
PRECISIONS = ("auto", "float32", "float16", "bfloat16")


def _precision(device):
    """The render dtype: the setting, else float32 when the host runs in full precision (``--no-half``,
    ``--precision full``: users pass them for cards that give black or NaN frames in half precision) or on a
    CPU, else the host's own inference dtype. ``None`` lets the pipeline choose for the device."""
    import torch
    from modules import devices, shared

    chosen = _opt("sadtalker_precision", "auto")
    if chosen in PRECISIONS[1:]:
        return getattr(torch, chosen)
    if device is None or torch.device(device).type == "cpu":
        return torch.float32
    flags = shared.cmd_opts
    if getattr(flags, "no_half", False) or getattr(flags, "precision", None) == "full":
        return torch.float32
    host_dtype = getattr(devices, "dtype_inference", None) or getattr(devices, "dtype", None)
    return host_dtype if isinstance(host_dtype, torch.dtype) else None


def _pin_file():
    from modules import paths

    root = getattr(paths, "script_path", None)
    return Path(root) / os.environ.get("REQS_FILE", "requirements_versions.txt") if root else None


def _free_memory() -> None:
    from modules import devices

    getattr(devices, "torch_gc", lambda: None)()


def _runner_config():
    from sadtalker_core.frontends.jobs import RunnerConfig

    device = _device()
    return RunnerConfig(checkpoint_dirs=checkpoint_candidates(),
                        output_dir=Path(_clean_path(_opt("sadtalker_outdir", "")) or default_output_dir()),
                        device=device, dtype=_precision(device), keep_loaded=bool(_opt("sadtalker_keep_loaded", True)),
                        extra_sidecar={"host": "stable-diffusion-webui"}, pin_file=_pin_file(),
                        c2pa_cert=_optional_path("sadtalker_c2pa_cert"), c2pa_key=_optional_path("sadtalker_c2pa_key"))


def _optional_path(setting: str) -> Path | None:
    """A path setting; empty: not set (the job then falls back to $SADTALKER_C2PA_CERT / _KEY)."""
    value = _clean_path(_opt(setting, ""))
    return Path(value) if value else None


_runner = None


def _console(line: str) -> None:
    print(line, flush=True)  # the host's console: one line when a job starts and one when it ends


def runner():
    """One JobRunner per process (kept across Reload UI, so loaded models survive it)."""
    global _runner
    core = sys.modules["sadtalker_core"]
    shared_runner = getattr(core, "_webui_runner", None)
    if shared_runner is None:
        from sadtalker_core.frontends.jobs import JobRunner

        shared_runner = JobRunner(_runner_config, after_unload=_free_memory, report=_console)
        core._webui_runner = shared_runner
    _runner = shared_runner
    return _runner


def _job_control_class():
    from sadtalker_core.frontends.api import JobControl

    class HostJobControl(JobControl):
        """Progress through ``shared.state`` (host progress bar, /internal/progress, /sdapi/v1/progress), cancel =
        the host's Interrupt.

        The whole job is one host job whose "sampling steps" are thousandths of its expected time, so the
        host's bar and ETA (elapsed / progress) follow the work; the text names the stage and frames.
        """

        def __init__(self, manage_state: bool):
            super().__init__()
            self.manage_state = manage_state  # API jobs: no wrapper has called state.begin for us

        def scope(self, title, timings=None):
            import contextlib
            import threading

            from modules import shared

            job = super().scope(title, timings)

            @contextlib.contextmanager
            def host_scope():
                forge_utils = _host_module("modules_forge.utils", "modules_forge.forge_util")
                if forge_utils is not None and hasattr(forge_utils, "prepare_free_memory"):
                    forge_utils.prepare_free_memory()  # Forge keeps SD weights on the GPU otherwise
                if self.manage_state:
                    shared.state.begin(title)  # positional: the keyword is job= on A1111, title= on SD.Next
                watching = threading.Event()
                watcher = threading.Thread(target=self._watch_interrupt, args=(watching,), daemon=True,
                                           name="sadtalker-interrupt-watch")
                try:
                    with job:
                        self._publish()
                        watcher.start()
                        yield self.progress, self
                finally:
                    watching.set()
                    if watcher.is_alive():
                        watcher.join()
                    shared.state.textinfo = None
                    if self.manage_state:
                        shared.state.end()

            return host_scope()

        def progress(self, stage, done, total):
            super().progress(stage, done, total)
            self._publish()

        def _publish(self):
            from modules import shared

            tracker, state = self.tracker, shared.state
            if tracker is None:
                return
            state.job_count, state.job_no = 1, 0
            state.sampling_steps = PROGRESS_STEPS
            state.sampling_step = int(tracker.fraction() * PROGRESS_STEPS)
            state.job = f"SadTalker: {tracker.stage or 'starting'}"
            state.textinfo = f"SadTalker {tracker.text()}"  # one line: the host JS hides multi-line text

        def preview(self, frame):
            """The newest rendered frame as the host's live preview (/internal/progress, the tab's result box),
            when the host's "Show live previews" setting is on."""
            from modules import shared

            super().preview(frame)
            if self.tracker is None or not getattr(shared.opts, "live_previews_enable", True):
                return
            from PIL import Image

            shared.state.assign_current_image(Image.fromarray(frame))

        def _watch_interrupt(self, done):
            """Shows "Stopping after this batch" as soon as the host's Interrupt is pressed (the pipeline
            itself checks between batches)."""
            while not done.wait(0.2):
                tracker = self.tracker
                if tracker is not None and not tracker.stopping and self.is_set():
                    tracker.stopping = True
                    self._publish()

        def is_set(self):
            from modules import shared

            return bool(shared.state.interrupted or getattr(shared.state, "stopping_generation", False))

        def interrupt(self):
            from modules import shared

            shared.state.interrupt()
            super().interrupt()
            self._publish()

    return HostJobControl


# --- settings -------------------------------------------------------------------------------------------

def on_ui_settings():
    import gradio as gr
    from modules import shared

    from sadtalker_core.frontends.ui import NONE_CHOICE
    from sadtalker_core.options import OPTIONS_BY_NAME

    def add(key, default, label, component=None, component_args=None):
        shared.opts.add_option(key, shared.OptionInfo(default, label, component, component_args,
                                                      section=SETTINGS_SECTION))

    def add_default_of(name: str, label: str):
        """A setting holding the tab's default for option ``name``: its choices and default from the table."""
        option = OPTIONS_BY_NAME[name]
        choices = [str(c) for c in option.choices] + ([NONE_CHOICE] if option.optional else [])
        default = NONE_CHOICE if option.default is None else str(option.default)
        add(f"sadtalker_{name}", default, label, gr.Radio, {"choices": choices})

    add("sadtalker_checkpoint_dir", "", "Checkpoint folder (empty: --sadtalker-checkpoints, $SADTALKER_CHECKPOINTS, "
        "models/SadTalker, then the extension's checkpoints/)")
    add("sadtalker_outdir", str(default_output_dir()), "Output folder for videos and their parameter JSON")
    for name, label in DEFAULT_SETTINGS.items():
        add_default_of(name, label)
    add("sadtalker_precision", PRECISIONS[0], "Render precision (auto: float32 with --no-half, --precision full or "
        "on CPU, else the WebUI's; choose float32 if videos come out black or noisy)", gr.Radio,
        {"choices": list(PRECISIONS)})
    add("sadtalker_keep_loaded", True, "Keep SadTalker models loaded between jobs (uncheck to free GPU memory "
        "after each job)")
    add("sadtalker_c2pa_cert", "", "C2PA signing certificate chain (PEM file) for signed content credentials in "
        "every video (empty: $SADTALKER_C2PA_CERT, else the video carries AI-generated metadata only)")
    add("sadtalker_c2pa_key", "", "Private key (PEM file) of that certificate (empty: $SADTALKER_C2PA_KEY)")
    add("sadtalker_api_max_upload_mb", 64, "Largest upload per field accepted by /sadtalker/v1/generate (MB)")


def _defaults_from_settings() -> dict:
    """The tab's defaults for the options the settings hold; a setting not registered (``--nowebui``) keeps
    the table's default, as ``ui.build_ui`` takes any option left out from the table."""
    from sadtalker_core.frontends.ui import ui_value_to_option
    from sadtalker_core.options import OPTIONS_BY_NAME

    values = {}
    for name in DEFAULT_SETTINGS:
        value = _opt(f"sadtalker_{name}", None)
        if value is not None:
            values[name] = ui_value_to_option(OPTIONS_BY_NAME[name], str(value))
    return values


# --- "Send to SadTalker" --------------------------------------------------------------------------------

_send_buttons: list[tuple[object, object]] = []  # (button, gallery), gathered while txt2img/img2img are built
_galleries: dict[str, object] = {}
_last_gallery = [None]


def _tab_hidden() -> bool:
    return TAB_TITLE in (_opt("hidden_tabs", []) or [])


def on_before_ui():
    _send_buttons.clear()
    _galleries.clear()
    _last_gallery[0] = None


def _make_send_button(tab: str):
    ui_components = _host_module("modules.ui_components")
    tool_button = getattr(ui_components, "ToolButton", None)
    if tool_button is None:
        import gradio as gr

        return gr.Button("🗣️", elem_id=f"{tab}_send_to_sadtalker", elem_classes=["tool"])
    return tool_button("🗣️", elem_id=f"{tab}_send_to_sadtalker")


def on_after_component(component, **kwargs):
    elem_id = kwargs.get("elem_id") or getattr(component, "elem_id", None)
    if not elem_id or _tab_hidden():
        return
    if elem_id.endswith("_gallery"):
        _last_gallery[0] = component
        _galleries[elem_id[: -len("_gallery")]] = component
        return
    # A1111 / Forge: "<tab>_send_to_extras"; SD.Next: "extras_tab" in every panel, after that panel's gallery
    if elem_id in {f"{tab}_send_to_extras" for tab in GALLERY_TABS}:
        tab = elem_id[: -len("_send_to_extras")]
        gallery = _galleries.get(tab)
    elif elem_id == "extras_tab" and _last_gallery[0] is not None:
        tab = next((t for t, g in _galleries.items() if g is _last_gallery[0]), None)
        gallery = _last_gallery[0]
    else:
        return
    if tab in GALLERY_TABS and gallery is not None:
        _send_buttons.append((_make_send_button(tab), gallery))


def _register_send_to(source_image) -> None:
    copypaste = _host_module("modules.infotext_utils", "modules.generation_parameters_copypaste")
    if copypaste is None or not _send_buttons:
        return
    # destination first, bindings after: a binding to an unregistered tab aborts the host's UI build
    copypaste.add_paste_fields(TAB_ID, source_image, None)
    for button, gallery in _send_buttons:
        copypaste.register_paste_params_button(copypaste.ParamBinding(
            paste_button=button, tabname=TAB_ID, source_image_component=gallery))


# --- tab ------------------------------------------------------------------------------------------------

def _gpu_wrap(fn):
    call_queue = _host_module("modules.call_queue")
    wrapper = getattr(call_queue, "wrap_gradio_gpu_call", None)
    if wrapper is not None:
        return wrapper(fn, extra_outputs=[None, None, ""])  # outputs minus the last (info HTML)
    return call_queue.wrap_queued_call(fn)


tab_parts = None  # the last built tab (its components and wrapped generate function)


def on_ui_tabs():
    global tab_parts
    from sadtalker_core.frontends import ui

    try:
        parts = ui.build_ui(runner(), _job_control_class()(manage_state=False), wrap=_gpu_wrap, task_id=True,
                            submit_js="submit_sadtalker", defaults=_defaults_from_settings())
    except Exception as error:  # fail soft: show what broke in the tab instead of losing the tab
        import gradio as gr

        with gr.Blocks(analytics_enabled=False) as blocks:
            gr.HTML(ui.format_error(f"The SadTalker tab could not be built: {type(error).__name__}: {error}"))
        return [(blocks, TAB_TITLE, TAB_ID)]
    tab_parts = parts
    if not _tab_hidden():
        _register_send_to(parts.source_image)
    return [(parts.blocks, TAB_TITLE, TAB_ID)]


# --- REST API -------------------------------------------------------------------------------------------

def on_app_started(demo, app):
    from modules import call_queue, shared

    from sadtalker_core.frontends import api

    def limits():
        mb = int(_opt("sadtalker_api_max_upload_mb", 64))
        return api.Limits(image=mb << 20, audio=mb << 20, video=mb << 20)

    # extension routes do not inherit --api-auth from the host's Api class: enforce it here
    api.add_routes(app, runner(), lock=call_queue.queue_lock, control=_job_control_class()(manage_state=True),
                   dependencies=api.auth_dependencies(getattr(shared.cmd_opts, "api_auth", None)),
                   limits=limits)


script_callbacks.on_before_ui(on_before_ui)
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_after_component(on_after_component)
script_callbacks.on_ui_tabs(on_ui_tabs)
script_callbacks.on_app_started(on_app_started)
