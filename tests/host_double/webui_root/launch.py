"""A18 launch.py:1-24 + modules/launch_utils.py:88-143: what an extension's install.py may use.

is_installed(package): importlib.metadata distribution, else find_spec (no version specs on A1111; SD.Next
accepts specs, SDN launch.py:113-138). run_pip(command, desc=None, live=...) runs
``"<python>" -m pip <command> --prefer-binary`` through the shell (``run`` uses ``shell=True``, unquoted, as the
real host does: an unquoted ``>=`` is a redirection there); SD.Next's has no ``live`` (a TypeError if passed), as
here. ``python`` is $HOST_DOUBLE_PYTHON when set (tests point it at a recorder instead of a real pip)."""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shlex
import sys

FLAVOR = os.environ.get("HOST_DOUBLE_FLAVOR", "a1111")
args = argparse.Namespace(skip_install="--skip-install" in shlex.split(os.environ.get("COMMANDLINE_ARGS", "")))
python = os.environ.get("HOST_DOUBLE_PYTHON", sys.executable)
git = "git"
index_url = os.environ.get("INDEX_URL", "")
default_command_live = os.environ.get("WEBUI_LAUNCH_LIVE_OUTPUT") == "1"


def is_installed(package):
    if FLAVOR != "sdnext" and any(c in package for c in "<>=! "):
        # A18 is_installed: distribution(spec) -> PackageNotFoundError, find_spec(spec) -> None: a spec is
        # silently "not installed", so pip runs at every start (the real host does not raise)
        return False
    name = package.split("=")[0].split("<")[0].split(">")[0].strip()
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _pip(command, desc, live):
    return run(f'"{python}" -m pip {command} --prefer-binary', desc=f"Installing {desc}",
               errdesc=f"Couldn't install {desc}", live=live)


if FLAVOR == "sdnext":
    def run_pip(pkg, desc=None):
        if args.skip_install:
            return None
        return _pip(pkg, desc, False)
else:
    def run_pip(command, desc=None, live=default_command_live):
        if args.skip_install:
            return None
        return _pip(command, desc, live)


def run(command, desc=None, errdesc=None, custom_env=None, live=default_command_live):
    import subprocess

    if desc is not None:
        print(desc)
    result = subprocess.run(command, shell=True, capture_output=not live, text=True, env=custom_env)
    if result.returncode != 0:
        raise RuntimeError(f"{errdesc or 'Error running command'}.\nCommand: {command}\n"
                           f"Error code: {result.returncode}")
    return result.stdout or ""
