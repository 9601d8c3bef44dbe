"""A18 launch.py:1-24 + modules/launch_utils.py:88-143: what an extension's install.py may use.

is_installed(package): importlib.metadata distribution, else find_spec (no version specs on A1111; SD.Next
accepts specs, SDN launch.py:113-138). run_pip(command, desc=None, live=...) runs
"<python> -m pip <command> --prefer-binary"; SD.Next's has no ``live`` (a TypeError if passed), as here.
The double never runs pip: each call is appended to $HOST_DOUBLE_PIP_LOG (JSON lines) and marks the
package installed in $HOST_DOUBLE_INSTALLED; $HOST_DOUBLE_MISSING lists names reported missing;
$HOST_DOUBLE_PIP_FAIL makes matching commands raise RuntimeError like a failing pip."""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import shlex
import sys

FLAVOR = os.environ.get("HOST_DOUBLE_FLAVOR", "a1111")
args = argparse.Namespace(skip_install="--skip-install" in shlex.split(os.environ.get("COMMANDLINE_ARGS", "")))
python = sys.executable
git = "git"
index_url = os.environ.get("INDEX_URL", "")
default_command_live = os.environ.get("WEBUI_LAUNCH_LIVE_OUTPUT") == "1"


def _installed_marks():
    path = os.environ.get("HOST_DOUBLE_INSTALLED")
    if not path or not os.path.isfile(path):
        return set()
    with open(path, encoding="utf8") as file:
        return set(file.read().split())


def is_installed(package):
    if FLAVOR != "sdnext" and any(c in package for c in "<>=! "):
        raise ValueError(f"is_installed takes a name, not a requirement spec: {package!r}")
    name = package.split("=")[0].split("<")[0].split(">")[0].strip()
    if name in _installed_marks():
        return True
    if name in os.environ.get("HOST_DOUBLE_MISSING", "").split(","):
        return False
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _shell_words(command):
    """The arguments pip would get. A18 run_pip -> run(f'"{python}" -m pip {command} --prefer-binary',
    shell=True): /bin/sh reads the line unquoted, so ``>=1.4`` is a redirect that creates a file ``=1.4`` in
    the cwd and ``<1.15`` a failing input redirect (seen in a real A1111 1.8.0). The same shell line runs
    here with a stand-in for pip that reports its argv, so both effects are the real ones."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        probe = "import json, os, sys; json.dump(sys.argv[1:], open(os.environ['HOST_DOUBLE_ARGV'], 'w'))"
        line = f'"{python}" -c "{probe}" -m pip {command} --prefer-binary'
        result = subprocess.run(line, shell=True, capture_output=True, text=True,
                                env=dict(os.environ, HOST_DOUBLE_ARGV=out.name))
        if result.returncode != 0:
            return None, result.stderr.strip()
        return json.load(out)[2:-1], ""  # drop "-m pip" and the host's --prefer-binary


def _record(command, desc, live):
    fail = os.environ.get("HOST_DOUBLE_PIP_FAIL")
    argv, shell_error = _shell_words(command) if FLAVOR != "sdnext" else (shlex.split(command), "")
    with open(os.environ["HOST_DOUBLE_PIP_LOG"], "a", encoding="utf8") as file:
        file.write(json.dumps({"command": command, "argv": argv, "desc": desc, "live": live}) + "\n")
    if argv is None:  # A18 run(): a non-zero exit raises with the command's output
        raise RuntimeError(f"Couldn't install {desc}.\nCommand: {python} -m pip {command}\nError code: 2\n"
                           f"stderr: {shell_error}")
    if fail and fail in command:
        raise RuntimeError(f"Couldn't install {desc}.\nCommand: {python} -m pip {command}\nError code: 1")
    marks = os.environ.get("HOST_DOUBLE_INSTALLED")
    if marks:
        with open(marks, "a", encoding="utf8") as file:
            for token in argv[1:]:
                if not token.startswith("-"):
                    name = token.split("=")[0].split("<")[0].split(">")[0]
                    file.write(f"{name.replace('-', '_')}\n{name}\n")
    return ""


if FLAVOR == "sdnext":
    def run_pip(pkg, desc=None):
        if args.skip_install:
            return None
        return _record(pkg, desc, None)
else:
    def run_pip(command, desc=None, live=default_command_live):
        if args.skip_install:
            return None
        return _record(command, desc, live)


def run(command, desc=None, errdesc=None, custom_env=None, live=default_command_live):
    import subprocess

    result = subprocess.run(command, shell=True, capture_output=not live, text=True, env=custom_env)
    if result.returncode != 0:
        raise RuntimeError(errdesc or f"Error running command: {command}")
    return result.stdout or ""
