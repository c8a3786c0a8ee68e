"""Tests for the ByteTrack-style tracker: ids, confirmation, gaps, two-stage association, classes, memory."""

from __future__ import annotations

import copy
import gc
import time
import tracemalloc
from typing import Any

import numpy as np
import pytest

from edge.config import TrackerConfig
from edge.track import (
    ByteTracker,
    box_iou,
    kalman_initiate,
    kalman_predict,
    kalman_update,
    match_iou,
    xyxy_to_cxcyah,
)
from edge.types import ROAD_USER_CLASSES, Detections, Tracks

CAR = ROAD_USER_CLASSES.index("car")
TRUCK = ROAD_USER_CLASSES.index("truck")
BUS = ROAD_USER_CLASSES.index("bus")


def config(**overrides: Any) -> TrackerConfig:
    return TrackerConfig(**overrides)


def box(x: float, y: float, w: float = 40.0, h: float = 80.0) -> list[float]:
    return [x, y, x + w, y + h]


def dets(boxes: list[list[float]], scores: list[float] | None = None, classes: list[int] | None = None) -> Detections:
    n = len(boxes)
    return Detections.from_lists(boxes, scores if scores is not None else [0.9] * n, classes or [CAR] * n)


def ids(tracks: Tracks) -> list[int]:
    return [int(i) for i in tracks.tracker_id]


# ------------------------------------------------------------------------------------------ single track
@pytest.mark.parametrize("min_frames", [1, 3, 5])
def test_constant_velocity_box_keeps_one_id_and_is_reported_after_confirmation(min_frames: int) -> None:
    tracker = ByteTracker(config(minimum_consecutive_frames=min_frames))
    for f in range(50):
        b = box(100 + 6 * f, 200 + 2 * f)
        out = tracker.update(dets([b]))
        assert out.ended_ids == ()
        if f < min_frames - 1:
            assert len(out) == 0, f"reported on frame {f} before {min_frames} matches"
        else:
            assert ids(out) == [1], f"frame {f}"
            np.testing.assert_allclose(out.xyxy[0], b)  # the matched detection box, not the prediction
            assert out.confidence[0] == pytest.approx(0.9)
            assert out.class_id.tolist() == [CAR]
        assert tracker.active_track_count == 1


def test_kalman_filter_learns_constant_velocity() -> None:
    mean, cov = kalman_initiate(xyxy_to_cxcyah(np.array([box(0, 0)], np.float64)))
    for f in range(1, 30):
        kalman_predict(mean, cov)
        mean, cov = kalman_update(mean, cov, xyxy_to_cxcyah(np.array([box(5.0 * f, -2.0 * f)], np.float64)))
    np.testing.assert_allclose(mean[0, 4:], [5.0, -2.0, 0.0, 0.0], atol=0.05)
    np.testing.assert_allclose(cov[0], cov[0].T, atol=1e-9)
    kalman_predict(mean, cov)
    np.testing.assert_allclose(mean[0, :4], xyxy_to_cxcyah(np.array([box(150.0, -60.0)]))[0], atol=0.5)


def test_match_iou_is_optimal_and_gated() -> None:
    iou = np.array([[0.9, 0.8], [0.85, 0.1]])
    rows, cols = match_iou(iou, 0.2)
    # Greedy would take (0,0) and leave row 1 unmatched (0.1 < gate); the optimum pairs both.
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 1), (1, 0)]
    rows, cols = match_iou(np.array([[0.19, 0.0]]), 0.2)
    assert len(rows) == len(cols) == 0


def test_box_iou_values() -> None:
    a = np.array([box(0, 0, 10, 10)], np.float64)
    b = np.array([box(0, 0, 10, 10), box(5, 0, 10, 10), box(20, 20, 10, 10), [3.0, 3.0, 3.0, 3.0]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0, 0.0]])


# ------------------------------------------------------------------------------------------ two tracks
def test_crossing_boxes_keep_distinct_ids() -> None:
    tracker = ByteTracker(config())
    seen: dict[int, list[float]] = {}
    for f in range(60):
        a = box(100 + 8 * f, 300)  # moving right
        b = box(580 - 8 * f, 330)  # moving left, overlapping A's lower part while they cross
        out = tracker.update(dets([a, b] if f % 2 else [b, a]))  # detection order must not matter
        for tid, xyxy in zip(ids(out), out.xyxy, strict=True):
            seen.setdefault(tid, []).append(float(xyxy[0]))
    assert sorted(seen) == [1, 2]
    directions = sorted(float(np.sign(np.diff(xs)).mean()) for xs in seen.values())
    # Each id follows one box the whole way: its x only ever increases, or only ever decreases.
    assert directions == [-1.0, 1.0]
    assert all(len(xs) == 58 for xs in seen.values())


