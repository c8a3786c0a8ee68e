"""The detection schedule of ``CameraPipeline.detect``: stride or interval, counted on processed frames."""

from __future__ import annotations

import random

import numpy as np
import numpy.typing as npt
import pytest

from edge.config import EdgeConfig, parse_config
from edge.errors import ConfigError
from edge.pipeline import CameraPipeline
from edge.types import Detections, Frame

FPS = 25.0


class CountingDetector:
    """Finds nothing and counts its calls: what the schedule is judged by."""

    input_size_px = (64, 48)

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: npt.NDArray[np.uint8]) -> Detections:
        self.calls += 1
        return Detections.empty()


def _config(**detector: object) -> EdgeConfig:
    return parse_config({"device_id": "cam-1", "cameras": [{"name": "north"}], "detector": detector})


def _frame(index: int) -> Frame:
    """A live-like frame: ``index`` numbers the frames the camera captured, ``t_s`` their capture time."""
    return Frame(np.zeros((48, 64, 3), np.uint8), index, t_s=index / FPS, pts=index * 3600)


def _run(config: EdgeConfig, indices: list[int]) -> tuple[CountingDetector, list[bool]]:
    detector = CountingDetector()
    pipeline = CameraPipeline(config, config.cameras[0], detector)
    ran = [pipeline.detect(_frame(i)).ran for i in indices]
    return detector, ran


@pytest.mark.parametrize("first", [0, 1])
def test_stride_counts_processed_frames_when_the_source_drops_every_other_one(first: int) -> None:
    # A live source that keeps only the newest frame hands over every other capture (indices skip by 2).
    # Counted on frame indices, stride 2 detected on all of them (first=0) or on none (first=1).
    detector, ran = _run(_config(stride_frames=2), [first + 2 * k for k in range(100)])
    assert detector.calls == 50
    assert ran == [k % 2 == 0 for k in range(100)]


def test_stride_on_a_gapless_replay_still_detects_on_frame_indices_divisible_by_it() -> None:
    # what keeps a replay byte-identical: with no frame dropped, processed count == frame index
    _, ran = _run(_config(stride_frames=3), list(range(30)))
    assert ran == [i % 3 == 0 for i in range(30)]


def test_detect_interval_follows_media_time_not_frames() -> None:
    # 0.08 s at 25 fps: every other frame, though 2/25 s is not exact in floating point
    detector, ran = _run(_config(detect_interval_s=0.08), list(range(100)))
    assert detector.calls == 50
    assert ran == [i % 2 == 0 for i in range(100)]
    # 0.2 s: 5 a second, whatever the frame rate
    detector, _ = _run(_config(detect_interval_s=0.2), list(range(100)))
    assert detector.calls == 20


def test_detect_interval_holds_when_a_live_source_drops_frames() -> None:
    rng = random.Random(12)
    indices = sorted(rng.sample(range(1000), 400))  # 60 % of the captures dropped, irregularly
    interval_s = 0.2
    _, ran = _run(_config(detect_interval_s=interval_s), indices)
    picked = [i / FPS for i, r in zip(indices, ran, strict=True) if r]
    gaps = np.diff(picked)
    assert (gaps >= interval_s - 1e-6).all()  # never more often than asked
    longest_drop_s = float(np.diff(np.array(indices) / FPS).max())
    assert (gaps <= interval_s + longest_drop_s + 1e-6).all()  # and never late by more than the source's gap
    assert len(picked) >= (indices[-1] - indices[0]) / FPS / (interval_s + longest_drop_s)


def test_detect_interval_and_a_stride_are_refused_together() -> None:
    with pytest.raises(ConfigError) as exc:
        _config(stride_frames=2, detect_interval_s=0.2)
    message = str(exc.value)
    assert "detect_interval_s" in message and "stride_frames" in message and "keep one" in message
    assert _config(stride_frames=1, detect_interval_s=0.2).detector.detect_interval_s == 0.2
    with pytest.raises(ConfigError):
        _config(detect_interval_s=0)
