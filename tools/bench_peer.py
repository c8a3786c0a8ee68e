"""Side-by-side benchmark against Ultralytics' ObjectCounter on the same file and counting line, in one run.

    python tools/bench_peer.py [--video ../shared/footage/bench/highway_1080p.mp4] \
        [--peer-python ../venv-peer/bin/python] [--runs 1]

Each configuration runs in its own process under GNU ``/usr/bin/time -v`` (its "Maximum resident set size" is
the peak RSS), with the same environment (thread variables untouched: both sides keep their own defaults).
With ``--runs N`` the configurations run in turn N times (a burst of other load hits all alike); the table
shows each one's best fps and largest peak RSS.

* Ultralytics: ``ultralytics.solutions.ObjectCounter`` with YOLO11n (the ONNX file in ``--model-dir``) at
  imgsz 320, COCO vehicle classes [2, 3, 5, 7], a two-point region (a line), its default tracker (or
  ``--peer-tracker``), show=False, verbose=False (no per-frame log line), frames read with ``cv2.VideoCapture``
  as in the Ultralytics docs. Runs in the peer venv (torch, ultralytics, onnxruntime, onnx, shapely, lap
  installed beforehand) with no network: YOLO_OFFLINE=1, YOLO_AUTOINSTALL=False, settings in a temp folder.
* ours: ``edge.replay.replay`` (decode thread + detect + track + count + windows) with yolo11n-320 per frame, and
  the default model per frame, with detection stride 2 and 3, and with motion gating; and the default
  model's weights at 416x256 (yolox-nano-dynamic: no letterbox padding rows on a 16:9 frame) per frame and
  with stride 2.

Timing: the model is loaded and has run once before the clock starts; fps = frames timed / seconds. Ultralytics
loads its ONNX session on the first ``track`` call, so its warm-up is the first frame of the file (counted, not
timed); ours runs the detector once on a black frame, then times the whole replay. Counts: line L2 up/down
against the hand count (31 up, 0 down, ../shared/docs/DATA.md). Nothing here imports edge or ultralytics:
each side runs as a ``python -c`` script in its own interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml  # read the counting line from our config without importing edge

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MARKER = "BENCH_PEER_JSON "

# Runs in the peer venv. argv: video model_path imgsz line_x1 line_y1 line_x2 line_y2 tracker|"" ("": default)
PEER_SCRIPT = r"""
import json, sys, time
import cv2
import ultralytics
from ultralytics import solutions

video, model, imgsz = sys.argv[1], sys.argv[2], int(sys.argv[3])
x1, y1, x2, y2 = (int(v) for v in sys.argv[4:8])
extra = {"tracker": sys.argv[8]} if sys.argv[8] else {}
counter = solutions.ObjectCounter(model=model, region=[(x1, y1), (x2, y2)], classes=[2, 3, 5, 7], imgsz=imgsz,
                                  show=False, verbose=False, **extra)
assert counter.model.task == "detect", counter.model.task
cap = cv2.VideoCapture(video)
assert cap.isOpened(), f"cannot open {video}"
ok, im0 = cap.read()
assert ok, "no frame"
counter(im0)  # warm-up: loads the ONNX session and sets up the tracker; frame 0 is counted, not timed
frames = 0
t0 = time.perf_counter()
while cap.isOpened():
    ok, im0 = cap.read()
    if not ok:
        break
    counter(im0)
    frames += 1
seconds = time.perf_counter() - t0
cap.release()
import onnxruntime, torch
print("BENCH_PEER_JSON " + json.dumps({
    "frames": frames, "total_frames": frames + 1, "seconds": seconds, "fps": frames / seconds,
    "up": counter.out_count, "down": counter.in_count,  # horizontal line: IN = moving down, OUT = moving up
    "in_count": counter.in_count, "out_count": counter.out_count,
    "classwise": {k: dict(v) for k, v in counter.classwise_count.items()},
    "tracker": counter.CFG["tracker"], "conf": counter.CFG["conf"], "iou": counter.CFG["iou"],
    "versions": {"ultralytics": ultralytics.__version__, "torch": torch.__version__,
                 "onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__},
}))
"""

RECT = "yolox-nano-dynamic@416x256"  # the default model's weights at its scale, without letterbox padding rows

# Runs in our venv. argv: video config model[@WxH]|"" stride gating(0/1) line_name
OURS_SCRIPT = r"""
import json, sys, tempfile
from pathlib import Path
import numpy as np
from edge.config import MotionGatingConfig, load_config
from edge.detect import Detector
from edge.replay import replay
from edge.source import FileSource
from edge.types import MOTOR_VEHICLE_CLASSES

video, config_path, model, stride, gating, line = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], \
    int(sys.argv[4]), sys.argv[5] == "1", sys.argv[6]
