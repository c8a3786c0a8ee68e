from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.cli import publish_start
from edge.clips.store import ClipStore
from edge.config import ClipsConfig, EdgeConfig, MotionGatingConfig
from edge.detect import Detector
from edge.payloads import NearMissEvent, WindowMetrics
from edge.replay import replay
from edge.types import MOTOR_VEHICLE_CLASSES
from tests.clip_helpers import probe_streams
from tests.conftest import REPO, repo_config, shared_path


@pytest.fixture(scope="module")
def overpass_config(model_dir: Path) -> EdgeConfig:
    return repo_config("highway-overpass.yaml", model_dir)


def motor_vehicles(records: list[WindowMetrics], line: str) -> Counter[str]:
    out: Counter[str] = Counter()
    for rec in records:
        for direction, per_class in rec.counts[line].items():
            out[direction] += sum(n for cls, n in per_class.items() if cls in MOTOR_VEHICLE_CLASSES)
    return out


def read_metrics(path: Path) -> list[WindowMetrics]:
    return [WindowMetrics.model_validate_json(line) for line in path.read_text().splitlines()]


def test_overpass_counts_match_the_hand_count(overpass_config: EdgeConfig, tmp_path: Path) -> None:
    video = shared_path("footage/highway-overpass/video1.avi")
    with shared_path("footage/highway-overpass/ground_truth_L2.csv").open() as f:
        truth = Counter(row["direction"] for row in csv.DictReader(f))
    summary = replay(video, overpass_config, Detector(overpass_config.detector), tmp_path,
                     start_time=datetime(2024, 5, 1, 7, 0, 50, tzinfo=UTC))
    records = read_metrics(tmp_path / "metrics.jsonl")
    got = motor_vehicles(records, "L2")
    assert truth == Counter({"up": 31})
    assert abs(sum(got.values()) - 31) <= 0.05 * 31, got
    assert abs(got["up"] - truth["up"]) <= 0.10 * truth["up"], got
    assert got["down"] == 0
    # 33 s starting 10 s before a minute boundary: one full window, then a partial one
    assert [r.window_start for r in records] == ["2024-05-01T07:00:00Z", "2024-05-01T07:01:00Z"]
    assert [r.partial for r in records] == [False, True]
    assert sum(r.health.frames for r in records) == summary.frames == 500


def test_same_video_and_config_give_identical_metrics(overpass_config: EdgeConfig, tmp_path: Path) -> None:
    video = shared_path("footage/highway-overpass/video1.avi")
    detector = Detector(overpass_config.detector)
    outputs = []
    for run in ("a", "b"):
        replay(video, overpass_config, detector, tmp_path / run, max_frames=250)
        outputs.append((tmp_path / run / "metrics.jsonl").read_bytes())
    assert outputs[0] == outputs[1]
    assert b'"L2"' in outputs[0]