def test_parallel_boxes_keep_distinct_ids() -> None:
    tracker = ByteTracker(config())
    for f in range(50):
        left, right = box(100 + 5 * f, 100 + 3 * f), box(150 + 5 * f, 100 + 3 * f)
        out = tracker.update(dets([right, left]))
        if f >= 2:
            assert ids(out) == [1, 2]
            # Id 1 went to the first detection (right) when both started; it must stay on it.
            np.testing.assert_allclose(out.xyxy, [right, left])


# ------------------------------------------------------------------------------------------ gaps
@pytest.mark.parametrize(("gap", "survives"), [(3, True), (10, True), (11, False), (25, False)])
def test_track_survives_short_gap_and_ends_after_long_gap(gap: int, survives: bool) -> None:
    buffer = 10
    tracker = ByteTracker(config(lost_track_buffer_frames=buffer, minimum_consecutive_frames=3))
    ended: list[tuple[int, int]] = []
    after_gap: list[list[int]] = []
    first_miss, visible_again = 20, 20 + gap  # frames first_miss .. visible_again - 1 have no detection
    for f in range(visible_again + 10):
        visible = f < first_miss or f >= visible_again
        out = tracker.update(dets([box(50 + 3 * f, 100)]) if visible else Detections.empty())
        ended.extend((f, tid) for tid in out.ended_ids)
        if f >= visible_again:
            after_gap.append(ids(out))
        if not visible:
            assert len(out) == 0, "a lost track is not reported"
            # Missed `buffer` frames in a row: still alive. One more: ended.
            alive = f - first_miss + 1 <= buffer
            assert tracker.active_track_count == int(alive), f"frame {f}"
    if survives:
        assert ended == []
        assert after_gap == [[1]] * 10, "the track resumes with its id on the first frame back"
    else:
        assert ended == [(first_miss + buffer, 1)], "ended exactly once, on its (buffer + 1)-th miss"
        assert after_gap == [[], [], *[[2]] * 8], "a new track must be confirmed again, with a new id"


def test_ended_ids_reported_once_on_the_right_frame() -> None:
    tracker = ByteTracker(config(lost_track_buffer_frames=5, minimum_consecutive_frames=1))
    tracker.update(dets([box(0, 0), box(300, 0)]))
    ended_at: dict[int, int] = {}
    for f in range(1, 20):
        out = tracker.update(dets([box(0, 0)]) if f < 3 else Detections.empty())
        for tid in out.ended_ids:
            assert tid not in ended_at
            ended_at[tid] = f
    # Track 2 missed frames 1..6 and ends on its 6th miss; track 1 last matched on frame 2.
    assert ended_at == {2: 6, 1: 8}
    assert tracker.active_track_count == 0


def test_unconfirmed_track_that_misses_a_frame_is_deleted_without_an_id() -> None:
    tracker = ByteTracker(config(minimum_consecutive_frames=3))
    tracker.update(dets([box(0, 0)]))
    tracker.update(dets([box(2, 0)]))
    assert tracker.active_track_count == 1
    out = tracker.update(Detections.empty())
    assert out.ended_ids == () and tracker.active_track_count == 0
    for _ in range(3):
        out = tracker.update(dets([box(500, 0)]))
    assert ids(out) == [1], "ids are given on confirmation, so a deleted tentative track used none"


# ------------------------------------------------------------------------------------------ scores
def test_low_score_detection_extends_a_track_but_never_starts_one() -> None:
    cfg = config(track_activation_threshold=0.5, low_score_threshold=0.1, minimum_consecutive_frames=1)
    lone = ByteTracker(cfg)
    for f in range(10):
        assert len(lone.update(dets([box(10 + f, 10)], [0.3]))) == 0
    assert lone.active_track_count == 0

    tracker = ByteTracker(cfg)
    for f in range(5):
        assert ids(tracker.update(dets([box(10 + 4 * f, 10)], [0.9]))) == [1]
    for f in range(5, 15):
        out = tracker.update(dets([box(10 + 4 * f, 10)], [0.3]))
        assert ids(out) == [1], f"frame {f}: the low-score box must keep the track"
        assert out.confidence[0] == pytest.approx(0.3)
    # Below low_score_threshold the box is ignored: the track goes lost.
    assert len(tracker.update(dets([box(70, 10)], [0.05]))) == 0


