"""Counting accuracy against the hand counts in ../shared/footage (see ../shared/docs/DATA.md).

    EDGE_MODEL_DIR=../shared/models python tools/eval_counts.py [--shared ../shared] [--model NAME]

1. Highway overpass, line L2: motor-vehicle counts per direction next to the hand count (31 up, 0 down),
   total error and per-direction error (bars: total within 5 %, each direction within 10 %).
2. OpenTrafficCam intersection clips: counts per section line next to the moving road users listed by hand.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from collections import Counter
from pathlib import Path

from edge.config import EdgeConfig, load_config
from edge.detect import Detector
from edge.replay import ReplaySummary, format_summary, replay
from edge.types import MOTOR_VEHICLE_CLASSES

REPO = Path(__file__).resolve().parents[1]


def with_model(config: EdgeConfig, model: str | None, model_dir: Path) -> EdgeConfig:
    update = {"model_dir": model_dir} | ({"model": model} if model else {})
    return config.model_copy(update={"detector": config.detector.model_copy(update=update)})


def run(video: Path, config: EdgeConfig) -> ReplaySummary:
    with tempfile.TemporaryDirectory() as out:
        return replay(video, config, Detector(config.detector), Path(out))


def motor_counts(s: ReplaySummary, line: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for (name, direction, cls), n in s.counts.items():
        if name == line and cls in MOTOR_VEHICLE_CLASSES:
            out[direction] += n
    return out


def otc_speeds(shared: Path, model: str | None) -> None:
    """Median ground speed of each track of our own pipeline on the calibrated OTC clips."""
    from collections import defaultdict

    import numpy as np

    from edge.analytics.kinematics import GroundKinematics
    from edge.geometry import Calibration
    from edge.source import FileSource
    from edge.track import ByteTracker
    from edge.types import ROAD_USER_CLASSES

    config = with_model(load_config(REPO / "config" / "otc-intersection.yaml"), model, shared / "models")
    camera = config.cameras[0]
    if camera.calibration is None:
        return
    detector = Detector(config.detector)
    for clip in ("Cars-Cyclist", "Cars-Truck"):
        tracker = ByteTracker(config.tracker)
        kinematics = GroundKinematics(camera.kinematics, Calibration.from_config(camera.calibration))
        speeds: dict[int, list[float]] = defaultdict(list)
        classes: dict[int, int] = {}
        video = shared / "footage" / "otc-intersection" / f"Testvideo_{clip}_FR20_2020-01-01_00-00-00.mp4"
        with FileSource(video) as source:
            for frame in source:
                g = kinematics.update(tracker.update(detector(frame.image)), frame.t_s)
                for i in np.flatnonzero(g.valid):
                    speeds[int(g.tracker_id[i])].append(float(g.speed_mps[i]) * 3.6)
                    classes[int(g.tracker_id[i])] = int(g.class_id[i])
        rows = [f"{ROAD_USER_CLASSES[classes[t]]} #{t} {np.median(v):.1f}" for t, v in sorted(speeds.items())
                if len(v) >= 10]
        print(f"== otc-intersection {clip}: median ground speed (km/h) per track with >= 10 valid frames: "
              + "; ".join(rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    ap.add_argument("--model", help="manifest model name (default: the config's)")
    ap.add_argument("--speeds", action="store_true", help="also: per-track speeds on the calibrated OTC clips")
    args = ap.parse_args()
    footage = args.shared / "footage"
    model_dir = args.shared / "models"

    truth: Counter[str] = Counter()
    with (footage / "highway-overpass" / "ground_truth_L2.csv").open() as f:
        for row in csv.DictReader(f):
            truth[row["direction"]] += 1
    config = with_model(load_config(REPO / "config" / "highway-overpass.yaml"), args.model, model_dir)
    s = run(footage / "highway-overpass" / "video1.avi", config)
    got = motor_counts(s, "L2")
    print(f"== highway-overpass video1.avi, line L2, model {config.detector.model}")
    print(format_summary(s))
    total_truth, total_got = sum(truth.values()), sum(got.values())
    print(f"{'direction':10} {'counted':>8} {'truth':>6} {'error':>7}")
    for d in ("up", "down"):
        err = (got[d] - truth[d]) / truth[d] if truth[d] else float(got[d])
        print(f"{d:10} {got[d]:8d} {truth[d]:6d} {err:+7.1%}" if truth[d] else f"{d:10} {got[d]:8d} {truth[d]:6d}")
    print(f"{'total':10} {total_got:8d} {total_truth:6d} {(total_got - total_truth) / total_truth:+7.1%}\n")

    otc = footage / "otc-intersection"
    config = with_model(load_config(REPO / "config" / "otc-intersection.yaml"), args.model, model_dir)
    for clip, users in (("Cars-Cyclist", "otc_cars_cyclist_roadusers.csv"),
                        ("Cars-Truck", "otc_cars_truck_roadusers.csv")):
        s = run(otc / f"Testvideo_{clip}_FR20_2020-01-01_00-00-00.mp4", config)
        with (otc / users).open() as f:
            listed = [f"{r['id']} {r['class'].split(' (')[0]} (moving: {r['moving']})" for r in csv.DictReader(f)]
        print(f"== otc-intersection {clip}: road users listed by hand: {'; '.join(listed)}")
        print(format_summary(s) + "\n")
    if args.speeds:
        otc_speeds(args.shared, args.model)


if __name__ == "__main__":
    main()
