"""Near-miss detection against hand-labelled conflicts on the calibrated shared footage, and on Radeberg.

    EDGE_MODEL_DIR=../shared/models python tools/eval_conflicts.py [--shared ../shared] [--json]
        [--only NAME ...] [--no-clips] [--no-radeberg] [--jitter]

For every clip in ``../shared/footage`` that has a calibrated config in ``config/`` (table ``CASES``), the
real replay runs (detector, tracker, ground kinematics, conflicts, and the clip recorder with the config's
pre- and post-roll) and its near-miss events are matched to ``tools/labels/NAME.csv`` (hand-labelled true
conflicts: ``t_s,class_a,class_b,type,note``; only a header where there are none; how each was labelled is
in ``tools/labels/README.md``). An event matches an unmatched label when its time is within
``--tolerance-s`` (default 1.5 s) and it has the same two road-user classes (motorcycle/bicycle and
car/truck confusions still match on time and are listed). Per clip and overall it prints true positives,
false positives, misses, false near-misses per hour of video, and seconds kept as clips (total and per
hour, from the clips the recorder actually wrote).

``--radeberg`` (on by default) also runs ``edge.trajectories.analyse`` on the two 15-minute Radeberg files
(real tracker output, no video) and lists every near-miss with the labels of ``tools/labels/radeberg.csv``
(``file,t_s,class_a,class_b,type,note``), which were judged by hand from plots of the trajectories.

``--jitter`` prints the measured frame-to-frame jitter of tracked boxes' bottom-centres by box size, the
figure behind ``kinematics.measurement_noise_box_frac``.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import sys
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, cast

import numpy as np

from edge.config import EdgeConfig, load_config
from edge.detect import Detector
from edge.replay import replay

REPO: Final = Path(__file__).resolve().parents[1]
LABELS: Final = REPO / "tools" / "labels"

#: name -> (video under ../shared, config under config/, labels file under tools/labels)
CASES: Final = {
    "crash-cctv": ("footage/crash-cctv/night-intersection-crash.mp4", "crash-cctv.yaml", "crash-cctv.csv"),
    "highway-1080p": ("footage/bench/highway_1080p.mp4", "highway-1080p.yaml", "highway-overpass.csv"),
    "highway-overpass": ("footage/highway-overpass/video1.avi", "highway-overpass.yaml", "highway-overpass.csv"),
    "highway-cctv": ("footage/highway-cctv/video02.avi", "highway-cctv.yaml", "highway-cctv.csv"),
    "carpark": ("footage/carpark-audio/car-detection.mp4", "carpark.yaml", "carpark.csv"),
    "otc-cars-cyclist": ("footage/otc-intersection/Testvideo_Cars-Cyclist_FR20_2020-01-01_00-00-00.mp4",
                         "otc-intersection.yaml", "otc-cars-cyclist.csv"),
    "otc-cars-truck": ("footage/otc-intersection/Testvideo_Cars-Truck_FR20_2020-01-01_00-00-00.mp4",
                       "otc-intersection.yaml", "otc-cars-truck.csv"),
}
#: The same road user as a detector may name it: a motorcycle is often a bicycle, a pickup a truck.
_SAME: Final = {"motorcycle": "two-wheeler", "bicycle": "two-wheeler", "car": "motor", "truck": "motor",
                "bus": "motor", "person": "person"}


@dataclass(frozen=True, slots=True)
class Label:
    t_s: float
    classes: tuple[str, str]
    type: str
    note: str


@dataclass(frozen=True, slots=True)
class Event:
    t_s: float
    classes: tuple[str, str]
    type: str
    severity: str
    ttc_s: float | None
    pet_s: float | None
    vulnerable: bool
    collision: bool
    clip: str | None


@dataclass(slots=True)
class ClipResult:
    name: str
    video_s: float
    labels: int
    events: list[Event]
    true_positives: int = 0
    false_positives: int = 0
    misses: int = 0
    matched: list[tuple[float, float]] = field(default_factory=list)  # (label t, event t)
    clip_s: float = 0.0

    @property
    def false_per_hour(self) -> float:
        return 3600.0 * self.false_positives / self.video_s if self.video_s else 0.0

    @property
    def clip_s_per_hour(self) -> float:
        return 3600.0 * self.clip_s / self.video_s if self.video_s else 0.0


def read_labels(path: Path) -> list[Label]:
    """A labels CSV; a missing file is an error (an unlabelled clip cannot be scored)."""
    if not path.is_file():
        raise SystemExit(f"no labels file {path}: label the clip by hand first (see tools/labels/README.md)")
    with path.open(encoding="utf-8", newline="") as fh:
        return [Label(float(r["t_s"]), (r["class_a"].strip(), r["class_b"].strip()), r["type"].strip(),
                      r.get("note", "").strip()) for r in csv.DictReader(fh)]


def match(labels: list[Label], events: list[Event], tolerance_s: float) -> tuple[list[tuple[int, int]], int, int]:
    """Greedy one-to-one matching by time (closest first), classes compared as detector-level kinds."""
    def kinds(c: tuple[str, str]) -> list[str]:
        return sorted(_SAME.get(x, x) for x in c)

    candidates = sorted(
        (abs(lab.t_s - ev.t_s), li, ei)
        for li, lab in enumerate(labels) for ei, ev in enumerate(events)
        if abs(lab.t_s - ev.t_s) <= tolerance_s and kinds(lab.classes) == kinds(ev.classes)
    )
    used_l: set[int] = set()
    used_e: set[int] = set()
    pairs = []
    for _, li, ei in candidates:
        if li not in used_l and ei not in used_e:
            used_l.add(li)
            used_e.add(ei)
            pairs.append((li, ei))
    return pairs, len(events) - len(pairs), len(labels) - len(pairs)


def with_clips(config: EdgeConfig, model_dir: Path, clips: bool) -> EdgeConfig:
    detector = config.detector.model_copy(update={"model_dir": model_dir})
    return config.model_copy(update={"detector": detector, "clips": config.clips.model_copy(update={"enabled": clips})})


def run_clip(name: str, shared: Path, tolerance_s: float, clips: bool) -> ClipResult:
    rel_video, config_name, labels_name = CASES[name]
    video = shared / rel_video
    if not video.is_file():
        raise SystemExit(f"missing {video}: see ../shared/docs/DATA.md")
    config = with_clips(load_config(REPO / "config" / config_name), shared / "models", clips)
    if config.cameras[0].calibration is None:
        raise SystemExit(f"config/{config_name} has no calibration: near-misses need the ground plane")
    labels = read_labels(LABELS / labels_name)
    with tempfile.TemporaryDirectory() as out:
        # any date after the pre-roll: clip ids are named by their start instant
        start = datetime(2026, 1, 1, tzinfo=UTC)
        summary = replay(video, config, Detector(config.detector), Path(out), start_time=start)
        origin = start.timestamp()
        events = []
        for line in (Path(out) / "events.jsonl").read_text(encoding="utf-8").splitlines():
            e = json.loads(line)
            t = datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp() - origin
            classes = (str(e["road_users"][0]), str(e["road_users"][1]))
            events.append(Event(round(t, 3), classes, e["conflict_type"], e["severity"],
                                e.get("ttc_s"), e.get("pet_s"), e["vulnerable"], e.get("collision", False),
                                e.get("clip")))
        fps = summary.frames / summary.video_s if summary.video_s else 0.0
        clip_s = summary.clips.frames_written / fps if summary.clips is not None and fps else 0.0
    pairs, fp, fn = match(labels, events, tolerance_s)
    return ClipResult(name, summary.video_s, len(labels), events, len(pairs), fp, fn,
                      [(labels[li].t_s, events[ei].t_s) for li, ei in pairs], clip_s)


def radeberg(shared: Path, tolerance_s: float) -> dict[str, object]:
    sys.path.insert(0, str(REPO / "tools"))
    from eval_radeberg import STEMS, load, zones_utm

    from edge.trajectories import analyse

    labels: dict[str, list[Label]] = defaultdict(list)
    path = LABELS / "radeberg.csv"
    if path.is_file():
        with path.open(encoding="utf-8", newline="") as fh:
            for r in csv.DictReader(fh):
                labels[r["file"].strip()].append(Label(float(r["t_s"]), (r["class_a"].strip(), r["class_b"].strip()),
                                                       r["type"].strip(), r.get("note", "").strip()))
    out: dict[str, object] = {}
    total = {"minutes": 0.0, "events": 0, "true_positives": 0, "false_positives": 0, "misses": 0}
    for stem in STEMS:
        ref = load(shared, stem)
        result = analyse(ref.trajectories, zones_utm())
        events = [Event(round(nm.t_s, 2), nm.classes, nm.conflict_type, nm.severity, nm.ttc_s, nm.pet_s,
                        nm.vulnerable, nm.collision, None) for nm in result.near_misses]
        pairs, fp, fn = match(labels[stem], events, tolerance_s)
        out[stem] = {"minutes": round(result.duration_s / 60, 1), "events": [asdict(e) for e in events],
                     "true_positives": len(pairs), "false_positives": fp, "misses": fn}
        for k, v in (("minutes", result.duration_s / 60), ("events", len(events)), ("true_positives", len(pairs)),
                     ("false_positives", fp), ("misses", fn)):
            total[k] += v
    out["total"] = total
    return out


def jitter(shared: Path) -> list[dict[str, float | int | str]]:
    """Robust std of a box bottom-centre's deviation from a local quadratic fit, by box size quintile."""
    from edge.source import FileSource
    from edge.track import ByteTracker

    rows: dict[str, list[tuple[float, float]]] = {"x": [], "y": []}
    for name in ("highway-overpass", "highway-cctv", "carpark", "otc-cars-cyclist", "otc-cars-truck", "crash-cctv"):
        rel_video, config_name, _ = CASES[name]
        config = with_clips(load_config(REPO / "config" / config_name), shared / "models", False)
        detector = Detector(config.detector)
        tracker = ByteTracker(config.tracker)
        boxes: dict[int, list[tuple[int, float, float, float, float]]] = defaultdict(list)
        with FileSource(shared / rel_video, fit_px=detector.input_size_px) as source:
            for frame in source:
                tracks = tracker.update(detector(frame.image).scaled(*frame.to_source))
                for b, tid in zip(tracks.xyxy.tolist(), tracks.tracker_id.tolist(), strict=True):
                    boxes[tid].append((frame.index, *b))
        for track in boxes.values():
            a = np.array(track, dtype=np.float64)
            for k in range(4, len(a) - 4):
                window = a[k - 4 : k + 5]
                x = window[:, 0] - a[k, 0]
                if np.ptp(x) != 8:  # consecutive frames only
                    continue
                for axis, value, size in (("x", (window[:, 1] + window[:, 3]) / 2, window[4, 3] - window[4, 1]),
                                          ("y", window[:, 4], window[4, 4] - window[4, 2])):
                    fit = np.polyfit(np.delete(x, 4), np.delete(value, 4), 2)
                    rows[axis].append((float(size), float(value[4] - np.polyval(fit, 0.0))))
    table: list[dict[str, float | int | str]] = []
    for axis, values in rows.items():
        arr = np.array(values)
        edges = np.percentile(arr[:, 0], [0, 20, 40, 60, 80, 100])
        for lo, hi in itertools.pairwise(edges):
            sel = (arr[:, 0] >= lo) & (arr[:, 0] <= hi)
            r = arr[sel, 1]
            std = 1.4826 * float(np.median(np.abs(r - np.median(r))))
            table.append({"axis": axis, "size_lo_px": round(float(lo), 1), "size_hi_px": round(float(hi), 1),
                          "samples": int(sel.sum()), "robust_std_px": round(std, 2),
                          "std_per_size": round(std / float(np.median(arr[sel, 0])), 4)})
    return table


