"""A18 modules/ui_components.py:12-20: ToolButton = a gr.Button with class "tool"."""

import gradio as gr

from gradio.events import Dependency

class ToolButton(gr.Button):
    @wraps(gr.Button.__init__)
    def __init__(self, value="", *args, elem_classes=None, **kwargs):
        elem_classes = elem_classes or []
        super().__init__(value, *args, elem_classes=["tool", *elem_classes], **kwargs)

    def get_block_name(self):
        return "button"