config = load_config(config_path)
update = {"stride_frames": stride}
if model:  # NAME or NAME@WxH (an input size for a dynamic model)
    name, _, size = model.partition("@")
    update["model"] = name
    update["input_size_px"] = tuple(int(v) for v in size.split("x")) if size else None
if gating:
    update["motion_gating"] = MotionGatingConfig()
config = config.model_copy(update={"detector": config.detector.model_copy(update=update)})
detector = Detector(config.detector)
with FileSource(video) as src:
    w, h = src.size
detector(np.zeros((h, w, 3), np.uint8))  # warm-up run: the clock starts with the replay
with tempfile.TemporaryDirectory() as out:
    s = replay(video, config, detector, Path(out))
dirs = dict(s.lines)[line]
per_dir = {d: sum(n for (ln, dd, c), n in s.counts.items() if ln == line and dd == d and c in MOTOR_VEHICLE_CLASSES)
           for d in dirs}
print("BENCH_PEER_JSON " + json.dumps({
    "frames": s.frames, "total_frames": s.frames, "seconds": s.wall_s, "fps": s.fps,
    "up": per_dir.get("up", 0), "down": per_dir.get("down", 0), "directions": list(dirs),
    "detected_frames": s.detected_frames, "model": config.detector.model, "threads": config.detector.threads,
    "providers": list(detector.providers),
}))
"""


@dataclass(frozen=True)
class Side:
    label: str
    python: str
    args: list[str]
    env: dict[str, str]
    peer: bool = False


@dataclass
class Result:
    label: str
    fps: float
    rss_mb: float
    up: int
    down: int
    info: dict[str, object]
    fps_runs: list[float]


def peak_rss_mb(time_stderr: str) -> float:
    """GNU time -v: "Maximum resident set size (kbytes): N"."""
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", time_stderr)
    if m is None:
        raise RuntimeError("no 'Maximum resident set size' in the output of /usr/bin/time -v")
    return int(m.group(1)) / 1024


def run_once(side: Side, time_bin: str, cwd: Path) -> tuple[dict[str, object], float]:
    script = PEER_SCRIPT if side.peer else OURS_SCRIPT
    cmd = [time_bin, "-v", side.python, "-c", script, *side.args]
    proc = subprocess.run(cmd, env=side.env, cwd=cwd, capture_output=True, text=True, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARKER)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
        raise RuntimeError(f"{side.label}: exit {proc.returncode}\n{tail}")
    info: dict[str, object] = json.loads(lines[-1][len(MARKER):])
    return info, peak_rss_mb(proc.stderr)


def summarize(side: Side, runs: list[tuple[dict[str, object], float]]) -> Result:
    """Best fps of the runs (least disturbed by other load), the largest peak RSS; counts must agree."""
    infos = [info for info, _ in runs]
    counts = {(int(str(x["up"])), int(str(x["down"]))) for x in infos}
    if len(counts) != 1:
        print(f"  warning: {side.label} counts differ between runs: {sorted(counts)}", file=sys.stderr)
    fps_runs = [float(str(x["fps"])) for x in infos]
    best = infos[fps_runs.index(max(fps_runs))]
    rss = max(mb for _, mb in runs)
    return Result(side.label, max(fps_runs), rss, int(str(best["up"])), int(str(best["down"])), best, fps_runs)


def check_inputs(args: argparse.Namespace) -> tuple[tuple[int, int], tuple[int, int]]:
    """The counting line's two end points; exits with a message when a file is missing or the line is no 2-point
    line (ObjectCounter's)."""
    if args.runs < 1:
        raise SystemExit("--runs must be at least 1")
    config_raw = yaml.safe_load(args.config.read_text(encoding="utf-8"))
    line_cfg = next(ln for ln in config_raw["cameras"][0]["lines"] if ln["name"] == args.line)
    if len(line_cfg["points_px"]) != 2:
        raise SystemExit(f"line {args.line} has more than 2 points; ObjectCounter takes a 2-point line")
    for path, what in ((args.video, "video"), (args.model_dir / "yolo11n_coco_320_dequant.onnx", "model"),
                       (Path(args.peer_python), "--peer-python"), (Path(args.time_bin), "GNU time")):
        if not path.exists():
            raise SystemExit(f"{what} not found: {path}")
    (x1, y1), (x2, y2) = line_cfg["points_px"][0], line_cfg["points_px"][-1]
    return (x1, y1), (x2, y2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=SHARED / "footage/bench/highway_1080p.mp4")
    ap.add_argument("-c", "--config", type=Path, default=REPO / "config/highway-1080p.yaml",
                    help="our config; its first camera's line --line is the counting line for both sides")
    ap.add_argument("--line", default="L2", help="counting line name in the config (default L2)")
    ap.add_argument("--model-dir", type=Path, default=SHARED / "models")
    ap.add_argument("--peer-python", default=str(REPO.parent / "venv-peer/bin/python"),
                    help="python of a venv with ultralytics, torch and onnxruntime")
    ap.add_argument("--peer-tracker", default="",
                    help="tracker YAML for ObjectCounter, e.g. bytetrack.yaml (default: the tool's own default)")
    ap.add_argument("--ours-python", default=sys.executable, help="python of a venv with edge installed")
    ap.add_argument("--runs", type=int, default=1, help="runs per configuration, taken in turn: best fps, largest RSS")
    ap.add_argument("--truth-up", type=int, default=31, help="hand count up (default: line L2 of the bench clip)")
    ap.add_argument("--truth-down", type=int, default=0)
    ap.add_argument("--time-bin", default="/usr/bin/time", help="GNU time (apt-get install time)")
    args = ap.parse_args()

    (x1, y1), (x2, y2) = check_inputs(args)

    base_env = dict(os.environ)  # thread settings identical for both sides and left at each side's defaults
    ours_env = base_env | {"EDGE_MODEL_DIR": str(args.model_dir.resolve())}
    video, config = str(args.video.resolve()), str(args.config.resolve())
    with tempfile.TemporaryDirectory(prefix="bench_peer_") as tmp:
        peer_env = base_env | {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False",
                               "YOLO_CONFIG_DIR": str(Path(tmp) / "ultralytics")}
        peer_model = str((args.model_dir / "yolo11n_coco_320_dequant.onnx").resolve())
        sides = [
            Side("Ultralytics ObjectCounter, yolo11n-320" + (f", {args.peer_tracker}" if args.peer_tracker else ""),
                 args.peer_python, [video, peer_model, "320", *map(str, (x1, y1, x2, y2)), args.peer_tracker],
                 peer_env, peer=True),
            Side("ours, yolo11n-320, every frame", args.ours_python,
                 [video, config, "yolo11n-320", "1", "0", args.line], ours_env),
            Side("ours, yolox-nano-416, every frame", args.ours_python,
                 [video, config, "yolox-nano-416", "1", "0", args.line], ours_env),
            Side("ours, yolox-nano-416, stride 2", args.ours_python,
                 [video, config, "yolox-nano-416", "2", "0", args.line], ours_env),
            Side("ours, yolox-nano-416, stride 3", args.ours_python,
                 [video, config, "yolox-nano-416", "3", "0", args.line], ours_env),
            Side("ours, yolox-nano-416, motion gating", args.ours_python,
                 [video, config, "yolox-nano-416", "1", "1", args.line], ours_env),
            Side(f"ours, {RECT}, every frame", args.ours_python,
                 [video, config, RECT, "1", "0", args.line], ours_env),
            Side(f"ours, {RECT}, stride 2", args.ours_python,
                 [video, config, RECT, "2", "0", args.line], ours_env),
        ]
        print(f"running {len(sides)} configurations x {args.runs} run(s) on {args.video} ...", file=sys.stderr)
        done: list[list[tuple[dict[str, object], float]]] = [[] for _ in sides]
        for i in range(args.runs):  # round robin: a burst of other load hits every configuration alike
            for side, out in zip(sides, done, strict=True):
                print(f"  run {i + 1}/{args.runs}: {side.label} ...", file=sys.stderr, flush=True)
                out.append(run_once(side, args.time_bin, Path(tmp)))
        results = [summarize(side, out) for side, out in zip(sides, done, strict=True)]

    peer, ours = results[0], results[1:]
    truth: tuple[int, int] = (int(args.truth_up), int(args.truth_down))

    def error(r: Result) -> int:
        return abs(r.up - truth[0]) + abs(r.down - truth[1])

    threads_env = {k: v for k, v in base_env.items() if k.endswith("_NUM_THREADS") or k.startswith("OPENBLAS")}
    pv = peer.info.get("versions", {})
    print(f"video   {args.video}  line {args.line} ({x1},{y1})-({x2},{y2})  hand truth {truth[0]} up / "
          f"{truth[1]} down")
    print(f"machine {os.cpu_count()} cores; thread env {threads_env or 'unset (each side at its defaults)'}; "
          f"runs per configuration {args.runs} (best fps, largest RSS)")
    print(f"peer    {', '.join(f'{k} {v}' for k, v in pv.items()) if isinstance(pv, dict) else pv}; "
          f"tracker {peer.info.get('tracker')}; conf {peer.info.get('conf')}, iou {peer.info.get('iou')}")
    print(f"ours    onnxruntime threads {ours[0].info.get('threads')} (+ decode thread); "
          f"providers {ours[0].info.get('providers')}")
    print()
    header = ["configuration", "fps", "x Ultralytics fps", "peak RSS MB", "RSS / Ultralytics", "count up/down",
              f"abs error vs {truth[0]}"]
    rows = [header]
    for r in results:
        detected = r.info.get("detected_frames")
        frames = r.info.get("total_frames")
        label = r.label + (f" (detector on {detected}/{frames})" if detected is not None and detected != frames
                           else "")
        rows.append([label, f"{r.fps:.1f}", f"{r.fps / peer.fps:.2f}", f"{r.rss_mb:.0f}",
                     f"{r.rss_mb / peer.rss_mb:.2f}", f"{r.up}/{r.down}", str(error(r))])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print(" | ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(row, widths,
                                                                                              strict=True))))
        if i == 0:
            print("-+-".join("-" * w for w in widths))
    if args.runs > 1:
        print("\nfps per run: " + "; ".join(
            f"{r.label}: {', '.join(f'{f:.1f}' for f in r.fps_runs)} (median {statistics.median(r.fps_runs):.1f})"
            for r in results))
    print("abs error = |up - hand up| + |down - hand down|")

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    same = ours[0]
    fast = max(ours[2:5], key=lambda r: r.fps)  # the default model (yolox-nano-416) with stride or gating
    err_ok = [r.label for r in ours if error(r) <= error(peer)]
    rss_ok = [r.label for r in ours if r.rss_mb <= 0.5 * peer.rss_mb]
    print("\ntargets")
    print(f"  same model, every frame >= 1.5x Ultralytics fps: {same.fps / peer.fps:.2f}x  "
          f"{verdict(same.fps >= 1.5 * peer.fps)}")
    print(f"  default model with stride or gating >= 4x: best {fast.fps / peer.fps:.2f}x ({fast.label})  "
          f"{verdict(fast.fps >= 4 * peer.fps)}")
    rect = max(ours[5:], key=lambda r: r.fps)
    print(f"  (the default weights at 416x256, every frame or stride 2: best {rect.fps / peer.fps:.2f}x, {rect.label})")
    print(f"  counting error <= Ultralytics' ({error(peer)}): {len(err_ok)}/{len(ours)} configurations  "
          f"{verdict(len(err_ok) == len(ours))}"
          + ("" if len(err_ok) == len(ours) else f"  (fail: {[r.label for r in ours if r.label not in err_ok]})"))
    print(f"  peak RSS <= 0.5x Ultralytics ({peer.rss_mb:.0f} MB): {len(rss_ok)}/{len(ours)} configurations  "
          f"{verdict(len(rss_ok) == len(ours))}"
          + ("" if len(rss_ok) == len(ours) else f"  (fail: {[r.label for r in ours if r.label not in rss_ok]})"))


if __name__ == "__main__":
    main()
