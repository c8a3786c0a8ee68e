"""Ground-plane kinematics: speed, heading, stationary hysteresis, freed state, real OTC tracks."""

from __future__ import annotations

import bz2
import json
import math
from collections import defaultdict

import numpy as np
import pytest

from edge.analytics.kinematics import FOOTPRINT_SIZES, GroundKinematics, GroundTracks
from edge.config import KinematicsConfig
from edge.geometry import Calibration, calibration_config_from_otrfpts
from edge.types import ROAD_USER_CLASSES, Tracks
from tests.conftest import shared_path
from tests.test_geometry import GROUND, IMAGE, TRUE_GROUND_TO_IMAGE, radeberg_calibration

CAR = ROAD_USER_CLASSES.index("car")
PERSON = ROAD_USER_CLASSES.index("person")


def run_ground(
    kin: GroundKinematics, t: np.ndarray, xy: np.ndarray, tid: int = 1, cls: int = CAR
) -> list[GroundTracks]:
    return [kin.update_ground([tid], [cls], p[None, :], float(ti)) for ti, p in zip(t, xy, strict=True)]


def test_constant_speed_with_irregular_frames_gives_speed_and_heading() -> None:
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.uniform(0.03, 0.09, 120))  # irregular frame intervals, ~17 fps
    heading = np.array([math.cos(math.radians(30)), math.sin(math.radians(30))])
    xy = t[:, None] * 10.0 * heading + rng.normal(0, 0.05, (len(t), 2))  # 10 m/s, 5 cm noise
    kin = GroundKinematics(KinematicsConfig(), measurement_noise_m=0.05)
    out = run_ground(kin, t, xy)
    assert not out[0].valid[0] and not out[1].valid[0]  # the velocity has not settled yet
    settled = [g for g in out if g.t_s - t[0] >= 1.0]
    assert all(g.valid[0] and not g.stationary[0] for g in settled)
    speeds = np.array([g.speed_mps[0] for g in settled])
    assert np.abs(speeds / 10.0 - 1).max() < 0.04
    angles = [math.degrees(math.acos(float(np.clip(g.heading[0] @ heading, -1, 1)))) for g in settled]
    assert max(angles) < 2.0
    last = out[-1]
    assert last.length_m[0] == FOOTPRINT_SIZES["car"].length_m and last.width_m[0] == FOOTPRINT_SIZES["car"].width_m
    assert np.allclose(np.hypot(last.vx_mps, last.vy_mps), last.speed_mps)


def test_speed_through_the_homography_from_boxes() -> None:
    """A car driving away from the camera at 36 km/h, seen as boxes; its speed comes out in m/s on the ground."""
    cal = Calibration(IMAGE, GROUND, origin_m=(0.0, 0.0))
    kin = GroundKinematics(KinematicsConfig(), cal)
    t = np.arange(60) / 20.0
    ground = np.column_stack([np.full_like(t, 1.5), 3.0 + 10.0 * t])  # 10 m/s along +y (away)
    q = ground @ TRUE_GROUND_TO_IMAGE[:, :2].T + TRUE_GROUND_TO_IMAGE[:, 2]
    bottom = q[:, :2] / q[:, 2:]
    speeds = []
    for ti, (u, v) in zip(t, bottom, strict=True):
        box = np.array([[u - 20, v - 30, u + 20, v]], np.float32)
        g = kin.update(Tracks(box, np.ones(1, np.float32), np.array([CAR]), np.array([7])), float(ti))
        if g.valid[0]:
            speeds.append(g.speed_mps[0])
            assert g.heading[0, 1] > 0.99  # moving along +y
    assert len(speeds) > 40
    assert abs(float(np.median(speeds)) - 10.0) < 0.3


