"""Riders of two-wheelers count as the two-wheeler, never as pedestrians (``edge.analytics.riders``).

Real data, as real as the shared set allows:

* OpenTrafficCam's own detector and tracker output for its Cars-Cyclist clip (``*.ottrk``: real frames, a
  third-party tracker): the cyclist is a ``person`` track (the rider) beside a ``bicycle`` track;
* our detector on the same clip's frames, with its bicycle and motorcycle boxes taken away (a detector that
  found the rider and missed the bicycle, as on the urban arterial of the issue);
* Urban Tracker's manual tracks of the St-Marc scene (no video): cyclists and pedestrians crossing one line.
"""

from __future__ import annotations

import bz2
import json
import sqlite3
import tempfile
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from pydantic import ValidationError

from edge.analytics.kinematics import GroundKinematics, GroundTracks
from edge.analytics.lines import Crossing, LineCounter
from edge.config import EdgeConfig, KinematicsConfig, LineConfig
from edge.config.counting import RiderConfig
from edge.detect import Detector
from edge.geometry import Calibration
from edge.replay import replay
from edge.types import ROAD_USER_CLASSES, Detections, Tracks
from tests.conftest import repo_config, shared_path

PERSON, BICYCLE, MOTORCYCLE = (ROAD_USER_CLASSES.index(c) for c in ("person", "bicycle", "motorcycle"))
OTC = "footage/otc-intersection/Testvideo_Cars-Cyclist_FR20_2020-01-01_00-00-00"
OTC_FPS = 20.0
TWO_WHEELERS = ("bicycle", "motorcycle")


# ------------------------------------------------------------------ OpenTrafficCam's tracks of its own clip
def otc_tracks(drop_two_wheelers: bool = False) -> list[tuple[float, Tracks]]:
    """The ``.ottrk`` tracks of Cars-Cyclist as ``Tracks`` per frame, each track with its running
    confidence-weighted majority class (as ``edge.track`` reports it). ``drop_two_wheelers``: leave out the
    tracks whose majority is a bicycle or motorcycle, as if the detector had missed them."""
    with bz2.open(shared_path(OTC + ".ottrk")) as fh:
        rows = [d for d in json.load(fh)["data"]["detections"] if d["class"] in ROAD_USER_CLASSES]
    majority: dict[int, Counter[str]] = defaultdict(Counter)
    for d in rows:
        majority[int(d["track-id"])][str(d["class"])] += 1
    wheels = {t for t, c in majority.items() if c.most_common(1)[0][0] in TWO_WHEELERS}
    rows = [d for d in rows if not (drop_two_wheelers and int(d["track-id"]) in wheels)]
    by_frame: dict[int, list[dict[str, object]]] = defaultdict(list)
    last: dict[int, int] = {}
    for d in rows:
        by_frame[int(d["frame"])].append(d)
        last[int(d["track-id"])] = max(last.get(int(d["track-id"]), 0), int(d["frame"]))
    votes: dict[int, npt.NDArray[np.float64]] = defaultdict(lambda: np.zeros(len(ROAD_USER_CLASSES)))
    out = []
    for frame in sorted(by_frame):
        part = by_frame[frame]
        ids = np.array([int(d["track-id"]) for d in part])  # type: ignore[call-overload]
        for d, tid in zip(part, ids.tolist(), strict=True):
            votes[tid][ROAD_USER_CLASSES.index(str(d["class"]))] += float(d["confidence"])  # type: ignore[arg-type]
        x, y, w, h = (np.array([float(d[k]) for d in part]) for k in ("x", "y", "w", "h"))  # type: ignore[arg-type]
        xyxy = np.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], axis=1).astype(np.float32)
        cls = np.array([int(votes[t].argmax()) for t in ids.tolist()])
        ended = tuple(t for t, f in sorted(last.items()) if f == frame - 1)
        out.append(((frame - 1) / OTC_FPS, Tracks(xyxy, np.ones(len(part), np.float32), cls, ids, ended)))
    return out


def otc_counter(config: EdgeConfig) -> LineCounter:
    camera = config.cameras[0]
    return LineCounter(camera.lines, camera.counting.hysteresis_px, confirm_s=camera.counting.confirm_s,
                       riders=camera.counting.riders)


