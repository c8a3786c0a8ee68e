"""Near-miss detection on constructed ground-plane scenes with known answers."""

from __future__ import annotations

import math
import time

import numpy as np

from edge.analytics.conflicts import ConflictDetector, NearMiss
from edge.analytics.kinematics import GroundKinematics
from edge.config import ConflictConfig, KinematicsConfig
from edge.types import ROAD_USER_CLASSES

CAR, PERSON = ROAD_USER_CLASSES.index("car"), ROAD_USER_CLASSES.index("person")
FPS = 20.0


Motion = tuple[int, tuple[float, float, float, float]]


def run(paths: dict[int, Motion], seconds: float, config: ConflictConfig | None = None) -> list[NearMiss]:
    """paths: id -> (class, (x0, y0, vx, vy)): straight motion at constant velocity, metres and m/s."""
    kin = GroundKinematics(KinematicsConfig(), measurement_noise_m=0.05)
    det = ConflictDetector(config or ConflictConfig(), kin)
    events: list[NearMiss] = []
    for f in range(int(seconds * FPS)):
        t = f / FPS
        ids, classes, xy = [], [], []
        for tid, (cls, (x0, y0, vx, vy)) in paths.items():
            ids.append(tid)
            classes.append(cls)
            xy.append((x0 + vx * t, y0 + vy * t))
        ground = kin.update_ground(ids, classes, xy, t)
        events += det.update(ground)
    return events + det.flush()


def test_right_angle_crossing_is_a_crossing_conflict() -> None:
    # car A eastbound at 10 m/s reaches the origin at t = 3 s; car B northbound at 10 m/s at t = 3.5 s
    events = run({1: (CAR, (-30.0, 0.0, 10.0, 0.0)), 2: (CAR, (0.0, -35.0, 0.0, 10.0))}, 6.0)
    assert len(events) == 1
    (e,) = events
    assert e.conflict_type == "crossing"
    assert e.ttc_s is not None and 0 < e.ttc_s <= 1.5
    assert e.pet_s is not None and 0 <= e.pet_s <= 1.0
    assert e.classes == ("car", "car")
    assert not e.vulnerable
    assert math.hypot(*e.location_m) <= 10


def test_rear_end_closing_fast_is_a_rear_end_conflict() -> None:
    # follower at 15 m/s, leader at 5 m/s, 12 m apart (bumper gap 7.5 m with 4.5 m cars): TTC 0.75 - t;
    # the last frame before contact is t = 0.70 s, where TTC is 0.05 s
    events = run({1: (CAR, (0.0, 0.0, 15.0, 0.0)), 2: (CAR, (12.0, 0.0, 5.0, 0.0))}, 1.0)
    assert len(events) == 1
    e = events[0]
    assert e.conflict_type == "rear_end"
    assert e.severity == "high"
    assert e.ttc_s is not None and abs(e.ttc_s - 0.05) < 0.04
    # DRAC = closing speed^2 / (2 x gap) = 10^2 / (2 x 0.5 m) = 100 m/s^2 at that moment
    assert e.drac_mps2 is not None and 60 < e.drac_mps2 < 160


def test_parallel_lanes_are_not_conflicts() -> None:
    events = run({1: (CAR, (0.0, 0.0, 12.0, 0.0)), 2: (CAR, (5.0, 3.5, 12.0, 0.0))}, 5.0)
    assert events == []


def test_pedestrian_in_front_of_a_car_is_flagged_vulnerable() -> None:
    # pedestrian crosses at 1.5 m/s from y=-4; car at 8 m/s reaches x=0 at t = 3.0 s
    events = run({1: (CAR, (-24.0, 0.0, 8.0, 0.0)), 2: (PERSON, (0.0, -4.0, 0.0, 1.5))}, 6.0)
    assert len(events) == 1
    assert events[0].vulnerable
    assert set(events[0].classes) == {"car", "person"}


def test_far_apart_road_users_are_never_paired() -> None:
    kin = GroundKinematics(KinematicsConfig(), measurement_noise_m=0.05)
    det = ConflictDetector(ConflictConfig(max_pair_distance_m=30), kin)
    rng = np.random.default_rng(7)
    n = 200
    xy0 = rng.uniform(0, 2000, (n, 2))  # 200 road users spread over 2 km: few pairs within 30 m
    start = time.perf_counter()
    for f in range(100):
        t = f / FPS
        det.update(kin.update_ground(np.arange(n), np.full(n, CAR), xy0 + [10 * t, 0], t))
    per_frame_ms = (time.perf_counter() - start) * 1000 / 100
    assert det.pairs_evaluated < 100 * n  # pruning: far fewer than n^2/2 = 19,900 pairs a frame
    assert per_frame_ms < 50  # generous bound on a slow machine; all-pairs would be ~20k TTCs a frame


def test_encounters_are_freed_when_tracks_end() -> None:
    kin = GroundKinematics(KinematicsConfig(), measurement_noise_m=0.05)
    det = ConflictDetector(ConflictConfig(), kin)
    for f in range(40):
        t = f / FPS
        det.update(kin.update_ground([1, 2], [CAR, CAR], [(10 * t, 0.0), (10 * t + 8, 0.0)], t))
    assert det.open_encounters == 1
    det.update(kin.update_ground([], [], np.zeros((0, 2)), 2.0, ended_ids=[1, 2]), ended_ids=(1, 2))
    assert det.open_encounters == 0
