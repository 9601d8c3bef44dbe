"""Static conformance of the host double (tests/host_double) and of the extension against REAL WebUI source:
the 21 checks of /work/shared/docs/a1111-host-api.md section 10.1, read with ``ast`` and text search.

Host source is never in the repo or in CI. Point these variables at an unpacked source tree to run them:

    SADTALKER_HOST_SOURCE_A1111      A1111 1.10.x      SADTALKER_HOST_SOURCE_A1111_18   A1111 1.8.0
    SADTALKER_HOST_SOURCE_FORGE      Forge main        SADTALKER_HOST_SOURCE_SDNEXT     SD.Next

A tree holding ``modules_forge/`` is checked as Forge whatever variable names it: Forge's "1.10.1" commit
(the only 1.10 source the doc could read) carries Forge patches (gradio 4, permanent sys.path, no
``torch.load`` patch), so the double's "forge" flavor is what must match it.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from host_double import REPO, ROOT as DOUBLE_ROOT, HOST_JS as DOUBLE_JS

pytestmark = pytest.mark.host

HOST_SOURCE_VARIABLES = {
    "a1111": "SADTALKER_HOST_SOURCE_A1111",
    "a1111-1.8": "SADTALKER_HOST_SOURCE_A1111_18",
    "forge": "SADTALKER_HOST_SOURCE_FORGE",
    "sdnext": "SADTALKER_HOST_SOURCE_SDNEXT",
}

if not any(os.environ.get(v) for v in HOST_SOURCE_VARIABLES.values()):
    # CI has no host source (no network): one skip line instead of 21 per host
    pytest.skip(f"no host source tree given: set one of {', '.join(HOST_SOURCE_VARIABLES.values())}",
                allow_module_level=True)


class HostTree:
    """One real host source folder; ``kind`` is the double flavor that must match it."""

    def __init__(self, flavor: str, root: Path):
        self.flavor, self.root = flavor, root
        self.kind = "forge" if (root / "modules_forge").is_dir() else flavor
        self.is_sdnext = self.kind == "sdnext"
        self.has_name_kwarg = self.kind in ("a1111", "forge")

    def path(self, *candidates: str) -> Path:
        for rel in candidates:
            if (self.root / rel).is_file():
                return self.root / rel
        raise AssertionError(f"{self.flavor} ({self.root}): none of {candidates} exists")

    def text(self, *candidates: str) -> str:
        return self.path(*candidates).read_text(encoding="utf8", errors="replace")

    def tree(self, *candidates: str) -> ast.Module:
        return ast.parse(self.text(*candidates))


@pytest.fixture(params=list(HOST_SOURCE_VARIABLES), scope="module")
def host(request) -> HostTree:
    variable = HOST_SOURCE_VARIABLES[request.param]
    folder = os.environ.get(variable)
    if not folder:
        pytest.skip(f"{variable} is not set: point it at a {request.param} source tree to check the double")
    root = Path(folder)
    if not (root / "modules").is_dir():
        pytest.skip(f"{variable}={folder} is not a WebUI source tree (no modules/ folder)")
    return HostTree(request.param, root)


# --- ast helpers ------------------------------------------------------------------------------------------

class _FlavorResolver(ast.NodeTransformer):
    """Keeps only the branch of ``if flavor_is(...)`` / ``if FLAVOR == ...`` the double takes for one flavor."""

    def __init__(self, flavor: str):
        self.flavor = flavor

    def _decision(self, test):
        if isinstance(test, ast.Call) and getattr(test.func, "id", None) == "flavor_is":
            return self.flavor in [a.value for a in test.args]
        if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
            inner = self._decision(test.operand)
            return None if inner is None else not inner
        if (isinstance(test, ast.Compare) and getattr(test.left, "id", None) == "FLAVOR"
                and isinstance(test.ops[0], (ast.Eq, ast.NotEq))):
            equal = test.comparators[0].value == self.flavor
            return equal if isinstance(test.ops[0], ast.Eq) else not equal
        return None

    def visit_If(self, node):
        decision = self._decision(node.test)
        if decision is None:
            return self.generic_visit(node)
        return [self.visit(s) for s in (node.body if decision else node.orelse)]


def double_tree(rel: str, flavor: str) -> ast.Module:
    tree = ast.parse((DOUBLE_ROOT / rel).read_text(encoding="utf8"))
    return ast.fix_missing_locations(_FlavorResolver(flavor).visit(tree))


def extension_tree(rel: str) -> ast.Module:
    return ast.parse((REPO / rel).read_text(encoding="utf8"))


def defs(node) -> dict:
    """Top-level functions / classes of a module or class body (last definition wins, as at run time)."""
    return {n.name: n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}


def find_def(tree, name: str):
    found = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == name]
    assert found, f"{name} is not defined"
    return found[-1]


def params(fn) -> list[str]:
    a = fn.args
    return [x.arg for x in a.posonlyargs + a.args]


def kwonly(fn) -> list[str]:
    return [x.arg for x in fn.args.kwonlyargs]


def method_params(cls, name: str) -> list[str]:
    return params(defs(cls)[name])[1:]


def module_names(tree) -> set[str]:
    """Names bound at module level (assignments, defs, imports)."""
    names = set()
    for n in tree.body:
        if isinstance(n, ast.Assign):
            names |= {t.id for t in n.targets if isinstance(t, ast.Name)}
        elif isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name):
            names.add(n.target.id)
        elif isinstance(n, (ast.FunctionDef, ast.ClassDef)):
            names.add(n.name)
        elif isinstance(n, ast.ImportFrom):
            names |= {a.asname or a.name for a in n.names}
    return names


def fstrings(tree) -> dict[str, int]:
    """f-string templates ("{tabname}_gallery") and plain strings -> first line they appear on."""
    found = {}
    for n in ast.walk(tree):
        if isinstance(n, ast.JoinedStr):
            text = "".join(p.value if isinstance(p, ast.Constant) else "{" + ast.unparse(p.value) + "}"
                           for p in n.values)
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            text = n.value
        else:
            continue
        found.setdefault(text, n.lineno)
    return found


def calls(tree, name: str) -> list[ast.Call]:
    """Calls whose callee ends in ``name`` (``f(...)``, ``x.f(...)``)."""
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and (getattr(n.func, "id", None) == name or getattr(n.func, "attr", None) == name)]


def unparsed(nodes) -> set[str]:
    return {ast.unparse(n) for n in nodes}


def assigned_attributes(cls) -> set[str]:
    names = set()
    for n in ast.walk(cls):
        if isinstance(n, ast.Assign):
            for t in n.targets:
                if isinstance(t, ast.Name):
                    names.add(t.id)
                elif isinstance(t, ast.Attribute) and getattr(t.value, "id", None) == "self":
                    names.add(t.attr)
        elif isinstance(n, ast.FunctionDef) and any(getattr(d, "id", None) == "property" for d in n.decorator_list):
            names.add(n.name)
    return names


def js_functions(text: str) -> dict[str, list[str]]:
    return {m.group(1): [p.split("=")[0].strip() for p in m.group(2).split(",") if p.strip()]
            for m in re.finditer(r"^(?:async\s+)?function\s+(\w+)\s*\(([^)]*)\)", text, re.M)}


# --- 1-2: script_callbacks, ui tabs -----------------------------------------------------------------------

REGISTRARS = ("on_ui_tabs", "on_ui_settings", "on_app_started", "on_after_component", "on_before_ui",
              "on_script_unloaded")


def test_01_callback_registrars_and_name_keyword(host):
    found = defs(host.tree("modules/script_callbacks.py"))
    assert "remove_current_script_callbacks" in found
    double = double_tree("modules/script_callbacks.py", host.kind)
    register = defs(defs(double)["_register"])["register"]
    for name in REGISTRARS:
        assert params(found[name])[0] == "callback", name
        assert kwonly(found[name]) == (["name"] if host.has_name_kwarg else []), name
        assert params(register) == params(found[name]) and kwonly(register) == kwonly(found[name]), \
            f"double's {name} signature differs from {host.flavor}"
    extension = extension_tree("scripts/sadtalker_tab.py")
    for call in (c for name in REGISTRARS for c in calls(extension, name)):
        assert len(call.args) == 1 and not call.keywords, f"extension passes keywords: {ast.unparse(call)}"


def test_02_ui_tabs_accumulate_and_tab_item_ids(host):
    ui_tabs_callback = find_def(host.tree("modules/script_callbacks.py"), "ui_tabs_callback")
    assert "c.callback() or []" in unparsed(n for n in ast.walk(ui_tabs_callback) if isinstance(n, ast.BoolOp))
    ui = host.tree("modules/ui.py")
    loops = [n for n in ast.walk(ui) if isinstance(n, ast.For) and ast.unparse(n.target) == "(interface, label, ifid)"]
    assert loops, "modules/ui.py no longer unpacks (interface, label, ifid)"
    tab_items = unparsed(calls(ui, "TabItem"))
    assert "gr.TabItem(label, id=ifid, elem_id=f'tab_{ifid}')" in tab_items
    assert "gr.TabItem(label, id=ifid, elem_id=f'tab_{ifid}')" in unparsed(calls(double_tree("../__init__.py",
                                                                                                host.kind), "TabItem"))
    extension = extension_tree("scripts/sadtalker_tab.py")
    tab_id = next(ast.literal_eval(n.value) for n in extension.body if isinstance(n, ast.Assign)
                  and ast.unparse(n.targets[0]) == "TAB_ID")
    assert f"#tab_{tab_id}" in (REPO / "javascript" / "sadtalker.js").read_text(encoding="utf8")


# --- 3: settings ------------------------------------------------------------------------------------------

OPTION_INFO_COMMON = {"default", "label", "component", "component_args", "onchange", "section", "refresh",
                      "comment_before", "comment_after"}


def test_03_option_info_add_option_and_sections(host):
    option_info = defs(defs(host.tree("modules/options.py"))["OptionInfo"])["__init__"]
    host_params = params(option_info)[1:]
    assert set(host_params) >= OPTION_INFO_COMMON
    if not host.is_sdnext:
        assert set(host_params) >= {"infotext", "restrict_api", "category_id"}
    accepts_any_keyword = option_info.args.kwarg is not None
    double_params = params(defs(defs(double_tree("modules/options.py", host.kind))["OptionInfo"])["__init__"])[1:]
    assert accepts_any_keyword or set(double_params) <= set(host_params)
    for call in calls(extension_tree("scripts/sadtalker_tab.py"), "OptionInfo"):
        positional = len(call.args)
        assert host_params[:positional] == double_params[:positional], "positional OptionInfo order differs"
        assert all(k.arg in host_params or accepts_any_keyword for k in call.keywords)
    options_class = find_def(host.tree("modules/shared.py" if host.is_sdnext else "modules/options.py"), "Options")
    assert params(defs(options_class)["add_option"]) == ["self", "key", "info"]
    settings_ui = host.text("modules/ui.py" if host.is_sdnext else "modules/ui_settings.py")
    assert "elem_id, text = item.section" in settings_ui


# --- 4-6: queue, state, progress --------------------------------------------------------------------------

def test_04_call_queue(host):
    tree = host.tree("modules/call_queue.py")
    assert "queue_lock" in module_names(tree)
    found = defs(tree)
    assert params(found["wrap_queued_call"]) == ["func"]
    gpu = params(found["wrap_gradio_gpu_call"])
    assert gpu[:2] == ["func", "extra_outputs"]
    assert gpu[2:] == (["name"] if host.is_sdnext else []), gpu
    assert "task(" in fstrings(found["wrap_gradio_gpu_call"])
    # 1.9+ moved the body (and "Time taken" appended to res[-1]) into wrap_gradio_call_no_job, which
    # wrap_gradio_call returns around its own flag-resetting wrapper
    wrappers = [found["wrap_gradio_call"]]
    if calls(found["wrap_gradio_call"], "wrap_gradio_call_no_job"):
        wrappers.append(found["wrap_gradio_call_no_job"])
    augmented = [ast.unparse(n.target) for w in wrappers for n in ast.walk(w) if isinstance(n, ast.AugAssign)]
    assert "res[-1]" in augmented
    double = defs(double_tree("modules/call_queue.py", host.kind))
    assert params(double["wrap_gradio_gpu_call"]) == gpu, "double's wrap_gradio_gpu_call signature differs"


STATE_METHODS = {"begin", "end", "interrupt", "skip", "nextjob"}
STATE_FIELDS = {"interrupted", "skipped", "job_count", "job_no", "sampling_step", "sampling_steps", "textinfo"}


def test_05_shared_state(host):
    state = defs(host.tree("modules/shared_state.py"))["State"]
    assert set(defs(state)) >= STATE_METHODS
    assert assigned_attributes(state) >= STATE_FIELDS
    begin = method_params(state, "begin")[0]
    assert begin == ("title" if host.is_sdnext else "job")
    double_state = defs(double_tree("modules/shared_state.py", host.kind))["State"]
    assert method_params(double_state, "begin")[0] == begin, "double's State.begin names its job differently"
    assert assigned_attributes(double_state) >= STATE_FIELDS
    for call in calls(extension_tree("scripts/sadtalker_tab.py"), "begin"):
        assert not call.keywords, f"state.begin with a keyword breaks one host: {ast.unparse(call)}"


def test_06_progress_formula(host):
    source = ast.unparse(find_def(host.tree("modules/progress.py"), "progressapi"))
    double_defs = defs(double_tree("modules/progress.py", host.kind))
    double = ast.unparse(double_defs["progressapi"]) + ast.unparse(double_defs["_progress"])
    if host.is_sdnext:
        # SD.Next: progress = sampling_step / sampling_steps only; job_no / job_count do not count
        assert "step / steps" in source and "sampling_step" in source and "job_count" not in source
        assert "job_count" not in double and "step / steps" in double
    else:
        for formula in ("job_no / job_count", "sampling_step / sampling_steps"):
            assert formula in source and formula in double


# --- 7-9: copy-paste, output panel, gradio patches --------------------------------------------------------

def test_07_param_binding_and_paste_fields(host):
    rel = "modules/generation_parameters_copypaste.py" if host.is_sdnext else "modules/infotext_utils.py"
    tree = host.tree(rel)
    found = defs(tree)
    binding = method_params(found["ParamBinding"], "__init__")
    double = defs(double_tree("modules/infotext_utils.py", host.kind))
    assert binding == method_params(double["ParamBinding"], "__init__")
    add_paste_fields = found["add_paste_fields"]
    assert params(add_paste_fields) == ["tabname", "init_img", "fields", "override_settings_component"]
    assert ast.unparse(add_paste_fields.args.defaults[-1]) == "None"
    assert params(double["add_paste_fields"]) == params(add_paste_fields)
    switch = [k for c in calls(found["connect_paste_params_buttons"], "click") for k in c.keywords if k.arg == "_js"]
    assert "f'switch_to_{binding.tabname}'" in unparsed(k.value for k in switch)
    tab_id = "sadtalker"
    assert f"function switch_to_{tab_id}(" in (REPO / "javascript" / "sadtalker.js").read_text(encoding="utf8")
    extension = extension_tree("scripts/sadtalker_tab.py")
    for call in calls(extension, "ParamBinding"):
        assert {k.arg for k in call.keywords} <= set(binding)
    for call in calls(extension, "add_paste_fields"):
        assert len(call.args) + len(call.keywords) <= len(params(add_paste_fields))


def test_08_output_panel_element_ids(host):
    panel = fstrings(host.tree("modules/ui_common.py"))
    double = fstrings(double_tree("modules/ui_common.py", host.kind))
    extension = fstrings(extension_tree("scripts/sadtalker_tab.py"))
    for elem_id in ("{tabname}_gallery", "image_buttons_{tabname}"):
        assert elem_id in panel and elem_id in double
    if host.is_sdnext:
        buttons = [c for c in calls(host.tree("modules/ui_common.py"), "create_buttons")
                   if "'extras'" in ast.unparse(c.args[0])]
        assert buttons and all(c.lineno > panel["{tabname}_gallery"] for c in buttons)
        copypaste = fstrings(host.tree("modules/generation_parameters_copypaste.py"))
        assert "{tab}_tab" in copypaste  # create_buttons -> elem_id "extras_tab"
        assert "{tab}_tab" in fstrings(double_tree("modules/infotext_utils.py", host.kind))
        assert "extras_tab" in extension
    else:
        assert "{tabname}_send_to_extras" in panel and "{tabname}_send_to_extras" in double
        # the extension remembers the gallery first, then adds its button after the extras button
        assert panel["{tabname}_gallery"] < panel["{tabname}_send_to_extras"]
        assert "{tab}_send_to_extras" in extension


def test_09_component_callbacks_from_gradio_patch(host):
    rel = ("modules/gr_hijack.py", "modules/gradio_extensions.py", "modules/gradio_extensons.py")
    found = defs(host.tree(*rel))
    for init in ("IOComponent_init", "BlockContext_init"):
        assert "scripts.script_callbacks.after_component_callback(self, **kwargs)" in unparsed(
            calls(found[init], "after_component_callback")), init
    double = unparsed(calls(double_tree("modules/gradio_extensons.py", host.kind), "after_component_callback"))
    assert "script_callbacks.after_component_callback(self, **kwargs)" in double


# --- 10-13: launch, preload, js/css, script loading -------------------------------------------------------

def test_10_launch_exports_and_installer(host):
    assert module_names(host.tree("launch.py")) >= {"is_installed", "run_pip", "run"}
    utils = host.tree("launch.py" if host.is_sdnext else "modules/launch_utils.py")
    run_pip = params(defs(utils)["run_pip"])
    assert run_pip == (["pkg", "desc"] if host.is_sdnext else ["command", "desc", "live"])
    assert params(defs(double_tree("launch.py", host.kind))["run_pip"]) == run_pip
    installer = ast.unparse(defs(host.tree("installer.py" if host.is_sdnext else "modules/launch_utils.py"))
                            ["run_extension_installer"])
    assert "PYTHONPATH" in installer and "install.py" in installer
    for call in calls(extension_tree("install.py"), "run_pip") + calls(extension_tree("install.py"), "is_installed"):
        assert not call.keywords and len(call.args) <= 2, ast.unparse(call)


def test_11_preload_receives_the_parser(host):
    preload_extensions = find_def(host.tree("modules/script_loading.py"), "preload_extensions")
    assert "module.preload(parser)" in unparsed(calls(preload_extensions, "preload"))
    assert "module.preload(parser)" in unparsed(calls(double_tree("modules/script_loading.py", host.kind), "preload"))
    assert params(find_def(extension_tree("preload.py"), "preload")) == ["parser"]


def test_12_javascript_and_css_discovery(host):
    tree = host.tree("modules/ui_javascript.py" if host.is_sdnext else "modules/ui_gradio_extensions.py")
    assert "'javascript', '.js'" in {", ".join(ast.unparse(a) for a in c.args) for c in calls(tree, "list_scripts")}
    assert "'style.css'" in {ast.unparse(c.args[0]) for c in calls(tree, "list_files_with_name")}
    assert (REPO / "javascript" / "sadtalker.js").is_file() and (REPO / "style.css").is_file()


def test_13_basedir_and_sys_path_during_import(host):
    tree = host.tree("modules/scripts.py")
    assert "return current_basedir" in ast.unparse(defs(tree)["basedir"])
    load_scripts = ast.unparse(defs(tree)["load_scripts"])
    assert "sys.path = [scriptfile.basedir] + sys.path" in load_scripts and "sys.path = syspath" in load_scripts
    # Forge puts every script folder on sys.path before taking the copy that each import restores
    host_keeps = "sys.path = [s.basedir] + sys.path" in load_scripts
    assert host_keeps == (host.kind == "forge")
    double = ast.unparse(defs(double_tree("modules/scripts.py", host.kind))["load_scripts"])
    assert ("sys.path = syspath" not in double) == host_keeps, "double's sys.path handling differs"


# --- 14-17: webui startup, api, face restoration, paths ---------------------------------------------------

def test_14_app_started_and_api_guard(host):
    tree = host.tree("webui.py")
    started = {ast.unparse(c): c.lineno for c in calls(tree, "app_started_callback")}
    with_demo = [line for text, line in started.items() if text.endswith("app_started_callback(shared.demo, app)")]
    assert with_demo and any(text.endswith("app_started_callback(None, app)") for text in started)
    launches = [c.lineno for c in calls(tree, "launch") if ast.unparse(c.func).endswith("demo.launch")]
    assert launches and min(with_demo) > min(launches)
    if not host.is_sdnext:
        webui = find_def(tree, "webui_worker") if "def webui_worker" in host.text("webui.py") else find_def(tree, "webui")
        source = ast.unparse(webui)
        assert "launch_api = cmd_opts.api" in source
        guarded = [n for n in ast.walk(webui) if isinstance(n, ast.If) and ast.unparse(n.test) == "launch_api"
                   and calls(n, "create_api")]
        assert guarded, "create_api is no longer guarded by --api"
    double = unparsed(calls(double_tree("../__init__.py", host.kind), "app_started_callback"))
    assert "script_callbacks.app_started_callback(None, self.app)" in double


def test_15_api_auth_and_base64_helpers(host):
    api = find_def(host.tree("modules/api/api.py"), "Api")
    add_route = ast.unparse(defs(api)["add_api_route"])
    assert "Depends(self.auth)" in add_route
    condition = "shared.cmd_opts.auth" if host.is_sdnext else "if shared.cmd_opts.api_auth:"
    assert condition in add_route
    helpers = defs(host.tree("modules/api/helpers.py" if host.is_sdnext else "modules/api/api.py"))
    assert {"decode_base64_to_image", "encode_pil_to_base64"} <= set(helpers)
    double = ast.unparse(defs(find_def(double_tree("modules/api/api.py", host.kind), "Api"))["add_api_route"])
    assert "if shared.cmd_opts.api_auth:" in double and "Depends(self.auth)" in double


def test_16_face_restoration_entry_points(host):
    gfpgan = defs(host.tree("modules/postprocess/gfpgan_model.py", "modules/gfpgan_model.py"))["gfpgan_fix_faces"]
    assert params(gfpgan) == ["np_image"]
    assert "face_restorers = []" in {ast.unparse(n) for n in host.tree("modules/shared.py").body}
    assert params(defs(host.tree("modules/face_restoration.py"))["restore_faces"])[0] == "np_image"
    assert "face_restorers = []" in {ast.unparse(n) for n in double_tree("modules/shared.py", host.kind).body}


def _literal_strings(node) -> set[str]:
    return {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_17_paths_internal(host):
    tree = host.tree("modules/paths_internal.py")
    assert module_names(tree) >= {"data_path", "models_path", "extensions_dir", "script_path"}
    if host.is_sdnext:  # paths_internal only re-exports modules.paths there
        tree = host.tree("modules/paths.py")
        assert module_names(tree) >= {"data_path", "models_path", "extensions_dir", "script_path"}
    assigns = {ast.unparse(n.targets[0]): n for n in tree.body if isinstance(n, ast.Assign)}
    if host.is_sdnext:
        assert "default_output_dir" not in assigns  # the extension falls back to data_path / "outputs"
        assert 'getattr(paths, "default_output_dir", None)' in (REPO / "scripts" / "sadtalker_tab.py").read_text()
        return
    folder = "output" if host.kind == "a1111-1.8" else "outputs"
    assert folder in _literal_strings(assigns["default_output_dir"])
    double = {ast.unparse(n.targets[0]): n for n in double_tree("modules/paths_internal.py", host.kind).body
              if isinstance(n, ast.Assign)}
    assert folder in _literal_strings(double["default_output_dir"])


# --- 18-21: gradio pin, torch.load, host js, extension metadata ------------------------------------------

GRADIO_PINS = {"a1111": {"3.41.2"}, "a1111-1.8": {"3.41.2"}, "sdnext": {"3.43.2"},
               # Forge main pins 4.40.0; its "1.10.1" merge commit pinned 4.39.0
               "forge": {"4.40.0", "4.39.0"}}


def test_18_gradio_pin(host):
    requirements = host.text("requirements.txt" if host.is_sdnext else "requirements_versions.txt")
    pins = re.findall(r"^gradio==([\d.]+)\s*$", requirements, re.M)
    assert len(pins) == 1, f"no single gradio pin in {host.flavor}"
    assert pins[0] in GRADIO_PINS[host.kind], f"gradio {pins[0]} on {host.flavor}: a new gradio to emulate?"


def test_19_torch_load_patch(host):
    text = host.text("modules/safe.py")
    patched = "torch.load = load" in {ast.unparse(n) for n in ast.parse(text).body}
    if host.kind == "forge":  # Forge main keeps it as a comment; its 1.10.1 commit deleted the line
        assert not patched
    else:
        assert patched


HOST_JS_FILES = {
    ("script.js", "javascript/script.js"): {"gradioApp", "onUiLoaded", "onUiUpdate", "onAfterUiUpdate",
                                            "onUiTabChange"},
    ("javascript/progressbar.js", "javascript/progressBar.js"): {"randomId", "requestProgress"},
    ("javascript/ui.js",): {"switch_to_txt2img", "switch_to_img2img", "switch_to_extras",
                            "extract_image_from_gallery"},
}


def test_20_host_javascript_globals(host):
    defined = {}
    for candidates, names in HOST_JS_FILES.items():
        functions = js_functions(host.text(*candidates))
        assert names <= set(functions), f"{candidates[0]} lacks {names - set(functions)}"
        defined.update(functions)
    double = js_functions(DOUBLE_JS.read_text(encoding="utf8"))
    assert set().union(*HOST_JS_FILES.values()) <= set(double)
    ours = (REPO / "javascript" / "sadtalker.js").read_text(encoding="utf8")
    used = {name for name in defined if re.search(rf"\b{name}\(", ours)}
    assert used <= set(double) and {"gradioApp", "randomId", "requestProgress", "onUiLoaded"} <= used
    call = re.search(r"\brequestProgress\(([^)]*)\)", ours).group(1)
    assert len(call.split(",")) <= len(defined["requestProgress"])


def test_21_extension_metadata_and_extensions_dir(host):
    if not host.is_sdnext:
        metadata = defs(host.tree("modules/extensions.py"))["ExtensionMetadata"]
        assert "filename = 'metadata.ini'" in {ast.unparse(n) for n in metadata.body}
    tree = host.tree("modules/paths.py" if host.is_sdnext else "modules/paths_internal.py")
    extensions_dir = [ast.unparse(n.value) for n in tree.body if isinstance(n, ast.Assign)
                      and ast.unparse(n.targets[0]) == "extensions_dir"]
    # SD.Next: "cli.extensions_dir or os.path.join(data_path, 'extensions')" (--extensions-dir overrides)
    assert len(extensions_dir) == 1 and "os.path.join(data_path, 'extensions')" in extensions_dir[0]
    double = [ast.unparse(n.value) for n in double_tree("modules/paths_internal.py", host.kind).body
              if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "extensions_dir"]
    assert double == ["os.path.join(data_path, 'extensions')"]