def test_stationary_flag_has_hysteresis() -> None:
    cfg = KinematicsConfig(stationary_enter_speed_mps=0.5, stationary_exit_speed_mps=1.0, velocity_settle_s=0.3)
    kin = GroundKinematics(cfg, measurement_noise_m=0.01)
    dt = 0.05
    # 3 s at 5 m/s, 3 s standing, 3 s creeping at 0.75 m/s (between the thresholds), 3 s at 3 m/s
    speeds = [5.0] * 60 + [0.0] * 60 + [0.75] * 60 + [3.0] * 60
    x, t, flags = 0.0, 0.0, []
    for v in speeds:
        g = kin.update_ground([1], [CAR], [[x, 0.0]], t)
        flags.append(bool(g.stationary[0]))
        x += v * dt
        t += dt
    assert not any(flags[20:60])  # moving
    assert all(flags[90:120])  # came to a standstill
    assert all(flags[150:180])  # creeping below the exit threshold keeps it stationary
    assert not any(flags[215:240])  # faster than the exit threshold: moving again
    # a track that was moving and slows to the same creep stays moving
    kin2 = GroundKinematics(cfg, measurement_noise_m=0.01)
    x, t, flags2 = 0.0, 0.0, []
    for v in [3.0] * 40 + [0.75] * 80:
        flags2.append(bool(kin2.update_ground([1], [CAR], [[x, 0.0]], t).stationary[0]))
        x += v * dt
        t += dt
    assert not any(flags2[20:])


def test_stationary_keeps_its_heading_and_unmoved_tracks_have_none() -> None:
    kin = GroundKinematics(KinematicsConfig(), measurement_noise_m=0.01)
    t = np.arange(80) * 0.05
    x = np.where(t < 2.0, 8.0 * t, 16.0)  # drives along -y... here +x, then stops
    for ti, xi in zip(t, x, strict=True):
        g = kin.update_ground([1, 2], [CAR, PERSON], [[xi, 0.0], [5.0, 5.0]], float(ti))
    assert g.stationary[0] and g.heading[0, 0] > 0.99
    assert g.stationary[1] and np.isnan(g.heading[1]).all()


def test_a_gap_in_observations_is_bridged_by_prediction() -> None:
    kin = GroundKinematics(KinematicsConfig(), measurement_noise_m=0.02)
    t = np.r_[np.arange(30) * 0.05, 2.5 + np.arange(30) * 0.05]  # a 1 s gap (track lost, then found)
    xy = np.column_stack([12.0 * t, np.zeros_like(t)])
    out = run_ground(kin, t, xy)
    after = out[30]  # the first frame after the gap
    assert after.valid[0] and abs(after.speed_mps[0] - 12.0) < 0.6


def test_state_is_freed_when_tracks_end_and_history_is_bounded() -> None:
    kin = GroundKinematics(KinematicsConfig(history_samples=8))
    for k in range(50):
        kin.update_ground([1, 2, 3], [CAR] * 3, np.array([[k, 0.0], [0.0, k], [k, k]]), k * 0.05)
    assert kin.tracked_count == 3
    assert kin.history(1).shape == (8, 3)
    np.testing.assert_allclose(kin.history(1)[-1, 0], 49 * 0.05)
    g = kin.update_ground([3], [CAR], [[50.0, 50.0]], 2.5, ended_ids=(1, 2))
    assert kin.tracked_count == 1 and len(g) == 1
    assert kin.history(1).shape == (0, 3)
    # a reused id starts afresh: no valid velocity on its first frame
    assert not kin.update_ground([1], [CAR], [[0.0, 0.0]], 2.55).valid[0]


def test_bad_input_is_refused() -> None:
    kin = GroundKinematics(KinematicsConfig())
    with pytest.raises(ValueError, match="must not repeat"):
        kin.update_ground([1, 1], [CAR, CAR], [[0, 0], [1, 1]], 0.0)
    with pytest.raises(ValueError, match="needs a calibration"):
        kin.update(Tracks.empty(), 0.0)
    with pytest.raises(ValueError, match="stationary_exit_speed_mps must exceed"):
        KinematicsConfig(stationary_enter_speed_mps=1.0, stationary_exit_speed_mps=0.8)


# ------------------------------------------------------------------------------------------ real tracks
OTC = "footage/otc-intersection/Testvideo_{}_FR20_2020-01-01_00-00-00"


