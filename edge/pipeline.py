"""One camera's pipeline: detect -> track -> count -> windows. The same object serves replay and live.

Only the source and the clock differ between modes: replay maps media time onto a start instant, live
frames carry their wall-clock capture time.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge.analytics.lines import Crossing, LineCounter
from edge.analytics.windows import WindowAggregator
from edge.clips.recorder import ClipRecorder
from edge.clips.redact import BoxCarrier, plate_regions
from edge.config import CameraConfig, EdgeConfig
from edge.payloads import WindowMetrics
from edge.track import ByteTracker
from edge.types import MOTOR_VEHICLE_CLASSES, ROAD_USER_CLASSES, Detections, Frame, Tracks

_VEHICLE_IDS = np.array([ROAD_USER_CLASSES.index(c) for c in sorted(MOTOR_VEHICLE_CLASSES)])


class ObjectDetector(Protocol):
    """What the pipeline needs from a detector (``edge.detect.Detector`` in production)."""

    def __call__(self, image: npt.NDArray[np.uint8]) -> Detections: ...


@dataclass(frozen=True, slots=True)
class FrameResult:
    index: int
    tracks: Tracks
    crossings: list[Crossing]
    windows: list[WindowMetrics]


@dataclass(slots=True)
class StageTimes:
    """Seconds spent per stage, summed over frames (for benchmarks and health)."""

    detect_s: float = 0.0
    track_s: float = 0.0
    analytics_s: float = 0.0


@dataclass(slots=True)
class Totals:
    """Running totals over the whole run, for the end-of-run summary."""

    frames: int = 0
    crossings: Counter[tuple[str, str, str]] = field(default_factory=Counter)


class CameraPipeline:
    def __init__(self, config: EdgeConfig, camera: CameraConfig, detector: ObjectDetector,
                 start_utc_s: float | None = None, recorder: ClipRecorder | None = None) -> None:
        """``start_utc_s`` maps media time to UTC for file sources; live frames bring their own clock."""
        self.camera = camera
        self.detector = detector
        self.tracker = ByteTracker(config.tracker)
        self.counter = LineCounter(camera.lines, camera.counting.hysteresis_px)
        self.windows = WindowAggregator(
            config.device_id, camera.name, config.windows.window_s, config.windows.origin,
            [(line.name, line.directions) for line in self.counter.lines],
        )
        self.start_utc_s = start_utc_s if start_utc_s is not None else config.windows.origin.timestamp()
        self.times = StageTimes()
        self.totals = Totals()
        self.recorder = recorder
        redaction = config.clips.redaction
        self._carrier = BoxCarrier(redaction.carry_frames) if recorder and redaction and redaction.persons else None
        self._plate_frac = redaction.plate_strip_frac if recorder and redaction and redaction.plates else None

    def utc_s(self, frame: Frame) -> float:
        """UTC seconds of a frame: its capture time live, its media time from the start instant in replay."""
        return frame.wall_time_s if frame.wall_time_s is not None else self.start_utc_s + frame.t_s

    def process(self, frame: Frame, dropped_before: int = 0) -> FrameResult:
        t0 = time.perf_counter()
        detections = self.detector(frame.image)
        t1 = time.perf_counter()
        tracks = self.tracker.update(detections)
        t2 = time.perf_counter()
        crossings = self.counter.update(tracks, frame.t_s)
        windows = self.windows.add_frame(self.utc_s(frame), crossings, dropped_before)
        if self.recorder is not None:
            self.recorder.observe(frame, self._redaction_boxes(tracks, detections))
        t3 = time.perf_counter()
        self.times.detect_s += t1 - t0
        self.times.track_s += t2 - t1
        self.times.analytics_s += t3 - t2
        self.totals.frames += 1
        for c in crossings:
            self.totals.crossings[(c.line, c.direction, ROAD_USER_CLASSES[c.class_id])] += 1
        return FrameResult(frame.index, tracks, crossings, windows)

    def _redaction_boxes(self, tracks: Tracks, detections: Detections) -> npt.NDArray[np.float32]:
        parts = [np.zeros((0, 4), np.float32)]
        if self._carrier is not None:
            parts.append(self._carrier.update(tracks, detections))
        if self._plate_frac is not None:
            parts.append(plate_regions(tracks.xyxy[np.isin(tracks.class_id, _VEHICLE_IDS)], self._plate_frac))
        return np.concatenate(parts)

    def finish(self) -> list[WindowMetrics]:
        """Close the current partial window (end of file, shutdown)."""
        last = self.windows.flush()
        return [last] if last is not None else []
