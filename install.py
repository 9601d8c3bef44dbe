"""Run by the WebUI as ``python install.py`` at start-up: installs only what is missing or too old.

The list and the checks live in ``sadtalker_core/frontends/host_requirements.py`` (the tab and the status route report
from the same list). Never touches torch, torchvision, numpy, gradio, opencv, pydantic or fastapi, nor a
package the WebUI pins in its requirements file; never the gfpgan/basicsr chain (face restoration goes through
spandrel, which the host ships). ``launch.run_pip`` is called positionally: SD.Next's has no ``live`` keyword.
"""

import os
import sys

import launch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sadtalker_core.frontends import host_requirements  # noqa: E402  (the standard library only)


def pin_file() -> str:
    """The WebUI's requirements file, found from the WebUI's own paths module (cwd as a fallback)."""
    try:
        from modules.paths_internal import script_path
    except ImportError:
        script_path = os.getcwd()
    return os.path.join(script_path, os.environ.get("REQS_FILE", "requirements_versions.txt"))


def main() -> None:
    pins = host_requirements.host_pins(pin_file())
    for requirement, version in host_requirements.to_install(pins):
        action = "upgrade" if version else "requirement"
        try:
            launch.run_pip(host_requirements.install_arguments(requirement),
                           f"SadTalker {action}: {requirement.spec}")
        except RuntimeError as error:  # report and go on: the tab and /sadtalker/v1/status say what is missing
            print(f"SadTalker: could not install {requirement.spec}: {str(error).strip().splitlines()[0]}")
    for problem in host_requirements.problems(pins):
        print(f"SadTalker: {problem}")


main()