def test_low_score_detection_does_not_rescue_a_lost_track() -> None:
    cfg = config(track_activation_threshold=0.5, low_score_threshold=0.1, minimum_consecutive_frames=1)
    tracker = ByteTracker(cfg)
    for f in range(5):
        tracker.update(dets([box(10 + 4 * f, 10)]))
    tracker.update(Detections.empty())  # now lost
    assert len(tracker.update(dets([box(34, 10)], [0.3]))) == 0, "stage 2 only serves tracked tracks"
    assert ids(tracker.update(dets([box(38, 10)], [0.8]))) == [1], "a high-score box rescues it"


def test_score_equal_to_a_threshold_counts_as_reaching_it() -> None:
    # 0.7 is 0.699999988 in float32: compared against the float64 threshold it would fall below it.
    cfg = config(track_activation_threshold=0.7, low_score_threshold=0.3, minimum_consecutive_frames=1)
    tracker = ByteTracker(cfg)
    assert ids(tracker.update(dets([box(0, 0)], [0.7]))) == [1]
    assert ids(tracker.update(dets([box(0, 0)], [0.3]))) == [1]


# ------------------------------------------------------------------------------------------ ids, state
def test_two_trackers_have_independent_id_sequences() -> None:
    a, b = ByteTracker(config(minimum_consecutive_frames=1)), ByteTracker(config(minimum_consecutive_frames=1))
    assert ids(a.update(dets([box(0, 0), box(100, 0), box(200, 0)]))) == [1, 2, 3]
    assert ids(b.update(dets([box(0, 500)]))) == [1]
    assert ids(a.update(dets([box(0, 0), box(100, 0), box(200, 0), box(300, 0)]))) == [1, 2, 3, 4]
    assert ids(b.update(dets([box(0, 500), box(400, 500)]))) == [1, 2]


def test_reset_drops_tracks_returns_their_ids_and_restarts_ids() -> None:
    tracker = ByteTracker(config(minimum_consecutive_frames=2))
    tracker.update(dets([box(0, 0), box(100, 0)]))
    tracker.update(dets([box(0, 0), box(100, 0), box(300, 0)]))  # third one still tentative
    assert tracker.active_track_count == 3
    assert tracker.reset() == (1, 2)
    assert tracker.active_track_count == 0
    tracker.update(dets([box(500, 0)]))
    assert ids(tracker.update(dets([box(500, 0)]))) == [1]


def test_output_is_deterministic_and_sorted_by_id() -> None:
    rng = np.random.default_rng(7)
    frames = []
    for f in range(200):
        n = int(rng.integers(0, 12))
        xy = rng.uniform(0, 600, (n, 2)) + f
        frames.append(
            Detections(
                np.concatenate([xy, xy + 50], axis=1).astype(np.float32),
                rng.uniform(0.0, 1.0, n).astype(np.float32),
                rng.integers(0, len(ROAD_USER_CLASSES), n),
            )
        )

    def run(tracker: ByteTracker) -> list[tuple[list[int], list[int], tuple[int, ...]]]:
        result = []
        for d in frames:
            out = tracker.update(d)
            assert ids(out) == sorted(ids(out))
            result.append((ids(out), out.class_id.tolist(), out.ended_ids))
        return result

    first = run(ByteTracker(config(minimum_consecutive_frames=1)))
    assert any(r[0] for r in first) and any(r[2] for r in first)
    reused = ByteTracker(config(minimum_consecutive_frames=1))
    reused.update(frames[5])
    reused.reset()
    assert run(ByteTracker(config(minimum_consecutive_frames=1))) == first
    assert run(reused) == first


# ------------------------------------------------------------------------------------------ classes
def test_class_is_confidence_weighted_majority_vote() -> None:
    tracker = ByteTracker(config(minimum_consecutive_frames=1))
    frames = [(CAR, 0.6), (CAR, 0.6), (CAR, 0.6), (TRUCK, 0.9)]
    got = [tracker.update(dets([box(0, 0)], [s], [c])).class_id.tolist() for c, s in frames]
    assert got == [[CAR]] * 4  # car 1.8 against truck 0.9

    weighted = ByteTracker(config(minimum_consecutive_frames=1))
    frames = [(CAR, 0.55), (BUS, 0.95), (CAR, 0.3)]  # car 0.85 < bus 0.95 although car has more frames
    got = [weighted.update(dets([box(0, 0)], [s], [c])).class_id.tolist() for c, s in frames]
    assert got == [[CAR], [BUS], [BUS]]


