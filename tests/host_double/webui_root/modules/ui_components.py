"""A18 modules/ui_components.py:12-20: ToolButton = a gr.Button with class "tool". Its __init__ carries
gr.Button's signature (functools.wraps, as on Forge): gradio 4 builds a component's props from the
signature of its class's __init__."""

from functools import wraps

import gradio as gr


class ToolButton(gr.Button):
    @wraps(gr.Button.__init__)
    def __init__(self, value="", *args, elem_classes=None, **kwargs):
        elem_classes = elem_classes or []
        super().__init__(value, *args, elem_classes=["tool", *elem_classes], **kwargs)

    def get_block_name(self):
        return "button"
