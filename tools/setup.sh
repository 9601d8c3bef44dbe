#!/usr/bin/env bash
# Creates .venv at the repo root from the pinned lock (idempotent: re-installs only when the lock changed).
#   bash tools/setup.sh            runtime + test packages
#   bash tools/setup.sh --browser  also Debian's chromium + chromium-driver (browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."
want_browser=0
for a in "$@"; do [ "$a" = "--browser" ] && want_browser=1; done

if [ "$want_browser" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null
  else
    echo "setup: chromium not found and apt-get unavailable; browser tests will be skipped" >&2
  fi
fi

lock=requirements/lock.txt
stamp=.venv/.lock.sha256
sum=$(sha256sum "$lock" | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check --no-cache-dir --no-deps -r "$lock" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  .venv/bin/python -c "import torch, numpy, cv2, safetensors, imageio_ffmpeg" \
    || { echo "setup: the environment in .venv is incomplete" >&2; exit 1; }
  echo "$sum" > "$stamp"
fi