def test_class_id_outside_road_user_classes_is_refused() -> None:
    tracker = ByteTracker(config())
    with pytest.raises(ValueError, match=r"class_id must be in \[0, 6\).*got 6"):
        tracker.update(dets([box(0, 0)], [0.9], [len(ROAD_USER_CLASSES)]))


# ------------------------------------------------------------------------------------------ edge cases
def test_empty_detections_and_empty_tracker() -> None:
    tracker = ByteTracker(config(minimum_consecutive_frames=1))
    out = tracker.update(Detections.empty())
    assert len(out) == 0 and out.ended_ids == () and tracker.active_track_count == 0
    assert ids(tracker.update(dets([box(0, 0)]))) == [1]
    out = tracker.update(Detections.empty())
    assert len(out) == 0 and tracker.active_track_count == 1
    assert out.xyxy.shape == (0, 4) and out.tracker_id.dtype == np.int64


def test_degenerate_and_non_finite_boxes_are_ignored() -> None:
    tracker = ByteTracker(config(minimum_consecutive_frames=1))
    bad = [[10.0, 10.0, 10.0, 50.0], [10.0, 10.0, 50.0, 5.0], [float("nan"), 0.0, 10.0, 10.0]]
    out = tracker.update(dets([*bad, box(100, 100)]))
    assert ids(out) == [1] and tracker.active_track_count == 1
    np.testing.assert_allclose(out.xyxy, [box(100, 100)])


def test_thirty_tracks_update_fast() -> None:
    rng = np.random.default_rng(3)
    n = 30
    xy = np.stack([np.arange(n) * 60.0, rng.uniform(0, 900, n)], axis=1)
    velocity = rng.normal(0, 2, (n, 2))
    tracker = ByteTracker(config())
    elapsed = []
    for f in range(300):
        p = xy + velocity * f + rng.normal(0, 1.0, (n, 2))
        d = Detections(
            np.concatenate([p, p + np.array([50.0, 100.0])], axis=1).astype(np.float32),
            rng.uniform(0.3, 1.0, n).astype(np.float32),
            rng.integers(0, 6, n),
        )
        t0 = time.perf_counter()
        out = tracker.update(d)
        elapsed.append(time.perf_counter() - t0)
    assert len(out) == n
    assert np.median(elapsed) < 2e-3, f"median update {np.median(elapsed) * 1e3:.2f} ms for {n} tracks"


# ------------------------------------------------------------------------------------------ long run
class _Churn:
    """Synthetic road users that appear, move and vanish; detections for frame ``f`` in O(live objects)."""

    LIFETIME_FRAMES = (20, 180)

    def __init__(self, n_frames: int, arrivals_per_frame: float, seed: int) -> None:
        rng = np.random.default_rng(seed)
        n = int(rng.poisson(arrivals_per_frame * n_frames))
        self.rng = rng
        self.start = np.sort(rng.integers(0, n_frames, n))
        self.end = self.start + rng.integers(*self.LIFETIME_FRAMES, n)
        self.xy = rng.uniform([0, 0], [1800, 1000], (n, 2))
        self.wh = rng.uniform([20, 30], [160, 160], (n, 2))
        self.velocity = rng.normal(0, 3, (n, 2))
        self.score = rng.uniform(0.05, 1.0, n)  # some objects are faint (low-score) throughout
        self.class_id = rng.integers(0, len(ROAD_USER_CLASSES), n)
        change = np.zeros(n_frames + self.LIFETIME_FRAMES[1] + 1, np.int64)
        np.add.at(change, self.start, 1)
        np.add.at(change, self.end, -1)
        self.max_simultaneous = int(np.cumsum(change).max())

    def frame(self, f: int) -> Detections:
        lo = int(np.searchsorted(self.start, f - self.LIFETIME_FRAMES[1], "right"))
        hi = int(np.searchsorted(self.start, f, "right"))
        live = np.arange(lo, hi)[self.end[lo:hi] > f]
        live = live[self.rng.random(len(live)) > 0.05]  # missed detections
        age = (f - self.start[live])[:, None]
        n = len(live)
        p = self.xy[live] + self.velocity[live] * age + self.rng.normal(0, 1.5, (n, 2))
        score = np.clip(self.score[live] + self.rng.normal(0, 0.1, n), 0.01, 1.0)
        return Detections(
            np.concatenate([p, p + self.wh[live]], axis=1).astype(np.float32),
            score.astype(np.float32),
            self.class_id[live],
        )