def otc_track_speeds(clip: str, cal: Calibration | None = None) -> dict[int, tuple[str, float, float]]:
    """Per OTC tracker track: (majority class, median valid speed km/h, bottom-centre net displacement m).

    ``cal`` defaults to the clip's own reference points."""
    base = OTC.format(clip)
    if cal is None:
        cal = Calibration.from_config(calibration_config_from_otrfpts(
            json.loads(shared_path(base + ".otrfpts").read_text(encoding="utf-8"))))
    with bz2.open(shared_path(base + ".ottrk")) as fh:
        detections = json.load(fh)["data"]["detections"]
    by_frame: dict[int, list[dict[str, object]]] = defaultdict(list)
    last: dict[int, int] = {}
    for d in detections:
        by_frame[int(d["frame"])].append(d)
        last[int(d["track-id"])] = max(last.get(int(d["track-id"]), 0), int(d["frame"]))
    kin = GroundKinematics(KinematicsConfig(), cal)
    speeds: dict[int, list[float]] = defaultdict(list)
    votes: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    path: dict[int, list[np.ndarray]] = defaultdict(list)
    for frame in sorted(by_frame):
        rows = by_frame[frame]
        # x, y are the box centre; the bottom-centre is (x, y + h/2)
        xyxy = np.array([[float(r["x"]) - float(r["w"]) / 2, float(r["y"]) - float(r["h"]) / 2,  # type: ignore[arg-type]
                          float(r["x"]) + float(r["w"]) / 2, float(r["y"]) + float(r["h"]) / 2]  # type: ignore[arg-type]
                         for r in rows], np.float32)
        names = [str(r["class"]) for r in rows]
        cls = np.array([ROAD_USER_CLASSES.index(n) if n in ROAD_USER_CLASSES else CAR for n in names])
        ids = np.array([int(r["track-id"]) for r in rows])  # type: ignore[call-overload]
        ended = tuple(t for t, f in last.items() if f == frame - 1)
        g = kin.update(Tracks(xyxy, np.ones(len(rows), np.float32), cls, ids, ended), (frame - 1) / 20.0)
        for i, tid in enumerate(g.tracker_id.tolist()):
            if g.valid[i]:
                speeds[tid].append(float(g.speed_mps[i]) * 3.6)
            path[tid].append(cal.image_to_ground(Tracks(xyxy[i : i + 1], np.ones(1, np.float32), cls[i : i + 1],
                                                        ids[i : i + 1]).anchors())[0])
        for n, tid in zip(names, ids.tolist(), strict=True):
            votes[tid][n] += 1
    return {
        tid: (max(votes[tid], key=lambda k: votes[tid][k]), float(np.median(v)),
              float(np.hypot(*(path[tid][-1] - path[tid][0]))))
        for tid, v in speeds.items()
    }


def test_otc_tracker_output_gives_plausible_speeds() -> None:
    """Speeds from OpenTrafficCam's own tracks through the OTC calibration (not ground truth: plausibility).

    Measured medians (km/h): Cars-Cyclist: silver car 22.1, red car 12.3 (creeping up in the queue), cyclist
    19.7 (as 'person') / 21.0 (as 'bicycle'), parked van 0.4; Cars-Truck: estate car 26.6, skip truck 10.9,
    dark car 29.2 and 26.7 (one car, two track ids), parked cars and van 1.2-3.6 (far away, where one pixel of
    box jitter is 10-25 cm)."""
    moving: list[tuple[str, int, str, float]] = []
    parked: list[tuple[str, int, str, float]] = []
    for clip in ("Cars-Cyclist", "Cars-Truck"):
        for tid, (cls, kmh, moved_m) in otc_track_speeds(clip).items():
            print(f"{clip} track {tid} {cls}: median {kmh:.1f} km/h, moved {moved_m:.1f} m")
            (moving if moved_m > 5.0 else parked).append((clip, tid, cls, kmh))
    assert len(moving) >= 6
    for clip, tid, cls, kmh in moving:
        if cls in ("car", "truck", "bus"):
            assert 2.0 <= kmh <= 60.0, (clip, tid, cls, kmh)
        else:  # the cyclist, tracked as person and as bicycle
            assert 5.0 <= kmh <= 30.0, (clip, tid, cls, kmh)
    for clip, tid, cls, kmh in parked:
        if cls != "person":
            assert kmh < 5.0, (clip, tid, cls, kmh)


