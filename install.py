"""Run by the WebUI as ``python install.py`` at start-up: installs only what is missing.

Never touches torch, torchvision, numpy, gradio, opencv, pydantic or fastapi, and never the gfpgan/basicsr
chain (face restoration goes through spandrel, which the host ships). ``launch.is_installed`` and
``launch.run_pip`` are called positionally: SD.Next's ``run_pip`` has no ``live`` keyword.
"""

import launch

#: (import name, pip arguments). --no-deps where a package's requirements would replace host packages.
REQUIREMENTS = (
    ("safetensors", "safetensors>=0.4"),
    ("imageio_ffmpeg", "--no-deps imageio-ffmpeg>=0.4.9"),
    ("scipy", "--no-deps scipy>=1.10,<1.15"),  # newer scipy wants a newer numpy than the host pins
    ("spandrel", "--no-deps spandrel>=0.3.4"),
    ("face_alignment", "--no-deps face-alignment>=1.4"),
)


def main() -> None:
    for module, pip_args in REQUIREMENTS:
        if launch.is_installed(module):
            continue
        try:
            launch.run_pip(f"install {pip_args}", f"SadTalker requirement: {module}")
        except RuntimeError as error:  # report and go on: the tab shows what is missing when it is used
            print(f"SadTalker: could not install {module}: {error}")


main()
