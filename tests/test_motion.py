from __future__ import annotations

import numpy as np

from edge.config import MotionGatingConfig, TrackerConfig
from edge.motion import MotionGate
from edge.track import ByteTracker
from edge.types import Detections


def test_gate_skips_still_frames_and_detects_motion() -> None:
    gate = MotionGate(MotionGatingConfig(max_skipped_frames=5))
    rng = np.random.default_rng(1)
    still = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    assert gate.needs_detection(still)  # the first frame always goes through
    assert [gate.needs_detection(still) for _ in range(5)] == [False] * 5
    assert gate.needs_detection(still)  # forced after max_skipped_frames
    moved = still.copy()
    moved[100:160, 100:200] = 255 - moved[100:160, 100:200]  # a car-sized change
    assert gate.needs_detection(moved)
    assert gate.skipped_total == 5


def test_coasting_frames_do_not_count_as_misses() -> None:
    tracker = ByteTracker(TrackerConfig(minimum_consecutive_frames=3, lost_track_buffer_frames=1))
    reported = []
    for f in range(12):
        if f % 3 == 0:  # detect every third frame, coast in between
            box = [[100.0 + 2 * f, 100.0, 140.0 + 2 * f, 130.0]]
            out = tracker.update(Detections.from_lists(box, [0.9], [0]))
            reported.append(out.tracker_id.tolist())
            assert out.origin_xyxy is not None or len(out) == 0
        else:
            assert len(tracker.coast()) == 0
    # tentative for two detections, confirmed on the third, kept although 2 of every 3 frames had no detection
    assert reported == [[], [], [1], [1]]
