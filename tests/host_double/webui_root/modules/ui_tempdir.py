"""A18 modules/ui_tempdir.py:16-31: register_tmp_file / check_tmp_file through demo.temp_file_sets."""

import os
import tempfile


def register_tmp_file(gradio_app, filename):
    if hasattr(gradio_app, "temp_file_sets"):
        gradio_app.temp_file_sets[0] = gradio_app.temp_file_sets[0] | {os.path.abspath(filename)}


def check_tmp_file(gradio_app, filename):
    if hasattr(gradio_app, "temp_file_sets"):
        if any(os.path.abspath(filename) in fileset for fileset in gradio_app.temp_file_sets):
            return True
    # gradio's own temp/cache folders (uploads and gallery values live there)
    return os.path.abspath(filename).startswith(os.path.abspath(tempfile.gettempdir()))