def count_otc(counter: LineCounter, frames: list[tuple[float, Tracks]],
              kinematics: GroundKinematics | None = None) -> list[Crossing]:
    crossings: list[Crossing] = []
    for t, tracks in frames:
        ground = kinematics.update(tracks, t, (800, 600)) if kinematics is not None else None
        crossings += counter.update(tracks, t, (800, 600), ground)
    return crossings + counter.flush(frames[-1][0])


def on_line(crossings: list[Crossing], line: str) -> list[tuple[str, str]]:
    return [(c.direction, ROAD_USER_CLASSES[c.class_id]) for c in crossings if c.line == line]


def test_a_rider_tracked_beside_its_bicycle_counts_once_as_the_bicycle(model_dir: Path) -> None:
    """OpenTrafficCam's tracker follows the cyclist as a person (the rider, 60 frames) and a bicycle; both
    cross the Nord section. The rider rides with the bicycle on 48 of its 60 frames: the pair counts once, as
    a bicycle (uncalibrated, so only the riding rule can decide). Before: a bicycle and a pedestrian."""
    crossings = count_otc(otc_counter(repo_config("otc-intersection.yaml", model_dir)), otc_tracks())
    assert on_line(crossings, "Nord") == [("down", "bicycle")]
    assert not [c for c in crossings if c.class_id == PERSON]


def test_a_rider_whose_bicycle_was_missed_counts_as_a_bicycle_by_its_ground_speed(model_dir: Path) -> None:
    """The same tracks without the two-wheeler tracks: the rider alone crosses Nord at 15-24 km/h on the
    ground (calibrated camera), faster than any pedestrian for over a second: a bicycle, not a person."""
    config = repo_config("otc-intersection.yaml", model_dir)
    camera = config.cameras[0]
    assert camera.calibration is not None
    kinematics = GroundKinematics(camera.kinematics, Calibration.from_config(camera.calibration))
    crossings = count_otc(otc_counter(config), otc_tracks(drop_two_wheelers=True), kinematics)
    assert on_line(crossings, "Nord") == [("down", "bicycle")]


class _NoTwoWheelers:
    """Our detector, with its bicycle and motorcycle boxes taken away."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.input_size_px = detector.input_size_px
        self.frames = 0

    def __call__(self, image: npt.NDArray[np.uint8]) -> Detections:
        self.frames += 1
        d = self.detector(image)
        return d[~np.isin(d.class_id, [BICYCLE, MOTORCYCLE])]


def test_our_detector_finding_the_rider_but_no_bicycle_on_real_frames_counts_a_bicycle(model_dir: Path) -> None:
    """Our detector on the Cars-Cyclist frames, with its bicycle and motorcycle boxes removed and the rider
    boxes kept (``rider_overlap_threshold`` 1: the detector no longer drops a rider onto its bicycle): the rider
    track crosses Nord and counts as a bicycle (ground speed), and no pedestrian is counted there. Before: a
    person."""
    config = repo_config("otc-intersection.yaml", model_dir)
    config = config.model_copy(update={"detector": config.detector.model_copy(update={"rider_overlap_threshold": 1.0})})
    detector = _NoTwoWheelers(Detector(config.detector))
    with tempfile.TemporaryDirectory() as out:
        summary = replay(shared_path(OTC + ".mp4"), config, detector, Path(out))
    assert detector.frames == 60
    nord = {(d, cls): n for (line, d, cls), n in summary.counts.items() if line == "Nord" and n}
    assert nord == {("down", "bicycle"): 1}, nord
    assert not [k for k, n in summary.counts.items() if k[2] == "person" and k[0] == "Nord" and n]


# --------------------------------------------------------------- Urban Tracker: riders and pedestrians on one line
#: Polytrack road-user types (``objects_type``). The unknown (0, -1) objects of St-Marc and Rouen are
#: pedestrians by their descriptions ("black shirt", "enfant", ...), except St-Marc's "black acura"
#: (tools/eval_tracking.py resolves them the same way).
_POLYTRACK = {-1: "person", 0: "person", 1: "car", 2: "person", 4: "bicycle"}
_RESOLVED = {("stmarc", 23): "car"}


def urban_tracker(scene: str, fps: float) -> tuple[list[tuple[float, Tracks]], dict[int, str]]:
    """A scene's manual boxes as ``Tracks`` per frame, every bicycle (cyclist and bicycle in one box) given
    the class ``person``: a detector that found the rider only. Returns the frames and each id's true class."""
    path = shared_path(f"trajectories/urbantracker-gt/{scene}/{scene}_gt.sqlite")
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        truth = {i + 1: _RESOLVED.get((scene, i), _POLYTRACK[t])
                 for i, t in con.execute("SELECT object_id, road_user_type FROM objects")}
        rows = con.execute("SELECT frame_number, object_id, x_top_left, y_top_left, x_bottom_right, y_bottom_right "
                           "FROM bounding_boxes ORDER BY frame_number, object_id").fetchall()
    finally:
        con.close()
    table = np.array(rows, np.float64)
    table[:, 1] += 1  # tracker ids start at 1
    last = {int(t): int(table[table[:, 1] == t, 0].max()) for t in np.unique(table[:, 1])}
    frames = []
    for n in range(int(table[:, 0].min()), int(table[:, 0].max()) + 2):
        part = table[table[:, 0] == n]
        ids = part[:, 1].astype(np.int64)
        cls = np.where([truth[int(i)] == "car" for i in ids], ROAD_USER_CLASSES.index("car"), PERSON)
        ended = tuple(t for t, f in sorted(last.items()) if f == n - 1)
        frames.append((n / fps, Tracks(part[:, 2:].astype(np.float32), np.ones(len(part), np.float32),
                                       cls.astype(np.int64), ids, ended)))
    return frames, truth


