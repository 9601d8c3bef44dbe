"""A18 modules/shared_cmd_options.py:9-18: preload(parser) of every extension runs, then the command line is
parsed (here from $HOST_DOUBLE_ARGS; the extensions from $HOST_DOUBLE_EXTENSION_DIRS)."""

import os
import shlex

from modules import cmd_args, script_loading

parser = cmd_args.parser
script_loading.preload_extensions(
    [d for d in os.environ.get("HOST_DOUBLE_EXTENSION_DIRS", "").split(os.pathsep) if d], parser)
cmd_opts = parser.parse_args(shlex.split(os.environ.get("HOST_DOUBLE_ARGS", "")))
cmd_opts.webui_is_non_local = bool(cmd_opts.listen)
cmd_opts.disable_extension_access = False
