"""A18 modules/shared.py + shared_init.py:9-51 + shared_options.py: cmd_opts, opts (with the host keys an
extension reads), state, demo, face_restorers, tab_names, config_filename."""

import os

from modules import devices, paths_internal, shared_cmd_options, shared_state
from modules.options import OptionInfo, Options, options_section  # noqa: F401

cmd_opts = shared_cmd_options.cmd_opts
parser = shared_cmd_options.parser
config_filename = os.path.join(paths_internal.data_path, "config.json")
_out = paths_internal.default_output_dir

_host_section = ("saving-paths", "Paths for saving")
options_templates = {
    "outdir_samples": OptionInfo("", "Output directory for images", section=_host_section),
    "outdir_txt2img_samples": OptionInfo(os.path.join(_out, "txt2img-images"), "txt2img", section=_host_section),
    "outdir_img2img_samples": OptionInfo(os.path.join(_out, "img2img-images"), "img2img", section=_host_section),
    "outdir_extras_samples": OptionInfo(os.path.join(_out, "extras-images"), "extras", section=_host_section),
    "samples_format": OptionInfo("png", "File format", section=_host_section),
    "temp_dir": OptionInfo("", "Temp dir", section=_host_section),
    "face_restoration_model": OptionInfo("CodeFormer", "Face restoration", section=("face-restoration", "FR")),
    "face_restoration_unload": OptionInfo(False, "Unload", section=("face-restoration", "FR")),
    "hidden_tabs": OptionInfo([], "Hidden UI tabs", component=object, section=("ui", "User interface")),
    "ui_tab_order": OptionInfo([], "UI tab order", component=object, section=("ui", "User interface")),
    "interrupt_after_current": OptionInfo(True, "Interrupt after current", section=("ui", "User interface")),
    "disabled_extensions": OptionInfo([], "Disabled", component=object, section=(None, "Hidden")),
}
opts = Options(dict(options_templates))
opts.load(config_filename)

devices.device = devices.cpu if {"all", "sd"} & set(cmd_opts.use_cpu) else devices.get_optimal_device()
state = shared_state.State()
demo = None
face_restorers = []
tab_names = []
