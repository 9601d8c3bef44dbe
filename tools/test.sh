#!/usr/bin/env bash
# Installs everything the tests need, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --browser
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False PYTHONDONTWRITEBYTECODE=1
.venv/bin/python -m pytest "$@"
