from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge.analytics.lines import LineCounter
from edge.config import LineConfig, default_direction_names
from edge.types import ROAD_USER_CLASSES, Tracks

CAR = ROAD_USER_CLASSES.index("car")
HORIZONTAL = LineConfig(name="L", points_px=((0, 100), (200, 100)))


def track_at(tid: int, x: float, y: float, cls: int = CAR, ended: tuple[int, ...] = ()) -> Tracks:
    """A 20x20 box whose bottom-centre is (x, y)."""
    return Tracks(np.array([[x - 10, y - 20, x + 10, y]], np.float32), np.array([0.9], np.float32),
                  np.array([cls]), np.array([tid]), ended)


def run_path(counter: LineCounter, ys: Sequence[float], x: float = 50, tid: int = 1) -> list[str]:
    out = []
    for i, y in enumerate(ys):
        out += [c.direction for c in counter.update(track_at(tid, x, y), i / 10)]
    return out


def test_default_names_follow_orientation() -> None:
    assert default_direction_names(((0, 0), (10, 0))) == ("up", "down")
    assert default_direction_names(((10, 0), (0, 0))) == ("down", "up")
    assert default_direction_names(((0, 0), (0, 10))) == ("right", "left")
    assert default_direction_names(((0, 10), (0, 0))) == ("left", "right")


def test_crossing_upwards_and_downwards() -> None:
    counter = LineCounter((HORIZONTAL,), hysteresis_px=4)
    assert run_path(counter, [130, 120, 110, 90, 80], tid=1) == ["up"]
    assert run_path(counter, [70, 95, 105, 130], tid=2) == ["down"]


def test_jitter_on_the_line_counts_once() -> None:
    counter = LineCounter((HORIZONTAL,), hysteresis_px=4)
    ys = [120, 110, 102, 98, 101, 99, 103, 97, 101, 90, 80]
    assert run_path(counter, ys) == ["up"]


def test_jitter_inside_the_band_never_counts() -> None:
    counter = LineCounter((HORIZONTAL,), hysteresis_px=4)
    assert run_path(counter, [120, 103, 97, 103, 97, 103, 120]) == []


def test_stop_and_go_across_the_line_counts_each_direction_at_most_once() -> None:
    counter = LineCounter((HORIZONTAL,), hysteresis_px=2)
    # crosses up, rolls back down past the band, crosses up again: one up, one down, never a second up
    assert run_path(counter, [110, 90, 110, 90, 110, 90]) == ["up", "down"]


def test_passing_beside_the_line_end_does_not_count() -> None:
    counter = LineCounter((HORIZONTAL,), hysteresis_px=4)
    assert run_path(counter, [130, 110, 90, 70], x=260) == []


def test_polyline_segments_count() -> None:
    bent = LineConfig(name="B", points_px=((0, 100), (100, 100), (200, 150)), directions=("in", "out"))
    counter = LineCounter((bent,), hysteresis_px=2)
    # cross the second, sloped segment going up-right: towards its left side
    xs_ys = [(150, 150), (150, 135), (150, 110), (150, 100)]
    got = []
    for i, (x, y) in enumerate(xs_ys):
        got += [c.direction for c in counter.update(track_at(1, x, y), i)]
    assert got == ["in"]


def test_crossing_carries_the_track_class() -> None:
    counter = LineCounter((HORIZONTAL,), hysteresis_px=0)
    bus = ROAD_USER_CLASSES.index("bus")
    counter.update(track_at(7, 50, 120, cls=bus), 0)
    (c,) = counter.update(track_at(7, 50, 80, cls=bus), 1)
    assert (c.line, c.direction, c.class_id, c.tracker_id) == ("L", "up", bus, 7)


def test_state_is_freed_when_tracks_end() -> None:
    counter = LineCounter((HORIZONTAL,), hysteresis_px=4)
    for tid in range(1, 101):
        counter.update(track_at(tid, 50, 120), 0)
    assert counter.tracked_count == 100
    counter.update(Tracks.empty(ended_ids=tuple(range(1, 101))), 1)
    assert counter.tracked_count == 0


def test_a_track_confirmed_past_the_line_counts_from_where_it_was_first_seen() -> None:
    counter = LineCounter((HORIZONTAL,), hysteresis_px=4)
    first_seen = np.array([[40, 110, 60, 130]], np.float32)  # bottom-centre (50, 130): below the line
    tracks = Tracks(np.array([[40, 60, 60, 80]], np.float32), np.array([0.9], np.float32), np.array([CAR]),
                    np.array([3]), (), first_seen)  # first reported at (50, 80): above it
    (c,) = counter.update(tracks, 0.0)
    assert (c.line, c.direction) == ("L", "up")


def test_a_new_track_follows_its_path_through_the_previous_detection() -> None:
    # First seen at (20, 130) below the line, then (30, 90) above it, left of the line's end (x = 40): it
    # passed beside the line. Reported only now at (100, 60): the straight chord from where it was first
    # seen would cut across the line; the path through the previous detection does not.
    line = LineConfig(name="L", points_px=((40, 100), (200, 100)))
    counter = LineCounter((line,), hysteresis_px=4)
    first, previous = np.array([[10, 110, 30, 130]], np.float32), np.array([[20, 70, 40, 90]], np.float32)
    tracks = Tracks(np.array([[90, 40, 110, 60]], np.float32), np.array([0.9], np.float32), np.array([CAR]),
                    np.array([3]), (), first, previous)
    assert counter.update(tracks, 0.0) == []
    without_path = LineCounter((line,), hysteresis_px=4)
    chord = Tracks(tracks.xyxy, tracks.confidence, tracks.class_id, tracks.tracker_id, (), first)
    assert len(without_path.update(chord, 0.0)) == 1  # what the chord alone would have counted
