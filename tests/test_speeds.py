"""Speeds at line crossings: lookup of the crossing track's ground speed and per-window statistics."""

from __future__ import annotations

import numpy as np
import pytest

from edge.analytics.kinematics import GroundKinematics, GroundTracks
from edge.analytics.lines import Crossing, LineCounter
from edge.analytics.speeds import SpeedAggregator, speed_stats
from edge.config import KinematicsConfig, LineConfig
from edge.geometry import Calibration
from edge.types import ROAD_USER_CLASSES, Tracks
from tests.test_geometry import GROUND, IMAGE, TRUE_GROUND_TO_IMAGE

CAR = ROAD_USER_CLASSES.index("car")
BUS = ROAD_USER_CLASSES.index("bus")


def test_statistics_of_known_speeds() -> None:
    s = speed_stats([10.0, 20.0, 30.0, 40.0], speed_limit_kmh=30.0, unmeasured=2)
    assert (s.count, s.unmeasured, s.over_limit) == (4, 2, 1)  # 30 is not over a 30 limit
    assert s.mean_kmh == 25.0 and s.p50_kmh == 25.0
    assert s.p85_kmh == 35.5  # linear interpolation: rank 0.85 * 3 = 2.55 -> 30 + 0.55 * 10
    empty = speed_stats([], 50.0, unmeasured=1)
    assert empty.count == 0 and empty.mean_kmh is None and empty.p85_kmh is None and empty.unmeasured == 1
    assert set(s.as_dict()) == {"count", "unmeasured", "mean_kmh", "p50_kmh", "p85_kmh", "over_limit"}


def _ground(ids: list[int], speeds: list[float], valid: list[bool]) -> GroundTracks:
    n = len(ids)
    v = np.column_stack([speeds, np.zeros(n)])
    return GroundTracks(
        t_s=1.0, tracker_id=np.array(ids, np.int64), class_id=np.zeros(n, np.int64), xy_m=np.zeros((n, 2)),
        velocity_mps=v, heading=np.tile([1.0, 0.0], (n, 1)), speed_mps=np.array(speeds, np.float64),
        stationary=np.zeros(n, bool), valid=np.array(valid), length_m=np.ones(n), width_m=np.ones(n),
        position_std_m=np.full(n, 0.1), velocity_std_mps=np.full(n, 0.1), age_s=np.full(n, 2.0),
        consistent=np.ones(n, bool), yaw_rate_rps=np.zeros(n), at_border=np.zeros(n, bool),
    )


def test_crossings_take_the_tracks_speed_and_unsettled_tracks_are_unmeasured() -> None:
    agg = SpeedAggregator([("L", ("in", "out"))], speed_limit_kmh=50.0)
    ground = _ground([1, 2, 3], [10.0, 20.0, 5.0], [True, True, False])
    crossings = [
        Crossing("L", "in", CAR, 1, 1.0),
        Crossing("L", "in", CAR, 2, 1.0),
        Crossing("L", "in", CAR, 3, 1.0),  # velocity not settled yet
        Crossing("L", "out", BUS, 9, 1.0),  # not on the ground this frame (e.g. above the horizon)
    ]
    got = agg.add(crossings, ground)
    assert got == [pytest.approx(36.0), pytest.approx(72.0), None, None]
    window = agg.close()
    car_in = window["L"]["in"]["car"]
    assert (car_in.count, car_in.unmeasured, car_in.over_limit) == (2, 1, 1)
    assert car_in.mean_kmh == 54.0
    assert window["L"]["out"]["bus"].unmeasured == 1 and window["L"]["out"]["bus"].count == 0
    assert set(window["L"]["in"]) == set(ROAD_USER_CLASSES)
    assert agg.close()["L"]["in"]["car"].count == 0  # a new window starts empty


def test_line_crossing_speed_from_boxes_through_the_calibration() -> None:
    """Cars driving away from the camera at 36 and 54 km/h cross a line drawn in pixels; p50 and p85 follow."""
    cal = Calibration(IMAGE, GROUND, origin_m=(0.0, 0.0))
    line_y_px = 150 + 2400 / (15.0 + 5)  # the image row of ground y = 15 m
    line = LineConfig(name="L", points_px=((0.0, line_y_px), (800.0, line_y_px)), directions=("away", "towards"))
    counter = LineCounter((line,), hysteresis_px=2.0)
    kin = GroundKinematics(KinematicsConfig(), cal)
    agg = SpeedAggregator([(line.name, ("away", "towards"))], speed_limit_kmh=50.0)
    cars = {1: (10.0, -2.0, 0.0), 2: (15.0, 1.0, 0.4), 3: (10.0, 3.0, 0.9)}  # id: (m/s, x m, start s)
    for k in range(120):
        t = k * 0.05
        ids, boxes = [], []
        for tid, (v, x, t0) in cars.items():
            if t >= t0 and (y := 3.0 + v * (t - t0)) < 30:
                q = TRUE_GROUND_TO_IMAGE @ [x, y, 1.0]
                u, w = q[0] / q[2], q[1] / q[2]
                ids.append(tid)
                boxes.append([u - 15, w - 20, u + 15, w])
        if not ids:
            continue
        tracks = Tracks(np.array(boxes, np.float32), np.ones(len(ids), np.float32),
                        np.full(len(ids), CAR), np.array(ids))
        ground = kin.update(tracks, t)
        agg.add(counter.update(tracks, t), ground)
    stats = agg.close()["L"]["away"]["car"]
    assert stats.count == 3 and stats.unmeasured == 0
    assert stats.p50_kmh == pytest.approx(36.0, abs=1.0)
    assert stats.mean_kmh == pytest.approx(42.0, abs=1.0)
    assert stats.over_limit == 1
