"""The packages the WebUI extension needs in the host's Python, and how far the installed ones meet them.

``install.py`` installs what is missing; the tab and ``GET /sadtalker/v1/status`` report what is still unmet.
A package the host pins in its own requirements file is never changed: the host's launcher would otherwise
reinstall its pins at the next start (needing the network) or run with a package it was not tested with.
Only the standard library is used here: ``install.py`` runs in a bare interpreter before the host starts.
"""

from __future__ import annotations

import importlib.metadata
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Requirement:
    distribution: str  # the pip name
    minimum: str  # lowest version that works
    purpose: str  # what needs it, in the user's words
    no_deps: bool = False  # install without dependencies (theirs would replace the host's torch, opencv ...)
    optional: bool = False  # reported when missing, never installed by install.py

    @property
    def spec(self) -> str:
        return f"{self.distribution}>={self.minimum}"


REQUIREMENTS: tuple[Requirement, ...] = (
    Requirement("safetensors", "0.4", "reading the checkpoints"),
    Requirement("imageio-ffmpeg", "0.4.9", "encoding the video (it bundles ffmpeg)", no_deps=True),
    Requirement("scipy", "1.10", "smoothing the head motion"),
    Requirement("spandrel", "0.1.6", "face restoration (enhancer)", no_deps=True),
    Requirement("face-alignment", "1.4", "the fan face detector", no_deps=True),
    Requirement("numba", "0.57", "the fan face detector (face-alignment imports it)"),
    Requirement("dlib-bin", "19.24", "the offline dlib face detector", optional=True),
    Requirement("face-recognition-models", "0.3", "the offline dlib face detector", optional=True),
)

#: packages whose installed version any install must keep (pip would otherwise upgrade them for a dependency)
KEEP_INSTALLED = ("numpy", "torch", "torchvision", "pillow", "opencv-python", "opencv-python-headless")


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def version_key(version: str) -> tuple[int, ...]:
    """Numeric release parts of a version string: '1.26.2' -> (1, 26, 2), '20.0.1.post1' -> (20, 0, 1)."""
    release = re.match(r"\d+(\.\d+)*", version.strip())
    return tuple(int(part) for part in release.group(0).split(".")) if release else ()


def satisfied(requirement: Requirement, version: str | None) -> bool:
    return version is not None and version_key(version) >= version_key(requirement.minimum)


def host_pins(pin_file: str | Path | None) -> dict[str, str]:
    """{normalized name: version} of the ``name==version`` lines of a host's requirements file."""
    pins: dict[str, str] = {}
    if pin_file is None or not Path(pin_file).is_file():
        return pins
    for line in Path(pin_file).read_text(encoding="utf-8", errors="replace").splitlines():
        match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)", line)
        if match:
            pins[normalize(match.group(1))] = match.group(2)
    return pins


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def problems(pins: dict[str, str] | None = None, optional: bool = False) -> list[str]:
    """One sentence per unmet requirement (the optional ones with ``optional=True``): what is missing or too
    old, what it is for, how to fix it."""
    found = []
    for requirement in REQUIREMENTS:
        version = installed_version(requirement.distribution)
        if requirement.optional != optional or satisfied(requirement, version):
            continue
        found.append(describe_problem(requirement, version, pins or {}))
    return found


def describe_problem(requirement: Requirement, version: str | None, pins: dict[str, str]) -> str:
    fix = f'pip install {"--no-deps " if requirement.no_deps else ""}"{requirement.spec}"'
    if version is None:
        return (f"{requirement.distribution} is not installed; {requirement.purpose} needs it. Fix: {fix} in the "
                "WebUI's Python environment, then restart the WebUI.")
    pinned = pins.get(normalize(requirement.distribution))
    if pinned is not None:
        return (f"{requirement.distribution} {version} is pinned by the WebUI, and {requirement.purpose} needs "
                f">= {requirement.minimum}; the extension leaves the WebUI's pin alone. Update the WebUI, or use "
                "SadTalker without that feature.")
    return (f"{requirement.distribution} {version} is too old; {requirement.purpose} needs >= "
            f"{requirement.minimum}. Fix: {fix} in the WebUI's Python environment, then restart the WebUI.")


def install_arguments(requirement: Requirement) -> str:
    """The ``pip install`` arguments for ``requirement``, each quoted for the host's shell (``launch.run_pip``
    passes its string to ``/bin/sh`` or ``cmd``, where an unquoted ``>=`` is a redirection)."""
    words = ["install"]
    if requirement.no_deps:
        words.append("--no-deps")
    words.append(f'"{requirement.spec}"')
    if not requirement.no_deps:  # dependencies may be resolved, but never by moving the host's core packages
        for name in KEEP_INSTALLED:
            version = installed_version(name)
            if version is not None:
                words.append(f'"{name}=={version}"')
    return " ".join(words)


def to_install(pins: dict[str, str]) -> list[tuple[Requirement, str | None]]:
    """(requirement, installed version) for each requirement install.py may install: missing or too old,
    not optional, and not pinned by the host."""
    chosen = []
    for requirement in REQUIREMENTS:
        version = installed_version(requirement.distribution)
        if requirement.optional or satisfied(requirement, version):
            continue
        if version is not None and normalize(requirement.distribution) in pins:
            continue
        chosen.append((requirement, version))
    return chosen
