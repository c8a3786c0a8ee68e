#!/usr/bin/env bash
# The main job end to end on a fresh machine: set up .venv, get the default model and a real sample clip
# (from ../shared when present, else from their pinned public URLs with sha256 checks), replay the clip
# and print the metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is required" >&2; exit 1; }
[ -x .venv/bin/python ] || python3 -m venv .venv
pip_install() {  # quiet unless it fails
  .venv/bin/python -m pip install -q "$@" >.venv/pip.log 2>&1 || { cat .venv/pip.log >&2; exit 1; }
}
pip_install --upgrade pip
pip_install -e .

if [ -f ../shared/models/yolox_nano_coco_416.onnx ]; then
  export EDGE_MODEL_DIR="${EDGE_MODEL_DIR:-$(cd ../shared/models && pwd)}"
else
  .venv/bin/edge models fetch yolox-nano-416
fi
video=$(.venv/bin/python tools/samples.py otc-cars-cyclist)
.venv/bin/edge replay "$video" -c config/otc-intersection.yaml -o out/demo
echo
echo "== out/demo/metrics.jsonl"
cat out/demo/metrics.jsonl