def traced_size(obj: object) -> int:
    """Bytes that a deep copy of ``obj`` takes, numpy buffers included: all the state ``obj`` holds."""
    gc.collect()
    tracemalloc.start()
    try:
        clone = copy.deepcopy(obj)
        size = tracemalloc.get_traced_memory()[0]
        del clone
    finally:
        tracemalloc.stop()
    return size


@pytest.mark.slow
def test_long_run_keeps_track_count_and_memory_bounded() -> None:
    # Tracing every allocation makes the tracker about 5x slower, so allocations are traced for the last
    # `window` frames only; the tracker's whole state is measured after `warmup` and after all frames.
    n_frames, warmup, window = 100_000, 10_000, 10_000
    churn = _Churn(n_frames, arrivals_per_frame=0.3, seed=2024)
    assert 20 <= churn.max_simultaneous <= 60  # "a few dozen at a time"
    bound = 2 * churn.max_simultaneous
    tracker = ByteTracker(config(lost_track_buffer_frames=30))
    ended_total = max_id = 0
    state_after_warmup = 0

    try:
        for f in range(n_frames):
            if f == n_frames - window:
                gc.collect()
                tracemalloc.start()
            out = tracker.update(churn.frame(f))
            active = tracker.active_track_count
            assert active <= bound, f"frame {f}: {active} live tracks, {churn.max_simultaneous} objects at most"
            ended_total += len(out.ended_ids)
            if len(out):
                max_id = max(max_id, int(out.tracker_id[-1]))
            if f % 1000 == 0:
                lengths = tracker.container_lengths()
                assert set(lengths.values()) == {tracker.active_track_count}, lengths
            if f == warmup - 1:
                state_after_warmup = traced_size(tracker)
        del out
        gc.collect()
        retained_in_window = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()  # also when an assertion fails mid-run: tracing slows every later test
    state_at_end = traced_size(tracker)

    # Thousands of tracks started and ended, so the bounds are not met by tracking nothing.
    assert max_id > 10_000 and ended_total > 10_000
    assert 0 <= max_id - ended_total <= tracker.active_track_count
    # Everything allocated in the last frames and still held is the live state of a few dozen tracks.
    assert retained_in_window < 128_000, f"{retained_in_window} B allocated in the last {window} frames are held"
    growth = state_at_end - state_after_warmup
    assert growth < 100_000, f"tracker state grew by {growth} B from frame {warmup} to {n_frames}"


# ------------------------------------------------------------------------------------- detection stride
@pytest.mark.parametrize("stride", [3, 4])
def test_fast_road_user_detected_every_kth_frame_keeps_one_track(stride: int) -> None:
    # 12 px per frame, box 40 px wide: after 3 or more frames a new (velocity-less) track's box overlaps
    # the next detection by IoU 0.05 or less; the buffered IoU of tentative tracks must still pair them.
    tracker = ByteTracker(config(minimum_consecutive_frames=3))
    seen: set[int] = set()
    for frame in range(60):
        if frame % stride:
            tracker.coast()
            continue
        seen.update(ids(tracker.update(dets([box(12.0 * frame, 100)]))))
    assert seen == {1}


def test_a_missed_detection_under_stride_counts_all_the_frames_it_spans() -> None:
    # lost_track_buffer_frames is in frames: with detection every 5th frame, a track unmatched on three
    # detection frames has been gone for 15 frames and ends past a 10-frame buffer.
    tracker = ByteTracker(config(minimum_consecutive_frames=1, lost_track_buffer_frames=10))
    tracker.update(dets([box(0, 0)]))
    ended: list[int] = []
    for frame in range(1, 16):
        out = tracker.coast() if frame % 5 else tracker.update(Detections.empty())
        ended += out.ended_ids
    assert ended == [1]


def test_tracks_report_the_previous_detection_box() -> None:
    tracker = ByteTracker(config(minimum_consecutive_frames=2))
    tracker.update(dets([box(0, 0)]))
    out = tracker.update(dets([box(5, 0)]))
    assert out.previous_xyxy is not None and out.origin_xyxy is not None
    assert out.previous_xyxy.tolist() == [box(0, 0)] == out.origin_xyxy.tolist()
    out = tracker.update(dets([box(10, 0)]))
    assert out.previous_xyxy is not None and out.previous_xyxy.tolist() == [box(5, 0)]