#: (scene, frame rate, a line that cyclists and pedestrians cross). The files hold no frame rate: Rouen
#: (France) is taken as PAL 25 fps, St-Marc (Montréal) as NTSC 30 fps.
SCENES = [("stmarc", 30.0, ((640, 0), (640, 720)), (1280, 720)), ("rouen", 25.0, ((700, 0), (700, 576)), (1024, 576))]


@pytest.mark.parametrize(("scene", "fps", "line", "size"), SCENES, ids=[s[0] for s in SCENES])
def test_cyclists_seen_as_persons_count_as_bicycles_and_pedestrians_as_persons_on_one_line(
        scene: str, fps: float, line: tuple[tuple[float, float], ...], size: tuple[int, int]) -> None:
    """Urban Tracker's manual tracks, uncalibrated, every cyclist box (rider and bicycle) reported as a
    person: the cyclists move 2.6-4.6 box heights per second and count as bicycles; every pedestrian crossing
    the same line, one of them hurrying at 2 heights/s, counts as a person. Before: the cyclists counted as
    pedestrians."""
    frames, truth = urban_tracker(scene, fps)
    counter = LineCounter((LineConfig(name="X", points_px=line),), 4.0, confirm_s=0.2, riders=RiderConfig())
    crossings = [c for t, tracks in frames for c in counter.update(tracks, t, size)] + counter.flush(1e9)
    got: dict[int, set[str]] = defaultdict(set)
    for c in crossings:
        got[c.tracker_id].add(ROAD_USER_CLASSES[c.class_id])
    cyclists = {t for t in got if truth[t] == "bicycle"}
    pedestrians = {t for t in got if truth[t] == "person"}
    assert len(cyclists) == sum(c == "bicycle" for c in truth.values()) and len(pedestrians) >= 5, got
    assert all(got[t] == {"bicycle"} for t in cyclists), got
    assert all(got[t] == {"person"} for t in pedestrians), got
    assert counter.classes is not None and counter.classes.tracked_count == 0  # every track ended, state freed


# ------------------------------------------------------------------------------------------- synthetic cases
LINE = LineConfig(name="L", points_px=((0, 300), (2000, 300)))


def person_at(tid: int, x: float, y: float, h: float = 100.0, cls: int = PERSON) -> Tracks:
    """A box ``h`` tall and ``h / 2`` wide whose bottom-centre is (x, y)."""
    return Tracks(np.array([[x - h / 4, y - h, x + h / 4, y]], np.float32), np.ones(1, np.float32),
                  np.array([cls]), np.array([tid]))


def walk(counter: LineCounter, heights_per_s: float, tid: int = 1, fps: float = 20.0) -> list[Crossing]:
    """A 100 px person moving up the image at ``heights_per_s``, across the line (y = 300) after 2 s."""
    out: list[Crossing] = []
    for k in range(int(4 * fps)):
        y = 300 + 100 * heights_per_s * (2 - k / fps)
        out += counter.update(person_at(tid, 500, y), k / fps, (4000, 4000))
    return out + counter.flush(1e9)


