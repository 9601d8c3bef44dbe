#!/usr/bin/env bash
# Installs everything the tests need, then runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh --browser
export HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False PYTHONDONTWRITEBYTECODE=1
status=0
# The real ComfyUI the `comfyui` tests start (tree + venv cached by the hash of their pins, outside the checkout).
.venv/bin/python tools/comfy_host.py prepare || status=1
# The real WebUI sources (../shared/hosts, or $SADTALKER_SHARED_HOSTS), unpacked once for the static
# conformance checks of the host double (tests/test_host_conformance.py) and used by the real-host runs below.
REAL_HOSTS=${SADTALKER_REAL_HOSTS:-"a1111-v1.8.0 a1111-v1.10.1 forge-dfdcbab"}
sources=$(mktemp -d)
trap 'rm -rf "$sources"' EXIT
for host in $REAL_HOSTS; do
  .venv/bin/python tools/webui_host.py prepare "$host" "$sources/$host" >/dev/null || status=1
done
export SADTALKER_HOST_SOURCE_A1111_18="$sources/a1111-v1.8.0" SADTALKER_HOST_SOURCE_A1111="$sources/a1111-v1.10.1" \
  SADTALKER_HOST_SOURCE_FORGE="$sources/forge-dfdcbab"
start=$(date +%s)
rc=0; .venv/bin/python -m pytest --ignore=tests/real_host "$@" || rc=$?
echo "suite (host double, ComfyUI, core): rc=$rc in $(( $(date +%s) - start )) s"
[ "$rc" = 0 ] || status=$rc
# A1111's and Forge's own pins (gradio 3.41.2 / 4.40, pydantic 1 / 2) are tested by the real hosts below; the
# host double (tests/host_double) runs in .venv above, for what no real host here gives (SD.Next, Reload UI,
# --nowebui, failing pip).
# The extension inside each real WebUI (venv built once per pin hash under ~/.cache/sadtalker-core/hosts).
# A host that cannot be prepared, built or started fails here: nothing is skipped.
for host in $REAL_HOSTS; do
  start=$(date +%s)
  rc=0; .venv/bin/python tools/webui_host.py run "$host" -- -p no:cacheprovider || rc=$?
  echo "real host $host: rc=$rc in $(( $(date +%s) - start )) s"
  [ "$rc" = 0 ] || status=$rc
done
exit $status
