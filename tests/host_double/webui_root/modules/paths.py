"""A18 modules/paths.py:3: re-exports modules.paths_internal."""

from modules.paths_internal import (  # noqa: F401
    config_states_dir, data_path, default_output_dir, extensions_builtin_dir, extensions_dir, models_path,
    script_path,
)