@pytest.mark.parametrize(("heights_per_s", "counted_as"), [(1.0, "person"), (2.0, "person"), (3.5, "bicycle"),
                                                         (8.0, "motorcycle")])
def test_a_person_track_counts_by_how_fast_its_box_moves_without_calibration(heights_per_s: float,
                                                                            counted_as: str) -> None:
    counter = LineCounter((LINE,), 4.0, confirm_s=0.2, riders=RiderConfig())
    (c,) = walk(counter, heights_per_s)
    assert ROAD_USER_CLASSES[c.class_id] == counted_as


def ground_of(tid: int, t: float, speed_mps: float) -> GroundTracks:
    """One settled person track moving at ``speed_mps`` on the ground."""
    one, yes, no = np.ones(1), np.ones(1, bool), np.zeros(1, bool)
    return GroundTracks(t_s=t, tracker_id=np.array([tid]), class_id=np.array([PERSON]), xy_m=np.zeros((1, 2)),
                        velocity_mps=np.array([[speed_mps, 0.0]]), heading=np.array([[1.0, 0.0]]),
                        speed_mps=np.array([speed_mps]), stationary=no, valid=yes, length_m=one * 0.6,
                        width_m=one * 0.6, position_std_m=one * 0.1, velocity_std_mps=one * 0.1, age_s=one,
                        consistent=yes, yaw_rate_rps=one * 0, at_border=no)


@pytest.mark.parametrize(("speed_mps", "counted_as"), [(1.4, "person"), (3.5, "person"), (5.5, "bicycle"),
                                                     (12.0, "motorcycle")])
def test_a_person_track_counts_by_its_ground_speed_when_calibrated(speed_mps: float, counted_as: str) -> None:
    """The box creeps across the line (after 2 s) at 0.5 heights/s: only the ground speed can tell, and it
    is what counts on a calibrated camera."""
    counter = LineCounter((LINE,), 4.0, confirm_s=0.2, riders=RiderConfig())
    out: list[Crossing] = []
    for k in range(80):
        t = k / 20
        out += counter.update(person_at(1, 500, 300 + 50 * (2 - t)), t, (4000, 4000), ground_of(1, t, speed_mps))
    (c,) = out + counter.flush(1e9)
    assert ROAD_USER_CLASSES[c.class_id] == counted_as


def test_a_rider_stopping_at_a_red_light_is_still_a_bicycle_and_a_sprint_of_a_stride_is_no_bicycle() -> None:
    counter = LineCounter((LINE,), 4.0, confirm_s=0.2, riders=RiderConfig())
    out: list[Crossing] = []
    speeds = [6.0] * 30 + [0.0] * 100 + [1.0] * 60  # 1.5 s at 6 m/s, waits 5 s, then rolls off slowly
    for k, v in enumerate(speeds):
        out += counter.update(person_at(1, 500, 400 - k), k / 20, (4000, 4000), ground_of(1, k / 20, v))
    assert [ROAD_USER_CLASSES[c.class_id] for c in out] == ["bicycle"]
    sprinter = LineCounter((LINE,), 4.0, confirm_s=0.2, riders=RiderConfig())
    speeds = [5.0] * 15 + [1.4] * 175  # 0.75 s above a pedestrian's speed: not sustained
    out = []
    for k, v in enumerate(speeds):
        out += sprinter.update(person_at(1, 500, 400 - k), k / 20, (4000, 4000), ground_of(1, k / 20, v))
    assert [ROAD_USER_CLASSES[c.class_id] for c in out] == ["person"]


def rider_and_bicycle(rider_y: Sequence[float], bike_y: Sequence[float]) -> list[Tracks]:
    """Frames of a rider box (id 1, 120 px tall) over a bicycle box (id 2, 70 px); a NaN y leaves it out, and
    the bicycle track ends on its first frame left out."""
    frames = []
    for k, (ry, by) in enumerate(zip(rider_y, bike_y, strict=True)):
        rows = [([480, ry - 120, 520, ry], PERSON, 1)] if not np.isnan(ry) else []
        rows += [([470, by - 70, 530, by], BICYCLE, 2)] if not np.isnan(by) else []
        ended = (2,) if np.isnan(by) and k and not np.isnan(bike_y[k - 1]) else ()
        frames.append(Tracks(np.array([r[0] for r in rows], np.float32).reshape(-1, 4),
                             np.ones(len(rows), np.float32), np.array([r[1] for r in rows], np.int64),
                             np.array([r[2] for r in rows], np.int64), ended))
    return frames


