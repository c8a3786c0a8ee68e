"""One camera's pipeline: detect -> track -> count -> windows. The same object serves replay and live.

Only the source and the clock differ between modes: replay maps media time onto a start instant, live
frames carry their wall-clock capture time.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge.analytics.base import AnalyticsFrame, flush_all, update_all
from edge.analytics.conflicts import NearMiss
from edge.analytics.kinematics import GroundKinematics, GroundTracks
from edge.analytics.lines import Crossing, LineCounter
from edge.analytics.plugins import LineCounts, Speeds
from edge.analytics.registry import ANALYTICS, AnalyticFactory, AnalyticsSetup, build_analytics
from edge.analytics.speeds import MPS_TO_KMH
from edge.analytics.windows import WindowAggregator, WindowRecord
from edge.clips.recorder import ClipRecorder
from edge.clips.redact import BoxCarrier, plate_regions
from edge.config import CameraConfig, EdgeConfig
from edge.geometry import Calibration
from edge.motion import MotionGate
from edge.payloads import NearMissEvent, iso_utc
from edge.prepare import lines_in_pixels
from edge.track import ByteTracker
from edge.types import MOTOR_VEHICLE_CLASSES, ROAD_USER_CLASSES, Detections, Frame, Tracks

_VEHICLE_IDS = np.array([ROAD_USER_CLASSES.index(c) for c in sorted(MOTOR_VEHICLE_CLASSES)])


class ObjectDetector(Protocol):
    """What the pipeline needs from a detector (``edge.detect.Detector`` in production)."""

    @property
    def input_size_px(self) -> tuple[int, int]:
        """Model input ``(width, height)``: sources deliver analysis copies that fit inside it."""
        ...

    def __call__(self, image: npt.NDArray[np.uint8]) -> Detections: ...


@dataclass(frozen=True, slots=True)
class FrameResult:
    index: int
    tracks: Tracks
    crossings: list[Crossing]
    windows: list[WindowRecord]
    events: list[NearMissEvent] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Detected:
    """A frame after the detect half of the pipeline: what the detector found, if it ran."""

    frame: Frame
    detections: Detections  # in source pixels; empty when the detector did not run
    ran: bool  # the detector ran on this frame (not skipped by stride or motion gating)
    still: bool  # motion gating found nothing moving: the previous frame's boxes still hold


@dataclass(slots=True)
class StageTimes:
    """Seconds spent per stage, summed over frames (for benchmarks and health)."""

    gate_s: float = 0.0  # motion gating
    detect_s: float = 0.0  # the detector call: preprocess, inference, postprocess
    track_s: float = 0.0
    analytics_s: float = 0.0
    conflicts_s: float = 0.0  # part of analytics_s: ground kinematics and near-miss detection


@dataclass(slots=True)
class Totals:
    """Running totals over the whole run, for the end-of-run summary."""

    frames: int = 0
    crossings: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    #: Motor-vehicle crossing speeds (km/h) per (line, direction): one float per measured crossing of the run.
    speeds_kmh: defaultdict[tuple[str, str], list[float]] = field(default_factory=lambda: defaultdict(list))


#: Slack on ``detect_interval_s`` for the rounding of media times (``index / fps``), far below a frame.
_INTERVAL_SLACK_S = 1e-6


class DetectionSchedule:
    """Which processed frames go to the detector: every ``stride_frames``-th frame the pipeline processes,
    or, with ``interval_s``, the first frame at least that much later (``Frame.t_s``) than the last one
    picked. Counted on processed frames, never on source frame indices: a live source that drops frames
    (its indices skip) still detects at the configured rate. Motion gating may then skip a picked frame.
    """

    def __init__(self, stride_frames: int = 1, interval_s: float | None = None) -> None:
        if stride_frames < 1:
            raise ValueError(f"stride_frames must be >= 1, got {stride_frames}")
        if interval_s is not None and not (math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s!r}")
        self.stride_frames = stride_frames
        self.interval_s = interval_s
        self._processed = 0  # frames seen so far
        self._last_picked_t_s: float | None = None

    def pick(self, frame: Frame) -> bool:
        """True when ``frame`` (the next processed frame, in order) is due for detection."""
        if self.interval_s is not None:
            last = self._last_picked_t_s
            due = last is None or frame.t_s - last >= self.interval_s - _INTERVAL_SLACK_S
        else:
            due = self._processed % self.stride_frames == 0
        self._processed += 1
        if due:
            self._last_picked_t_s = frame.t_s
        return due


class CameraPipeline:
    def __init__(self, config: EdgeConfig, camera: CameraConfig, detector: ObjectDetector,
                 start_utc_s: float | None = None, recorder: ClipRecorder | None = None, *,
                 registry: Sequence[AnalyticFactory] = ANALYTICS) -> None:
        """``start_utc_s`` maps media time to UTC for file sources; live frames bring their own clock.
        ``registry``: the analytics to build from the camera's config (``edge.analytics.registry``)."""
        calibration = (Calibration.from_config(camera.calibration, where=f"cameras.{camera.name}.calibration")
                       if camera.calibration is not None else None)
        camera = lines_in_pixels(camera, calibration, f"cameras.{camera.name}")  # ground lines (points_m) placed
        self.camera = camera
        self.detector = detector
        self.device = config.device_id
        self.tracker = ByteTracker(config.tracker)
        self.schedule = DetectionSchedule(config.detector.stride_frames, config.detector.detect_interval_s)
        self.gate = MotionGate(config.detector.motion_gating) if config.detector.motion_gating else None
        self.detected_frames = 0
        self._last_redaction = np.zeros((0, 4), np.float32)
        counting = camera.counting
        self.counter = LineCounter(camera.lines, counting.hysteresis_px, confirm_s=counting.confirm_s,
                                   riders=counting.riders)
        self.kinematics = GroundKinematics(camera.kinematics, calibration) if calibration else None
        self.analytics = build_analytics(AnalyticsSetup.from_camera(camera, self.kinematics), registry)
        self.windows = WindowAggregator(config.device_id, camera.name, config.windows.window_s,
                                        config.windows.origin, self.analytics)
        self._events = 0
        self._last: Frame | None = None
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

    def detect(self, frame: Frame) -> Detected:
        """The detect half: the detection schedule (stride or interval), motion gating and the detector.
        Needs nothing from earlier frames' tracks, so it may run in its own thread ahead of ``analyse``
        (frames must come in order, each once)."""
        t0 = time.perf_counter()
        run = self.schedule.pick(frame)
        still = False
        if run and self.gate is not None:
            run = self.gate.needs_detection(frame.image)
            still = not run
        t1 = time.perf_counter()
        detections = self.detector(frame.image).scaled(*frame.to_source) if run else Detections.empty()
        self.times.gate_s += t1 - t0
        self.times.detect_s += time.perf_counter() - t1
        return Detected(frame, detections, run, still)

    def analyse(self, detected: Detected, dropped_before: int = 0) -> FrameResult:
        """The analyse half, in frame order: tracking, counting, windows, clips, ground analytics."""
        frame, detections = detected.frame, detected.detections
        t1 = time.perf_counter()
        tracks = self.tracker.update(detections) if detected.ran else self.tracker.coast()
        self.detected_frames += detected.ran
        t2 = time.perf_counter()
        windows = self.windows.advance(self.utc_s(frame), dropped_before)  # before the analytics add to it
        size = frame.source_size or (frame.image.shape[1], frame.image.shape[0])  # the boxes' pixels
        t_ground = time.perf_counter()
        ground = self.kinematics.update(tracks, frame.t_s, size) if self.kinematics is not None else None
        ground_s = time.perf_counter() - t_ground
        crossings = self.counter.update(tracks, frame.t_s, size, ground)  # riders need the ground speeds
        if self.recorder is not None:
            if not detected.still:
                self._last_redaction = self._redaction_boxes(tracks, detections)
            self.recorder.observe(frame, self._last_redaction)
        t3 = time.perf_counter()
        events = self._analytics(frame, tracks, crossings, ground)
        t4 = time.perf_counter()
        self.times.track_s += t2 - t1
        self.times.analytics_s += t4 - t2
        self.times.conflicts_s += t4 - t3 + ground_s
        self.totals.frames += 1
        self._total(crossings)
        self._last = frame
        return FrameResult(frame.index, tracks, crossings, windows, events)

    def _total(self, crossings: list[Crossing]) -> None:
        for c in crossings:
            self.totals.crossings[(c.line, c.direction, ROAD_USER_CLASSES[c.class_id])] += 1

    def _analytics(self, frame: Frame, tracks: Tracks, crossings: list[Crossing],
                   ground: GroundTracks | None) -> list[NearMissEvent]:
        """Every analytic, with the ground kinematics of calibrated cameras; near-misses also trigger clips."""
        if ground is not None:
            for c in crossings:
                speed_mps = ground.speed_of(c.tracker_id)
                if speed_mps is not None and ROAD_USER_CLASSES[c.class_id] in MOTOR_VEHICLE_CLASSES:
                    self.totals.speeds_kmh[(c.line, c.direction)].append(speed_mps * MPS_TO_KMH)
        near_misses = update_all(self.analytics, AnalyticsFrame(frame.t_s, tracks, crossings, ground))
        return [self._event(frame, nm) for nm in near_misses]

    def _event(self, frame: Frame, nm: NearMiss) -> NearMissEvent:
        ago_s = max(0.0, frame.t_s - nm.t_s)
        t_utc = self.utc_s(frame) - ago_s
        self._events += 1
        when = iso_utc(datetime.fromtimestamp(t_utc, UTC))
        key = f"edge-event/{self.device}/{self.camera.name}/{when}/{self._events}"
        msg_id = str(uuid.uuid5(uuid.NAMESPACE_URL, key))  # deterministic in replay
        clip = self.recorder.trigger(msg_id, frame, t_utc, ago_s=ago_s) if self.recorder is not None else None
        return NearMissEvent(
            msg_id=msg_id, device=self.device, camera=self.camera.name, time=when,
            conflict_type=nm.conflict_type,
            severity=nm.severity,
            road_users=nm.classes,
            speeds_mps=nm.speeds_mps, vulnerable=nm.vulnerable, ttc_s=nm.ttc_s, pet_s=nm.pet_s,
            drac_mps2=nm.drac_mps2, time_exposed_s=nm.time_exposed_s, conflicting_speed_mps=nm.conflicting_speed_mps,
            evasive_deceleration_mps2=nm.evasive_deceleration_mps2, collision=nm.collision,
            location_m=(int(nm.location_m[0]), int(nm.location_m[1])), clip=clip,
        )

    def _redaction_boxes(self, tracks: Tracks, detections: Detections) -> npt.NDArray[np.float32]:
        parts = [np.zeros((0, 4), np.float32)]
        if self._carrier is not None:
            parts.append(self._carrier.update(tracks, detections))
        if self._plate_frac is not None:
            parts.append(plate_regions(tracks.xyxy[np.isin(tracks.class_id, _VEHICLE_IDS)], self._plate_frac))
        return np.concatenate(parts)

    def finish(self) -> tuple[list[NearMissEvent], list[WindowRecord]]:
        """End of stream or shutdown: flush the analytics (open movements, encounters), then close the
        partial window."""
        frame = self._last
        if frame is not None:  # crossings still awaiting confirmation: no later frame can undo them
            late = self.counter.flush(frame.t_s)
            for analytic in self.analytics:
                if isinstance(analytic, LineCounts):
                    analytic.add(late)
                elif isinstance(analytic, Speeds):
                    analytic.aggregator.add(late, None)  # after the last frame: no speed to look up
            self._total(late)
        events = [self._event(frame, nm) for nm in flush_all(self.analytics, frame.t_s)] if frame is not None else []
        return events, self.windows.flush()
