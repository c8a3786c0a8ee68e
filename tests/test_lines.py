from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest

from edge.analytics.lines import LineCounter, counting_border
from edge.config import LineConfig, default_direction_names, parse_config
from edge.payloads import WindowMetrics
from edge.pipeline import CameraPipeline
from edge.types import ROAD_USER_CLASSES, Detections, Frame, Tracks

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


# ------------------------------------------------------------------------- image border and re-formed boxes
def box_at(x: float, y: float, w: float = 20, h: float = 20) -> list[float]:
    return [x - w / 2, y - h, x + w / 2, y]


def follow(counter: LineCounter, boxes: Sequence[Sequence[float]], dt: float = 0.05, tid: int = 1,
           size: tuple[int, int] | None = (200, 200)) -> list[tuple[str, float]]:
    """One track through ``boxes`` (xyxy), a frame every ``dt`` s; the (direction, time) of each crossing."""
    out = []
    for i, b in enumerate(boxes):
        tracks = Tracks(np.array([b], np.float32), np.array([0.9], np.float32), np.array([CAR]), np.array([tid]))
        out += [(c.direction, c.t_s) for c in counter.update(tracks, i * dt, size)]
    return out


def test_a_box_cut_by_the_image_border_does_not_flip_sides_until_it_is_clear() -> None:
    """A car seen below the line drives into the right image edge (x = 200) while crossing the line: its cut
    box's bottom-centre zigzags across the line (the box grows and shrinks at the edge). It counts once, up,
    when its box is clear of the edge again. Before: up and down."""
    counter = LineCounter((HORIZONTAL,), hysteresis_px=4)
    cut = [[185, y - 20, 200, y] for y in (108, 92, 110, 90, 111, 88)]  # x2 = 200: on the border
    got = follow(counter, [box_at(150, 120), box_at(170, 112), *cut, box_at(180, 80), box_at(175, 70)])
    assert [d for d, _ in got] == ["up"]
    assert got[0][1] == pytest.approx(8 * 0.05)  # on the first frame clear of the border


def test_left_and_bottom_borders_count_as_cut_and_the_top_does_not() -> None:
    boxes = np.array([[0, 50, 20, 80], [180, 50, 200, 80], [50, 170, 70, 200], [50, 0, 70, 30], [50, 50, 70, 80]],
                     np.float32)
    assert counting_border(boxes, (200, 200)).tolist() == [True, True, True, False, False]
    assert not counting_border(boxes, None).any()


def test_a_box_that_reforms_across_the_line_for_two_frames_counts_nothing() -> None:
    """A truck's box switches to its skip alone for two frames: the bottom-centre jumps 45 px along a sloped
    line and back, flipping sides (OTC Cars-Truck, Sued). With ``confirm_s`` 0.2 it counts nothing; a real
    crossing later counts once, 0.2 s after it, and a real return (stayed on the far side) counts too."""
    sloped = LineConfig(name="S", points_px=((0, 200), (200, 150)))  # y = 200 - x / 4
    counter = LineCounter((sloped,), hysteresis_px=4, confirm_s=0.2)
    whole = [box_at(x, 168, w=170) for x in (160, 163, 166)]  # bottom-centre 8-9 px below the line
    skip = [box_at(x, 165, w=85) for x in (110, 113)]  # the rear part alone: 7 px above it
    again = [box_at(x, 168, w=170) for x in (170, 173, 176, 179)]
    up = [box_at(175, y) for y in (158, 145, 140, 135, 130, 130, 130, 130)]  # really crosses, stays 0.3 s
    back = [box_at(175, y) for y in (150, 170, 175, 175, 175, 175, 175)]  # and really comes back
    got = follow(counter, whole + skip + again + up + back, size=None)
    assert [d for d, _ in got] == ["up", "down"]
    t_up = (len(whole + skip + again) + 1) * 0.05  # the frame at y = 145: beyond the band
    assert got[0][1] == pytest.approx(t_up + 0.2)
    before = LineCounter((sloped,), hysteresis_px=4)  # counting at once: the re-formed box counts twice
    assert [d for d, _ in follow(before, whole + skip + again, size=None)] == ["up", "down"]


def test_a_crossing_pending_when_the_track_or_the_stream_ends_still_counts() -> None:
    counter = LineCounter((HORIZONTAL,), hysteresis_px=4, confirm_s=0.2)
    assert follow(counter, [box_at(50, y) for y in (130, 110, 90)], tid=1) == []  # crossed, not yet confirmed
    (c,) = counter.update(Tracks.empty(ended_ids=(1,)), 0.5)  # the track ended beyond the line
    assert (c.direction, c.tracker_id) == ("up", 1) and counter.tracked_count == 0
    assert follow(counter, [box_at(50, y) for y in (70, 95, 110)], tid=2) == []
    assert [(c.direction, c.tracker_id) for c in counter.flush(9.0)] == [("down", 2)]
    assert counter.flush(9.0) == []  # once


class _OneCar:
    """A detector that sees one car box moving up 10 px per frame, across y = 100 on the third-last frame."""

    input_size_px = (200, 200)

    def __init__(self, frames: int) -> None:
        self.k, self.frames = 0, frames

    def __call__(self, image: npt.NDArray[np.uint8]) -> Detections:
        y = 100 + 10 * (self.frames - 3 - self.k) + 5
        self.k += 1
        return Detections.from_lists([box_at(100, y)], [0.9], [CAR])


def test_a_crossing_in_the_last_frames_of_a_stream_reaches_the_last_window() -> None:
    """The crossing is still awaiting confirmation when the stream ends: ``finish`` counts it into the partial
    window and the run's totals (a guard for ``confirm_s``: nothing may be lost at the end of a replay)."""
    config = parse_config({"device_id": "d", "cameras": [{"name": "c", "lines": [
        {"name": "L", "points_px": [[0, 100], [200, 100]]}]}]})
    pipeline = CameraPipeline(config, config.cameras[0], _OneCar(20))
    for k in range(20):
        frame = Frame(np.zeros((200, 200, 3), np.uint8), k, t_s=k / 20, pts=k)
        assert pipeline.analyse(pipeline.detect(frame)).crossings == []
    _, windows = pipeline.finish()
    (metrics,) = [w for w in windows if isinstance(w, WindowMetrics)]
    assert metrics.counts["L"]["up"]["car"] == 1
    assert pipeline.totals.crossings[("L", "up", "car")] == 1