def test_cli_replay_end_to_end(model_dir: Path, tmp_path: Path) -> None:
    video = shared_path("footage/otc-intersection/Testvideo_Cars-Cyclist_FR20_2020-01-01_00-00-00.mp4")
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "replay", str(video), "-c", str(REPO / "config" / "otc-intersection.yaml"),
         "-o", str(tmp_path / "out"), "--model-dir", str(model_dir)],
        capture_output=True, text=True, check=False, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "x real time" in proc.stdout
    for line in ("Sued", "West", "Nord", "Ost"):
        assert line in proc.stdout
    (rec,) = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert rec["window_start"] == "2020-01-01T00:00:00Z"
    # the summary (issue 18 item 11): speeds, the movements table with this run's movements, near-misses,
    # what the default direction names mean, and every output file
    table = proc.stdout.split("\n\n")
    assert "p85 km/h" in table[0].splitlines()[1] and "up/down = crossing towards the top/bottom" in table[0]
    movements = {row.split()[0]: int(row.split()[-1]) for row in table[1].splitlines()[1:]}
    assert movements == {k: sum(v.values()) for k, v in rec["movements"].items()} and movements
    assert f"near-misses {len((tmp_path / 'out' / 'events.jsonl').read_text().splitlines())}" in proc.stdout
    assert str(tmp_path / "out" / "speeds.jsonl") in proc.stdout
    assert rec["partial"] is True
    assert rec["health"]["frames"] == 60
    assert set(rec) == {"schema_version", "msg_id", "device", "camera", "window_start", "window_s", "partial",
                        "counts", "movements", "conflicts", "health"}
    # the config is calibrated: conflicts counted against the vehicles entering, speeds in their own record
    assert rec["conflicts"]["vehicles_entering"] >= 2
    speeds = [json.loads(x) for x in (tmp_path / "out" / "speeds.jsonl").read_text().splitlines()]
    assert {s["window_start"] for s in speeds} == {rec["window_start"]}
    assert [s["line"] for s in speeds] == ["Sued", "West", "Nord", "Ost"]  # one record per line, config order
    for per_class in (stats for s in speeds for per_dir in s["speeds"].values() for stats in per_dir.values()):
        assert {"count", "unmeasured", "over_limit"} <= set(per_class) and None not in per_class.values()
    assert (tmp_path / "out" / "events.jsonl").exists()
    # the silver car C2 (hand-listed) drives out of the upper-left road across the Sued section
    assert sum(rec["counts"]["Sued"]["down"].values()) >= 1


