from __future__ import annotations

from datetime import UTC, datetime

from edge.analytics.lines import Crossing
from edge.analytics.plugins import LineCounts
from edge.analytics.windows import WindowAggregator, WindowRecord
from edge.payloads import WindowMetrics

ORIGIN = datetime(2024, 5, 1, 7, 0, tzinfo=UTC)
T0 = ORIGIN.timestamp()


class Counted:
    """A window aggregator with the line counts analytic, fed frame by frame as the pipeline does."""

    def __init__(self) -> None:
        self.counts = LineCounts([("L", ("up", "down"))])
        self.windows = WindowAggregator("dev", "cam", 60, ORIGIN, [self.counts])

    def add_frame(self, t_utc_s: float, crossings: list[Crossing]) -> list[WindowRecord]:
        closed = self.windows.advance(t_utc_s)  # first, so the crossings land in the frame's own window
        self.counts.add(crossings)
        return closed

    def flush(self) -> list[WindowRecord]:
        return self.windows.flush()


def make() -> Counted:
    return Counted()


def test_windows_close_on_the_first_frame_of_the_next_window() -> None:
    agg = make()
    closed: list[WindowRecord] = []
    for i in range(0, 150 * 10):  # 150 s at 10 fps
        t = T0 + i / 10
        crossings = [Crossing("L", "up", 0, 1, t)] if i % 100 == 0 else []
        closed += agg.add_frame(t, crossings)
    closed_metrics = [w for w in closed if isinstance(w, WindowMetrics)]
    assert closed_metrics == closed  # no speeds record without a calibration
    assert [w.window_start for w in closed] == ["2024-05-01T07:00:00Z", "2024-05-01T07:01:00Z"]
    assert [w.counts["L"]["up"]["car"] for w in closed_metrics] == [6, 6]
    assert all(not w.partial for w in closed)
    assert closed_metrics[0].health.frames == 600
    assert abs(closed_metrics[0].health.fps - 10.0) < 1e-6
    (last,) = agg.flush()
    assert isinstance(last, WindowMetrics)
    assert last.partial
    assert last.window_start == "2024-05-01T07:02:00Z"
    assert last.health.frames == 300
    assert last.counts["L"]["up"]["car"] == 3
    assert agg.flush() == []


def test_windows_align_to_the_origin_not_the_first_frame() -> None:
    agg = make()
    agg.add_frame(T0 + 30.5, [])
    (w,) = agg.add_frame(T0 + 61, [])
    assert w.window_start == "2024-05-01T07:00:00Z"


def test_records_carry_every_class_and_direction_and_no_per_object_data() -> None:
    agg = make()
    agg.add_frame(T0, [Crossing("L", "down", 5, 42, T0)])
    (rec,) = agg.flush()
    assert isinstance(rec, WindowMetrics)
    assert set(rec.counts["L"]) == {"up", "down"}
    assert set(rec.counts["L"]["down"]) == {"car", "bus", "truck", "motorcycle", "bicycle", "person"}
    assert rec.counts["L"]["down"]["person"] == 1
    text = rec.to_json()
    assert "42" not in text  # the tracker id never leaves
    assert len(text.encode()) < 4096


def test_msg_id_is_deterministic_and_unique_per_window() -> None:
    a, b = make(), make()
    ra = a.add_frame(T0, []) + a.add_frame(T0 + 60, []) + a.flush()
    rb = b.add_frame(T0, []) + b.add_frame(T0 + 60, []) + b.flush()
    ids_a = [r.msg_id for r in ra]
    assert ids_a == [r.msg_id for r in rb]
    assert len(set(ids_a)) == len(ids_a) == 2
