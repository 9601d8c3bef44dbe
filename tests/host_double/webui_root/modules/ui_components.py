"""A18 modules/ui_components.py:12-20: ToolButton = a gr.Button with class "tool"."""

import gradio as gr


class ToolButton(gr.Button):
    def __init__(self, *args, **kwargs):
        classes = kwargs.pop("elem_classes", [])
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)

    def get_block_name(self):
        return "button"