def test_speeds_agree_between_two_independent_surveys_of_the_camera() -> None:
    """The Radeberg reference points survey the same camera independently (see test_geometry). Speeds of the
    moving OTC tracks through either calibration agree within 5 % (measured: at most 3.4 %)."""
    rad = radeberg_calibration()
    for clip in ("Cars-Cyclist", "Cars-Truck"):
        own, other = otc_track_speeds(clip), otc_track_speeds(clip, rad)
        for tid, (_, kmh, moved_m) in own.items():
            if moved_m > 5.0:
                assert abs(other[tid][1] / kmh - 1) < 0.05, (clip, tid, kmh, other[tid][1])


# ------------------------------------------------------------------- footprint, uncertainty, innovation gate
def _box_at(cal: Calibration, x_m: float, y_m: float, w_px: float = 40.0, h_px: float = 30.0) -> np.ndarray:
    u, v = cal.ground_to_image(np.array([[x_m, y_m]]))[0]
    return np.array([[u - w_px / 2, v - h_px, u + w_px / 2, v]], np.float32)


def test_footprint_centre_lies_beyond_the_contact_point_by_its_support_distance() -> None:
    """The footprint centre is the box's bottom-centre moved away from the camera (the ground direction of
    one pixel up) by the footprint's extent in that direction: half the length for a car seen from behind,
    less for one seen at an angle."""
    cal = Calibration(IMAGE, GROUND, origin_m=(0.0, 0.0))
    size = FOOTPRINT_SIZES["car"]
    for velocity in ((0.0, 10.0), (10.0, 0.0), (7.0, 7.0)):
        kin = GroundKinematics(KinematicsConfig(), cal)
        for k in range(40):
            t = k / 20.0
            contact = np.array([1.5, 8.0]) + np.array(velocity) * t
            g = kin.update(Tracks(_box_at(cal, *contact), np.ones(1, np.float32), np.array([CAR]), np.array([3])), t)
        away = cal.image_to_ground(cal.ground_to_image(contact[None]) - [0.0, 1.0])[0] - contact
        away /= np.hypot(*away)
        h = np.array(velocity) / np.hypot(*velocity)
        along = abs(float(h @ away))
        support = size.length_m / 2 * along + size.width_m / 2 * math.sqrt(1 - along**2)
        np.testing.assert_allclose(g.xy_m[0], contact + support * away, atol=0.15)


def test_position_uncertainty_grows_with_distance_and_box_size() -> None:
    cal = Calibration(IMAGE, GROUND, origin_m=(0.0, 0.0))
    kin = GroundKinematics(KinematicsConfig(), cal)
    boxes = np.concatenate([_box_at(cal, 1.5, 5.0), _box_at(cal, 1.5, 40.0), _box_at(cal, 1.5, 5.0, 200, 150)])
    g = kin.update(Tracks(boxes, np.ones(3, np.float32), np.full(3, CAR), np.array([1, 2, 3])), 0.0)
    near, far, big = g.position_std_m
    assert far > 2 * near  # a metre per pixel far away, centimetres near the camera
    assert big > near  # a larger box jitters by more pixels


def test_a_jump_fails_the_innovation_gate_and_makes_the_track_inconsistent() -> None:
    kin = GroundKinematics(KinematicsConfig(consistency_hold_s=1.0), measurement_noise_m=0.05)
    for k in range(40):
        g = kin.update_ground([1], [CAR], [[10.0 * k / 20, 0.0]], k / 20)
    assert g.consistent[0]
    jumped = kin.update_ground([1], [CAR], [[10.0 * 40 / 20, 6.0]], 2.0)  # a box merge: 6 m sideways
    assert not jumped.consistent[0]
    assert abs(jumped.xy_m[0, 1]) < 0.1  # the jump was not used
    for k in range(41, 70):
        g = kin.update_ground([1], [CAR], [[10.0 * k / 20, 0.0]], k / 20)
    assert g.consistent[0] and abs(g.speed_mps[0] - 10.0) < 0.5  # consistent again after the hold
    # a jump that persists (an id handed to another road user) restarts the track, which must mature again
    for k in range(70, 74):
        g = kin.update_ground([1], [CAR], [[10.0 * k / 20, 8.0]], k / 20)
    assert abs(g.xy_m[0, 1] - 8.0) < 0.5 and g.age_s[0] < 0.2
