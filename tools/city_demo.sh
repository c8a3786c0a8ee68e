#!/usr/bin/env bash
# The city side end to end from the shared clips: replay the two clips of the OpenTrafficCam junction in
# ../shared (Cars-Cyclist as the "before", Cars-Truck placed a week later as the "after"), import their records
# into an archive, and build the before/after study report (HTML, CSV, and a PDF when Chromium is installed).
# Three seconds of video a side is far too little for a study, and the report says so; it shows the whole way
# from real footage to the report. For a study's worth of data see tools/synth_study.py (README).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python >= 3.11 is required" >&2; exit 1; }
footage=../shared/footage/otc-intersection
[ -d "$footage" ] || { echo "needs the shared clips in $footage (see ../shared/docs/DATA.md)" >&2; exit 1; }
export EDGE_MODEL_DIR="${EDGE_MODEL_DIR:-$PWD/../shared/models}"

stamp=.venv/.installed-report-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "setting up .venv with the report extra (once; a minute or so) ..."
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q -e '.[report]' >.venv/pip.log 2>&1 || { cat .venv/pip.log >&2; exit 1; }
  rm -f .venv/.installed-report-* && touch "$stamp"
fi

out=out/city
rm -rf "$out" && mkdir -p "$out"
clip() { echo "$footage/Testvideo_Cars-$1_FR20_2020-01-01_00-00-00.mp4"; }
.venv/bin/edge replay "$(clip Cyclist)" -c config/otc-intersection.yaml -o "$out/replays/before" -q \
  --start-time 2020-01-01T00:00:00Z >/dev/null
.venv/bin/edge replay "$(clip Truck)" -c config/otc-intersection.yaml -o "$out/replays/after" -q \
  --start-time 2020-01-08T00:00:00Z >/dev/null
.venv/bin/edge archive --db "$out/archive.sqlite3" --import "$out/replays"
pdf=(); command -v chromium >/dev/null && pdf=(--pdf)
.venv/bin/edge report --db "$out/archive.sqlite3" --site-config config/otc-intersection.yaml \
  --before 2020-01-01/2020-01-07 --after 2020-01-08/2020-01-14 -o "$out/report" "${pdf[@]}"
