"""A18 modules/ui_common.py:164-305: the output panel of txt2img / img2img / extras with its element ids in
the host's order (gallery container, gallery, image_buttons_<tab> row: open folder, save, save zip,
send to img2img / inpaint / extras, upscale), each send button bound with ParamBinding. SD.Next builds
"extras_tab"-style buttons with create_buttons (SDN modules/ui_common.py:264-276)."""

import gradio as gr

from modules import flavor_is, infotext_utils
from modules.ui_components import ToolButton

#: tab name -> image paths shown in that tab's gallery (tests put a picture there to send it on)
initial_images = {}


def create_output_panel(tabname, outdir, toprow=None):
    with gr.Column(elem_id=f"{tabname}_results"):
        with gr.Group(elem_id=f"{tabname}_gallery_container"):
            gallery = gr.Gallery(value=initial_images.get(tabname), label="Output", show_label=False,
                                 elem_id=f"{tabname}_gallery")
        with gr.Row(elem_id=f"image_buttons_{tabname}"):
            ToolButton("📂", elem_id=f"{tabname}_open_folder")
            if tabname != "extras":
                ToolButton("💾", elem_id=f"save_{tabname}")
                ToolButton("🗃️", elem_id=f"save_zip_{tabname}")
            if flavor_is("sdnext"):
                buttons = infotext_utils.create_buttons(["img2img", "inpaint", "extras"])
            else:
                buttons = {"img2img": ToolButton("🖼️", elem_id=f"{tabname}_send_to_img2img"),
                           "inpaint": ToolButton("🎨️", elem_id=f"{tabname}_send_to_inpaint"),
                           "extras": ToolButton("📐", elem_id=f"{tabname}_send_to_extras")}
            if tabname == "txt2img":
                ToolButton("✨", elem_id="txt2img_upscale")
        for dest, button in buttons.items():
            infotext_utils.register_paste_params_button(infotext_utils.ParamBinding(
                paste_button=button, tabname="img2img" if dest == "inpaint" else dest,
                source_tabname="txt2img" if tabname == "txt2img" else None, source_image_component=gallery))
        html_info = gr.HTML(elem_id=f"html_info_{tabname}")
        html_log = gr.HTML(elem_id=f"html_log_{tabname}")
    return gallery, html_info, html_log
