#!/usr/bin/env bash
# Creates .venv-<host> (host = a1111 | forge) for the WebUI extension tests under that host's pins
# (requirements/host-<host>.txt: gradio, fastapi, pydantic, numpy...). The heavy packages (torch, dlib,
# scipy...) are not installed again: a .pth adds .venv's site-packages AFTER the venv's own, so the host
# pins win wherever both have a package. Idempotent: re-installs only when the lock file changed.
set -euo pipefail
cd "$(dirname "$0")/.."
host="$1"
lock="requirements/host-$host.txt"
venv=".venv-$host"
stamp="$venv/.lock.sha256"
sum=$(sha256sum "$lock" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$lock" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  echo "$sum" > "$stamp"
fi
own=$("$venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
main=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
echo "$main" > "$own/zz_main_venv.pth"
"$venv/bin/python" -c "import gradio, fastapi, pydantic, numpy, torch" \
  || { echo "host_venv: $venv is incomplete" >&2; exit 1; }