@pytest.mark.parametrize("who_crosses", ["both", "rider first", "bicycle first", "rider only",
                                         "bicycle first, then its track ends"])
def test_a_rider_and_its_bicycle_count_once_as_a_bicycle(who_crosses: str) -> None:
    """Slow (0.5 heights/s): only riding together tells. Whoever crosses first counts, as the bicycle; the
    other's crossing of the same line and direction is the same road user and is dropped."""
    nan = float("nan")
    bike = [400.0 - 3 * k for k in range(60)]  # across the line (y = 300) at k = 33
    rider = [y - 15 for y in bike]  # feet on the pedals: the rider's bottom-centre crosses 5 frames earlier
    if who_crosses == "both":
        rider = list(bike)
    elif who_crosses == "bicycle first":
        rider = [y + 15 for y in bike]
    elif who_crosses == "rider only":  # the bicycle is lost before the line, the rider is not
        bike = [y if k < 20 else nan for k, y in enumerate(bike)]
    elif who_crosses == "bicycle first, then its track ends":  # a rider found only after the bicycle counted
        rider = [y + 45 if k >= 41 else nan for k, y in enumerate(bike)]  # crosses 15 frames after it
        bike = [y if k < 48 else nan for k, y in enumerate(bike)]
    counter = LineCounter((LINE,), 4.0, confirm_s=0.2, riders=RiderConfig())
    out: list[Crossing] = []
    for k, tracks in enumerate(rider_and_bicycle(rider, bike)):
        out += counter.update(tracks, k / 20, (4000, 4000))
    out += counter.flush(1e9)
    assert [(c.direction, ROAD_USER_CLASSES[c.class_id]) for c in out] == [("up", "bicycle")]


def test_a_pedestrian_walking_past_a_parked_bicycle_at_the_line_is_a_pedestrian() -> None:
    """The walker's box lies on the parked bicycle's box for the second before it crosses the line: most of its
    frames so far, but a bicycle that does not move is nobody's ride."""
    counter = LineCounter((LINE,), 4.0, confirm_s=0.2, riders=RiderConfig())
    out: list[Crossing] = []
    for k in range(60):
        y = 420 - 6 * k  # 1 box height per second, across the line (y = 300) at k = 20
        boxes = np.array([[480, y - 120, 520, y], [470, 240, 530, 310]], np.float32)
        tracks = Tracks(boxes, np.ones(2, np.float32), np.array([PERSON, BICYCLE]), np.array([1, 2]))
        out += counter.update(tracks, k / 20, (4000, 4000))
    out += counter.flush(1e9)
    assert [(c.tracker_id, ROAD_USER_CLASSES[c.class_id]) for c in out] == [(1, "person")]


def test_rider_state_is_fixed_in_size_and_freed_when_tracks_end() -> None:
    counter = LineCounter((LINE,), 4.0, confirm_s=0.2, riders=RiderConfig())
    classes = counter.classes
    assert classes is not None
    for k in range(2000):  # a long-lived track keeps one record, not a history
        counter.update(person_at(1, 500 + k, 400), k / 20, (4000, 4000))
    assert classes.tracked_count == 1
    record = classes._tracks[1]
    assert all(isinstance(getattr(record, f), (int, float)) for f in record.__slots__)
    counter.update(Tracks.empty(ended_ids=(1,)), 101.0)
    assert classes.tracked_count == 0 and counter.tracked_count == 0


def test_rider_thresholds_must_be_ordered() -> None:
    with pytest.raises(ValidationError, match="bicycle_max_speed_mps must exceed"):
        RiderConfig(pedestrian_max_speed_mps=9.0, bicycle_max_speed_mps=8.0)
    with pytest.raises(ValidationError, match="bicycle_max_heights_per_s must exceed"):
        RiderConfig(pedestrian_max_heights_per_s=7.0)
    assert KinematicsConfig()  # the ground speeds come from the default filter
