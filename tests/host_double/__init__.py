"""A faithful test double of the AUTOMATIC1111 WebUI host (A1111 1.10 by default; flavors "a1111-1.8",
"forge", "sdnext"), built from /work/shared/docs/a1111-host-api.md section 10. Citations are that doc's:
A18 = A1111 v1.8.0, A110 = 1.10.1, FG = Forge main, SDN = SD.Next.

Emulated behaviour, and the host file it comes from (each module under ``webui_root/`` says more):

* ``launch`` (A18 launch.py, modules/launch_utils.py:88-143): is_installed / run_pip / run; install.py runs
  as a subprocess with PYTHONPATH=<webui root> (launch_utils.py:227-240); SD.Next's run_pip has no ``live``.
* ``modules.paths`` / ``paths_internal`` (A18 paths_internal.py:12-37): data_path != script_path,
  default_output_dir "outputs" (1.10) / "output" (1.8).
* ``modules.shared_cmd_options`` (A18 :9-18, script_loading.py:15-31): every preload(parser) before parse.
* ``modules.options`` / ``shared`` (A18 options.py, shared.py, shared_options.py): OptionInfo, add_option,
  attribute fallback, set, onchange; section must be a 2-tuple (ui_settings.py:130-135).
* ``modules.shared_state`` (A18 shared_state.py:12-135; SDN begin(title=)).
* ``modules.call_queue`` + ``fifo_lock`` (A18 call_queue.py:7-117, fifo_lock.py): non-reentrant FIFO
  queue_lock (SD.Next: threading.Lock), wrap_gradio_gpu_call semantics (task id, begin/end, list(res),
  "Time taken" appended to res[-1], error tuple, flag reset).
* ``modules.progress`` (A18 progress.py:76-141) and ``/internal/progress``; ``modules.api.api`` (A18 api.py:
  77-132,199-283,593-643): Api with per-route --api-auth, /sdapi/v1/progress, /sdapi/v1/interrupt.
* ``modules.devices`` (A18 devices.py, shared_init.py:26-32), ``modules.ui_tempdir`` (A18 ui_tempdir.py:16-31).
* ``modules.script_callbacks`` (A18/A110 script_callbacks.py): caller file recorded, exceptions reported and
  skipped, reverse order for before_ui / script_unloaded, ``name=`` only on 1.9+/Forge.
* ``modules.scripts`` (A18 scripts.py:355-364,499-542): basedir() valid only during import,
  spec_from_file_location(basename), extension dir on sys.path during the import (kept on Forge).
* ``modules.gradio_extensons`` (A18 gradio_extensons.py:17-80): before/after_component on every component
  and layout block; FG gradio_extensions.py:130-180 ``_js`` -> ``js``.
* ``modules.infotext_utils`` (+ alias generation_parameters_copypaste; A18 infotext_utils.py:16-182; SD.Next
  has only the alias and skips unknown destinations), ``ui_components.ToolButton`` (A18 :12-20),
  ``ui_common.create_output_panel`` (A18 ui_common.py:164-305; SD.Next ``extras_tab`` buttons).
* ``Host`` below mirrors the lifecycle of A18 webui.py / modules/ui.py (section 1.3): load_scripts ->
  before_ui -> settings (1.9+: before the tabs; 1.8: after) -> txt2img/img2img/extras panels -> ui_tabs ->
  main Blocks: connect_paste_params_buttons, then gr.TabItem(title, id=elem_id, elem_id="tab_"+elem_id)
  + render -> queue(64) / launch -> Api when --api -> app_started(demo, app); Reload UI (before_reload,
  script_unloaded, re-import, a new app) and --nowebui (app_started(None, app), no settings, no tabs).
* Page: host JS globals (javascript/host.js: A18 script.js, ui.js, progressbar.js) plus every extension's
  javascript/*.js and style.css injected by patching gradio's TemplateResponse, as A18
  ui_gradio_extensions.py:12-58 does (inlined here instead of ``file=`` links).

Not emulated: SD model loading, face_restoration / gfpgan_model / images / safe (the extension does not use
them), ui-config.json persistence, the Settings tab UI, metadata.ini ordering.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "webui_root"
HOST_JS = Path(__file__).resolve().parent / "javascript" / "host.js"
REPO = Path(__file__).resolve().parents[2]
FLAVORS = ("a1111", "a1111-1.8", "forge", "sdnext")
_ENV_KEYS = ("HOST_DOUBLE_SCRIPT_PATH", "HOST_DOUBLE_DATA_PATH", "HOST_DOUBLE_EXTENSION_DIRS", "HOST_DOUBLE_ARGS")


def _purge_host_modules() -> None:
    for name in list(sys.modules):
        if name == "modules" or name.startswith("modules.") or name == "launch":
            del sys.modules[name]
    for name in [n for n, m in sys.modules.items()
                 if getattr(m, "__file__", None) and str(m.__file__).endswith(os.sep + "sadtalker_tab.py")]:
        del sys.modules[name]


class Host:
    """One emulated WebUI process. ``args`` is the command line (``--api --api-auth u:p`` ...)."""

    def __init__(self, tmp_path: Path, *, flavor: str = "a1111", extension_dir: Path = REPO, args: str = "",
                 separate_data_dir: bool = True, config: dict | None = None, gallery_images: dict | None = None):
        if flavor not in FLAVORS:
            raise ValueError(f"flavor must be one of {FLAVORS}")
        self.flavor = flavor
        self.extension_dir = Path(extension_dir)
        self.script_path = Path(tmp_path) / "webui"
        self.data_path = Path(tmp_path) / "data" if separate_data_dir else self.script_path
        for folder in (self.script_path, self.data_path / "models", self.data_path / "extensions"):
            folder.mkdir(parents=True, exist_ok=True)
        if config:
            import json

            (self.data_path / "config.json").write_text(json.dumps(config))
        self._saved_env = {k: os.environ.get(k) for k in _ENV_KEYS}
        os.environ.update(HOST_DOUBLE_SCRIPT_PATH=str(self.script_path), HOST_DOUBLE_DATA_PATH=str(self.data_path),
                          HOST_DOUBLE_EXTENSION_DIRS=str(self.extension_dir), HOST_DOUBLE_ARGS=args)
        self._saved_sys_path = list(sys.path)
        _purge_host_modules()
        sys.path.insert(0, str(ROOT))
        import modules

        modules.FLAVOR = flavor
        from modules import gradio_extensons, infotext_utils, shared, ui_common  # noqa: F401  (shared: preload + parse)

        if flavor == "sdnext":  # only the old module name exists there
            sys.modules["modules.infotext_utils"] = None
            del modules.infotext_utils
        ui_common.initial_images.update(gallery_images or {})
        gradio_extensons.install()
        self.modules = modules
        self.demo = None
        self.app = None
        self.url = None
        self._template_original = None

    # --- lifecycle (A18 webui.py, modules/ui.py) ---------------------------------------------------------

    @property
    def shared(self):
        from modules import shared

        return shared

    def copypaste(self):
        import importlib

        return importlib.import_module("modules.generation_parameters_copypaste")

    def load_scripts(self) -> None:
        from modules import scripts

        scripts.load_scripts([str(self.extension_dir)])

    def create_ui(self):
        import gradio as gr

        from modules import script_callbacks, shared, ui_common

        copypaste = self.copypaste()
        script_callbacks.before_ui_callback()
        copypaste.reset()
        if self.flavor != "a1111-1.8":
            script_callbacks.ui_settings_callback()
        panels = []
        for tab, label in (("txt2img", "txt2img"), ("img2img", "img2img"), ("extras", "Extras")):
            with gr.Blocks(analytics_enabled=False) as interface:
                if tab == "txt2img":
                    gr.Textbox(label="Prompt", elem_id="txt2img_prompt")
                elif tab == "img2img":
                    copypaste.add_paste_fields("img2img", gr.Image(label="Image", type="pil",
                                                                   elem_id="img2img_image"), None)
                else:
                    copypaste.add_paste_fields("extras", gr.Image(label="Source", type="pil",
                                                                  elem_id="extras_image"), None)
                ui_common.create_output_panel(tab, str(self.data_path / "outputs" / tab))
            panels.append((interface, label, tab))
        if self.flavor == "a1111-1.8":
            script_callbacks.ui_settings_callback()
        interfaces = panels + script_callbacks.ui_tabs_callback()
        shared.tab_names = [label for _, label, _ in interfaces]
        with gr.Blocks(analytics_enabled=False, title="Stable Diffusion") as demo:
            copypaste.connect_paste_params_buttons()
            with gr.Tabs(elem_id="tabs"):
                for interface, label, ifid in interfaces:
                    if label in (shared.opts.hidden_tabs or []):
                        continue
                    with gr.TabItem(label, id=ifid, elem_id=f"tab_{ifid}"):
                        interface.render()
        if not hasattr(demo, "temp_file_sets"):
            demo.temp_file_sets = [set()]
        self.demo = shared.demo = demo
        self.interfaces = interfaces
        return demo

    def _add_host_routes(self, app) -> None:
        from modules import call_queue, progress, shared
        from modules.api.api import Api

        progress.setup_progress_api(app)
        if shared.cmd_opts.api or shared.cmd_opts.nowebui:
            Api(app, call_queue.queue_lock)

    def app_started(self, app=None):
        from fastapi import FastAPI

        from modules import script_callbacks

        self.app = app if app is not None else FastAPI()
        self._add_host_routes(self.app)
        script_callbacks.app_started_callback(self.demo, self.app)
        return self.app

    def start(self):
        """Scripts, UI and a FastAPI app (no server): returns the app for a TestClient."""
        self.load_scripts()
        self.create_ui()
        return self.app_started()

    def reload(self):
        """Reload UI (A18 webui.py:142-153): unload hooks, re-import scripts, new UI, new app."""
        from modules import script_callbacks

        script_callbacks.before_reload_callback()
        script_callbacks.script_unloaded_callback()
        self.load_scripts()
        self.create_ui()
        return self.app_started()

    def start_nowebui(self):
        """--nowebui (A18 webui.py:26-45): before_ui, then app_started(None, app); no settings, no tabs."""
        from fastapi import FastAPI

        from modules import script_callbacks

        self.load_scripts()
        script_callbacks.before_ui_callback()
        self.demo = None
        self.app = FastAPI()
        self._add_host_routes(self.app)
        script_callbacks.app_started_callback(None, self.app)
        return self.app

    def page_additions(self) -> tuple[str, str]:
        """(<script> tags for </head>, <style> for </body>): host JS, then extension javascript/, style.css."""
        scripts = [HOST_JS.read_text(encoding="utf-8")]
        js_dir = self.extension_dir / "javascript"
        if js_dir.is_dir():
            scripts += [p.read_text(encoding="utf-8") for p in sorted(js_dir.glob("*.js"))]
        css = self.extension_dir / "style.css"
        head = "".join(f"<script type=\"text/javascript\">\n{s}\n</script>\n" for s in scripts)
        body = f"<style>\n{css.read_text(encoding='utf-8')}\n</style>\n" if css.is_file() else ""
        return head, body

    def launch(self, port: int) -> str:
        """Serves the UI on 127.0.0.1:port as the host does (queue(64), launch, routes, app_started)."""
        import gradio.routes

        head, body = self.page_additions()
        original = gradio.routes.templates.TemplateResponse
        self._template_original = original

        def template_response(*args, **kwargs):
            res = original(*args, **kwargs)
            res.body = res.body.replace(b"</head>", f"{head}</head>".encode("utf8"))
            res.body = res.body.replace(b"</body>", f"{body}</body>".encode("utf8"))
            res.init_headers()
            return res

        gradio.routes.templates.TemplateResponse = template_response
        self.demo.queue(64)
        app, local_url, _ = self.demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
                                             allowed_paths=[str(self.data_path)], quiet=True)
        self.app_started(app)
        self.url = local_url
        return local_url

    def close(self) -> None:
        from modules import gradio_extensons

        if self.url and self.demo is not None:
            self.demo.close()
        if self._template_original is not None:
            import gradio.routes

            gradio.routes.templates.TemplateResponse = self._template_original
        gradio_extensons.uninstall()
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        sys.path[:] = self._saved_sys_path
        _purge_host_modules()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def install_env(tmp_path: Path, *, python: Path, flavor: str = "a1111", skip_install: bool = False,
                pin_file: Path | None = None) -> dict:
    """Environment for running an extension's install.py as the host does (subprocess, PYTHONPATH=root);
    ``python`` stands for the host's interpreter in the pip command line ``run_pip`` gives the shell."""
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT), HOST_DOUBLE_FLAVOR=flavor, HOST_DOUBLE_PYTHON=str(python),
               HOST_DOUBLE_SCRIPT_PATH=str(tmp_path), COMMANDLINE_ARGS="--skip-install" if skip_install else "")
    if pin_file is not None:
        env["REQS_FILE"] = str(pin_file)
    return env
