"""A18 modules/paths_internal.py:12-37: script_path, data_path (--data-dir), models_path, extensions dirs,
default_output_dir ("outputs" as in 1.10; "output" in 1.8). Roots come from the Host via the environment."""

import os

from modules import flavor_is

script_path = os.environ["HOST_DOUBLE_SCRIPT_PATH"]
data_path = os.environ.get("HOST_DOUBLE_DATA_PATH") or script_path
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
config_states_dir = os.path.join(script_path, "config_states")
default_output_dir = os.path.join(data_path, "output" if flavor_is("a1111-1.8") else "outputs")