def test_cli_reports_a_missing_video_clearly(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "replay", str(tmp_path / "none.mp4"), "-c",
         str(REPO / "config" / "highway-overpass.yaml"), "-o", str(tmp_path / "o"),
         "--model-dir", str(shared_path("models"))],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert proc.returncode == 1
    assert "none.mp4" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_replay_that_publishes_takes_its_start_from_the_file_or_refuses(tmp_path: Path) -> None:
    """A dashboard must not get windows of 1970 (issue 18 item 9): the start comes from --start-time, the
    file's creation_time tag or a date in its name, or a configured windows.origin; else the replay refuses,
    before anything is published or written."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    otc = shared_path("footage/otc-intersection/Testvideo_Cars-Cyclist_FR20_2020-01-01_00-00-00.mp4")
    carpark = shared_path("footage/carpark-audio/car-detection.mp4")
    overpass = shared_path("footage/highway-overpass/video1.avi")
    assert publish_start(otc, None, epoch)[0] == datetime(2020, 1, 1, tzinfo=UTC)
    t, where = publish_start(carpark, None, epoch)
    assert t.year == 2018 and "creation_time" in where  # ffprobe: creation_time=2018-04-19T22:46:00Z
    given = datetime(2024, 5, 1, 7, tzinfo=UTC)
    assert publish_start(overpass, given, epoch) == (given, "--start-time")
    assert publish_start(overpass, None, given) == (given, "windows.origin of the config")
    proc = subprocess.run(
        [sys.executable, "-m", "edge.cli", "replay", str(overpass), "-c",
         str(REPO / "config" / "highway-overpass.yaml"), "-o", str(tmp_path / "o"),
         "--model-dir", str(shared_path("models")), "--mqtt", "mqtt://127.0.0.1:9"],
        capture_output=True, text=True, check=False, timeout=60,
    )
    assert proc.returncode == 1 and "--start-time 2024-05-01T07:00:00Z" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "o").exists()


def with_detector(config: EdgeConfig, **update: object) -> EdgeConfig:
    return config.model_copy(update={"detector": config.detector.model_copy(update=update)})


@pytest.mark.parametrize("stride", [2, 3])
def test_detection_stride_keeps_the_1080p_highway_count(model_dir: Path, tmp_path: Path, stride: int) -> None:
    # Hand truth: 31 vehicles cross L2 (../shared/docs/DATA.md); per-frame detection counts 31. The bar
    # for stride is within 2 % of that, i.e. not one vehicle lost or added.
    config = with_detector(repo_config("highway-1080p.yaml", model_dir), stride_frames=stride)
    summary = replay(shared_path("footage/bench/highway_1080p.mp4"), config, Detector(config.detector), tmp_path)
    got = sum(n for (line, _, cls), n in summary.counts.items() if line == "L2" and cls in MOTOR_VEHICLE_CLASSES)
    assert abs(got - 31) <= 0.02 * 31, summary.counts
    assert summary.detected_frames == -(-500 // stride)


def test_motion_gating_skips_still_frames_and_keeps_the_counts(model_dir: Path, tmp_path: Path) -> None:
    video = shared_path("footage/bench/carpark_1080p_audio.mp4")
    config = repo_config("carpark-1080p.yaml", model_dir)
    gated_config = with_detector(config, motion_gating=MotionGatingConfig())
    every = replay(video, config, Detector(config.detector), tmp_path / "every")
    gated = replay(video, gated_config, Detector(gated_config.detector), tmp_path / "gated")
    assert every.detected_frames == every.frames == 377
    assert gated.detected_frames < 0.6 * gated.frames  # the empty car park lane skips most frames
    assert gated.counts == every.counts and sum(every.counts.values()) >= 1


def test_calibrated_motorway_cctv_raises_no_false_near_miss(model_dir: Path, tmp_path: Path) -> None:
    """30 s of free-flowing motorway (a cyclist on the hard shoulder, close following in the right lane) with
    no conflict in the hand labels (tools/labels/highway-cctv.csv): every near-miss would be a false alarm
    that keeps video. With the same calibration the detector before the evidence rules reported 22."""
    labels = (REPO / "tools" / "labels" / "highway-cctv.csv").read_text(encoding="utf-8").splitlines()
    assert labels == ["t_s,class_a,class_b,type,note"]
    config = repo_config("highway-cctv.yaml", model_dir)
    assert config.cameras[0].calibration is not None
    summary = replay(shared_path("footage/highway-cctv/video02.avi"), config, Detector(config.detector), tmp_path)
    assert summary.frames >= 740
    assert (tmp_path / "speeds.jsonl").read_text()  # the ground plane ran
    assert (tmp_path / "events.jsonl").read_text() == ""
    assert summary.events == {}


def test_the_real_crash_is_one_high_severity_collision_with_a_clip_of_the_impact(model_dir: Path,
                                                                                 tmp_path: Path) -> None:
    """The one real collision in the shared footage: a white SUV crossing from the right hits the side of a
    car coming up from the bottom-left; first contact at t = 1.9 s (frame 57; tools/labels/crash-cctv.csv).
    The car enters the view 0.1 s before, too late for a mature track and any TTC evidence: the impact rule
    (contact while closing fast, then the striker's motion breaks) must catch it, and raise nothing else."""
    config = repo_config("crash-cctv.yaml", model_dir)
    config = config.model_copy(update={"clips": ClipsConfig(enabled=True, pre_roll_s=2.0, post_roll_s=2.0)})
    start = datetime(2026, 1, 9, 22, 0, tzinfo=UTC)
    video = shared_path("footage/crash-cctv/night-intersection-crash.mp4")
    replay(video, config, Detector(config.detector), tmp_path, start_time=start)
    (line,) = (tmp_path / "events.jsonl").read_text().splitlines()
    event = NearMissEvent.model_validate_json(line)
    assert event.severity == "high" and event.collision
    assert event.road_users == ("car", "car") and not event.vulnerable
    t_s = (datetime.fromisoformat(event.time.replace("Z", "+00:00")) - start).total_seconds()
    assert 1.5 <= t_s <= 2.3
    store = ClipStore(tmp_path / "clips", retention_days=1, max_bytes=10**9)
    try:
        (clip,) = store.records()
    finally:
        store.close()
    assert clip.id == event.clip and event.msg_id in clip.event_ids
    impact_utc_s = start.timestamp() + 1.9
    assert clip.start_utc_s <= impact_utc_s - 1.0 and clip.end_utc_s >= impact_utc_s + 0.4  # the impact, in full
    assert "audio" in probe_streams(video) and probe_streams(tmp_path / "clips" / clip.file) == ["video"]
