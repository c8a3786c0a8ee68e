#!/usr/bin/env bash
# The main job end to end on a fresh machine: find (or fetch, sha256-checked) the default model and a real
# clip, set up .venv, replay 33 s of highway traffic and print the counts beside the hand count.
# Assets come first, before anything is installed: a missing file is reported in seconds with its URL, where
# to put it and its sha256. A second run reuses .venv when pyproject.toml has not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is required" >&2; exit 1; }

assets=$(python3 tools/samples.py demo) || exit 1
{ read -r model_dir; read -r video; read -r hand_count; } <<<"$assets"

stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setting up .venv (once; a minute or so) ..."
  [ -x .venv/bin/python ] || python3 -m venv .venv
  pip_install() {  # quiet unless it fails
    .venv/bin/python -m pip install -q "$@" >.venv/pip.log 2>&1 || { cat .venv/pip.log >&2; exit 1; }
  }
  pip_install --upgrade pip
  pip_install -e .
  rm -f .venv/.installed-* && touch "$stamp"
fi

export EDGE_MODEL_DIR="$model_dir"
.venv/bin/edge replay "$video" -c config/highway-overpass.yaml -o out/demo
echo
echo "hand count, $hand_count"
