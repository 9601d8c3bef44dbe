"""A18 modules/infotext_utils.py:16-182: ParamBinding, paste_fields, registered_param_bindings, reset,
add_paste_fields, register_paste_params_button, connect_paste_params_buttons (KeyError for an unregistered
destination on A1111/Forge; skipped on SD.Next, SDN generation_parameters_copypaste.py:123-128),
image_from_url_text (gradio-3 dicts, gradio-4 (image, caption) tuples as FG :75-108, base64 strings),
create_buttons / bind_buttons. Aliased as modules.generation_parameters_copypaste (:16); on SD.Next only
that old name exists (the Host removes this one)."""

import base64
import io
import os
import sys

from PIL import Image

from modules import flavor_is, shared, ui_tempdir

sys.modules["modules.generation_parameters_copypaste"] = sys.modules[__name__]


class ParamBinding:
    def __init__(self, paste_button, tabname, source_text_component=None, source_image_component=None,
                 source_tabname=None, override_settings_component=None, paste_field_names=None):
        self.paste_button = paste_button
        self.tabname = tabname
        self.source_text_component = source_text_component
        self.source_image_component = source_image_component
        self.source_tabname = source_tabname
        self.override_settings_component = override_settings_component
        self.paste_field_names = paste_field_names or []


class PasteField(tuple):
    def __new__(cls, component, target, *, api=None):
        return super().__new__(cls, (component, target))


paste_fields: dict = {}
registered_param_bindings: list = []
#: every image_from_url_text input, for tests to see the value shape the host received
received = []


def reset():
    paste_fields.clear()
    registered_param_bindings.clear()


def image_from_url_text(filedata):
    received.append(filedata)
    if filedata is None:
        return None
    if isinstance(filedata, list):
        if not filedata:
            return None
        filedata = filedata[0]
    if isinstance(filedata, tuple) and len(filedata) == 2:  # gradio 4: (image, caption)
        filedata = filedata[0]
    if isinstance(filedata, dict) and "image" in filedata:
        filedata = filedata["image"]
    if isinstance(filedata, dict):
        filename = filedata.get("path") or filedata.get("name")
        assert ui_tempdir.check_tmp_file(shared.demo, filename), "trying to open image file outside of allowed directories"
        return Image.open(filename.rsplit("?", 1)[0])
    if isinstance(filedata, Image.Image):
        return filedata
    if isinstance(filedata, str) and os.path.isfile(filedata):
        assert ui_tempdir.check_tmp_file(shared.demo, filedata), "trying to open image file outside of allowed directories"
        return Image.open(filedata)
    if filedata.startswith("data:image/png;base64,"):
        filedata = filedata[len("data:image/png;base64,"):]
    return Image.open(io.BytesIO(base64.decodebytes(filedata.encode("utf-8"))))


def add_paste_fields(tabname, init_img, fields, override_settings_component=None):
    paste_fields[tabname] = {"init_img": init_img, "fields": fields,
                             "override_settings_component": override_settings_component}


def register_paste_params_button(binding):
    registered_param_bindings.append(binding)


def create_buttons(tabs_list):
    import gradio as gr

    return {tab: gr.Button(f"Send to {tab}", elem_id=f"{tab}_tab") for tab in tabs_list}


def bind_buttons(buttons, send_image, send_generate_info):
    for tabname, button in buttons.items():
        register_paste_params_button(ParamBinding(paste_button=button, tabname=tabname,
                                                  source_text_component=send_generate_info,
                                                  source_image_component=send_image))


def connect_paste_params_buttons():
    import gradio as gr

    from modules.gradio_extensons import click

    for binding in registered_param_bindings:
        if binding.tabname not in paste_fields:
            if flavor_is("sdnext"):
                continue
            raise KeyError(binding.tabname)
        destination_image_component = paste_fields[binding.tabname]["init_img"]
        if binding.source_image_component and destination_image_component:
            if isinstance(binding.source_image_component, gr.Gallery):
                click(binding.paste_button, image_from_url_text, js="extract_image_from_gallery",
                       inputs=[binding.source_image_component], outputs=[destination_image_component])
            else:
                click(binding.paste_button, lambda x: x, inputs=[binding.source_image_component],
                       outputs=[destination_image_component])
        click(binding.paste_button, None, js=f"switch_to_{binding.tabname}", inputs=None, outputs=None,
               show_progress=False)