def print_jitter(table: list[dict[str, float | int | str]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(table, indent=1))
    for row in table:
        print(f"{row['axis']}  box {row['size_lo_px']:6.1f}-{row['size_hi_px']:6.1f} px  n={row['samples']:5d}  "
              f"robust std {row['robust_std_px']:5.2f} px = {100 * float(row['std_per_size']):.1f} % of the box")


def print_report(results: list[ClipResult], rad: dict[str, object] | None) -> None:
    print(f"{'clip':<18}{'video s':>8}{'labels':>7}{'events':>7}{'TP':>4}{'FP':>4}{'miss':>5}{'FP/h':>8}"
          f"{'clip s':>8}{'clip %':>8}")
    for r in results:
        print(f"{r.name:<18}{r.video_s:8.1f}{r.labels:7d}{len(r.events):7d}{r.true_positives:4d}{r.false_positives:4d}"
              f"{r.misses:5d}{r.false_per_hour:8.1f}{r.clip_s:8.1f}{100 * r.clip_s / r.video_s:7.1f}%")
        for e in r.events:
            print(f"    t={e.t_s:6.2f} s {e.type} {e.severity} {'/'.join(e.classes)} TTC {e.ttc_s} PET {e.pet_s}"
                  f"{' vulnerable' if e.vulnerable else ''}{' collision' if e.collision else ''}"
                  f" clip {e.clip}")
    video = sum(r.video_s for r in results)
    fps = sum(r.false_positives for r in results)
    normal = [r for r in results if r.labels == 0]
    print(f"\noverall: {video:.1f} s of video, {sum(r.true_positives for r in results)} TP, {fps} FP, "
          f"{sum(r.misses for r in results)} missed; {3600 * fps / video:.1f} false near-misses per hour")
    if normal:
        worst = max(100 * r.clip_s / r.video_s for r in normal)
        print(f"clips without an incident: at most {worst:.2f} % of their video kept as clips")
    if rad is not None:
        total = cast(dict[str, float], rad["total"])
        print(f"\nRadeberg trajectories: {total['minutes']:.1f} min, {total['events']} near-misses, "
              f"{total['true_positives']} labelled real, {total['false_positives']} not, "
              f"{total['misses']} labelled conflicts missed")
        for stem, res in rad.items():
            if stem == "total" or not isinstance(res, dict):
                continue
            for e in res["events"]:
                print(f"    {stem[-8:]} t={e['t_s']:7.2f} s {e['type']} {e['severity']} {'/'.join(e['classes'])} "
                      f"TTC {e['ttc_s']} PET {e['pet_s']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared", help="the ../shared data folder")
    ap.add_argument("--only", nargs="+", choices=sorted(CASES), help="evaluate these clips only")
    ap.add_argument("--tolerance-s", type=float, default=1.5, help="largest time difference of a match")
    ap.add_argument("--no-clips", action="store_true", help="do not record clips (faster; no clip seconds)")
    ap.add_argument("--no-radeberg", action="store_true", help="skip the Radeberg trajectories")
    ap.add_argument("--jitter", action="store_true", help="print the measured box jitter table and stop")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    if not (args.shared / "footage").is_dir():
        print(f"missing {args.shared / 'footage'}; see ../shared/docs/DATA.md", file=sys.stderr)
        return 2
    if args.jitter:
        print_jitter(jitter(args.shared), args.json)
        return 0
    results = [run_clip(name, args.shared, args.tolerance_s, not args.no_clips) for name in (args.only or CASES)]
    rad = None if args.no_radeberg else radeberg(args.shared, args.tolerance_s)
    if args.json:
        print(json.dumps({"clips": [asdict(r) | {"false_per_hour": r.false_per_hour, "clip_s_per_hour":
                                                  r.clip_s_per_hour} for r in results], "radeberg": rad}, indent=1))
        return 0
    print_report(results, rad)
    return 0


if __name__ == "__main__":
    sys.exit(main())
