#!/usr/bin/env bash
# Every check, as CI runs it: system packages, .venv with the dev, ray and report extras, ruff, mypy, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is required" >&2; exit 1; }

need=()
command -v ffprobe >/dev/null || need+=(ffmpeg)              # ffprobe judges clips
command -v strace >/dev/null || need+=(strace)               # file-write audit of a replay
command -v mosquitto >/dev/null || need+=(mosquitto)         # real broker for MQTT tests
command -v mosquitto_passwd >/dev/null || need+=(mosquitto-clients)
command -v openssl >/dev/null || need+=(openssl)             # per-session test CA for TLS
command -v systemd-analyze >/dev/null || need+=(systemd)     # rates deploy/edge.service; its filter groups
command -v chromium >/dev/null || need+=(chromium)           # the dashboard and the study report, headless
command -v chromedriver >/dev/null || need+=(chromium-driver) # ... driven by selenium (tests/test_dashboard_e2e.py)
python3 -c 'import ctypes.util as u, sys; sys.exit(u.find_library("seccomp") is None)' \
  || need+=(libseccomp2)                                     # applies that filter in a test
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing system packages: ${need[*]}; install them with: sudo apt-get install ${need[*]}" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
pip_install() {  # quiet unless it fails
  .venv/bin/python -m pip install -q "$@" >.venv/pip.log 2>&1 || { cat .venv/pip.log >&2; exit 1; }
}
pip_install --upgrade pip
pip_install -e '.[dev,ray,report]'  # ray: the one test of edge batch --backend ray; report: edge archive/report
export EDGE_MODEL_DIR="${EDGE_MODEL_DIR:-$PWD/../shared/models}"

.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/pytest "$@"
