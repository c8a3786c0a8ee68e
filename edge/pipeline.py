"""One camera's pipeline: detect -> track -> count -> windows. The same object serves replay and live.

Only the source and the clock differ between modes: replay maps media time onto a start instant, live
frames carry their wall-clock capture time.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge.analytics.conflicts import ConflictAggregator, ConflictDetector, NearMiss
from edge.analytics.kinematics import GroundKinematics
from edge.analytics.lines import Crossing, LineCounter
from edge.analytics.movements import MovementAggregator, MovementCounter
from edge.analytics.speeds import SpeedAggregator
from edge.analytics.windows import WindowAggregator, WindowExtras, WindowRecord
from edge.clips.recorder import ClipRecorder
from edge.clips.redact import BoxCarrier, plate_regions
from edge.config import CameraConfig, EdgeConfig
from edge.geometry import Calibration
from edge.motion import MotionGate
from edge.payloads import NearMissEvent, iso_utc
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


class CameraPipeline:
    def __init__(self, config: EdgeConfig, camera: CameraConfig, detector: ObjectDetector,
                 start_utc_s: float | None = None, recorder: ClipRecorder | None = None) -> None:
        """``start_utc_s`` maps media time to UTC for file sources; live frames bring their own clock."""
        self.camera = camera
        self.detector = detector
        self.device = config.device_id
        self.tracker = ByteTracker(config.tracker)
        self.stride = config.detector.stride_frames
        self.gate = MotionGate(config.detector.motion_gating) if config.detector.motion_gating else None
        self.detected_frames = 0
        self._last_redaction = np.zeros((0, 4), np.float32)
        self.counter = LineCounter(camera.lines, camera.counting.hysteresis_px)
        lines = [(line.name, line.directions) for line in self.counter.lines]
        calibration = (Calibration.from_config(camera.calibration, where=f"cameras.{camera.name}.calibration")
                       if camera.calibration is not None else None)
        self.kinematics = GroundKinematics(camera.kinematics, calibration) if calibration else None
        self.conflicts = ConflictDetector(camera.conflicts, self.kinematics) if self.kinematics else None
        self.movements = MovementCounter.from_config(camera.movements) if camera.movements else None
        self.windows = WindowAggregator(
            config.device_id, camera.name, config.windows.window_s, config.windows.origin, lines,
            WindowExtras(
                speeds=SpeedAggregator(lines, camera.speeds.speed_limit_kmh) if calibration else None,
                speed_limit_kmh=camera.speeds.speed_limit_kmh,
                min_speed_count=camera.speeds.min_count_published,
                movements=MovementAggregator(self.movements.movement_names) if self.movements else None,
                conflicts=ConflictAggregator() if self.conflicts else None,
            ),
        )
        self._newest_id = 0  # tracker ids grow: a larger id is a road user seen for the first time
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

    def process(self, frame: Frame, dropped_before: int = 0) -> FrameResult:
        """Both halves for one frame, in order (``detect`` then ``analyse``)."""
        return self.analyse(self.detect(frame), dropped_before)

    def detect(self, frame: Frame) -> Detected:
        """The detect half: stride, motion gating and the detector. Needs nothing from earlier frames'
        tracks, so it may run in its own thread ahead of ``analyse`` (frames must come in order)."""
        t0 = time.perf_counter()
        run = frame.index % self.stride == 0
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
        windows = self.windows.advance(self.utc_s(frame), dropped_before)
        crossings = self.counter.update(tracks, frame.t_s)
        self.windows.add_crossings(crossings)
        if self.recorder is not None:
            if not detected.still:
                self._last_redaction = self._redaction_boxes(tracks, detections)
            self.recorder.observe(frame, self._last_redaction)
        t3 = time.perf_counter()
        events = self._ground(frame, tracks, crossings)
        t4 = time.perf_counter()
        self.times.track_s += t2 - t1
        self.times.analytics_s += t4 - t2
        self.times.conflicts_s += t4 - t3
        self.totals.frames += 1
        for c in crossings:
            self.totals.crossings[(c.line, c.direction, ROAD_USER_CLASSES[c.class_id])] += 1
        self._last = frame
        return FrameResult(frame.index, tracks, crossings, windows, events)

    def _ground(self, frame: Frame, tracks: Tracks, crossings: list[Crossing]) -> list[NearMissEvent]:
        """Speeds, movements and near-misses of this frame; near-misses also trigger clips."""
        x = self.windows.extras
        if self.movements is not None and x.movements is not None:
            x.movements.add(self.movements.update_tracks(tracks, frame.t_s))
        if self.kinematics is None:
            return []
        size = frame.source_size or (frame.image.shape[1], frame.image.shape[0])  # the boxes' pixels
        ground = self.kinematics.update(tracks, frame.t_s, size)
        if x.speeds is not None:
            x.speeds.add(crossings, ground)
        if self.conflicts is None:
            return []
        near_misses = self.conflicts.update(ground, tracks.ended_ids)
        fresh = tracks.tracker_id > self._newest_id
        entering = int(np.count_nonzero(fresh & np.isin(tracks.class_id, _VEHICLE_IDS)))
        if len(tracks):
            self._newest_id = max(self._newest_id, int(tracks.tracker_id.max()))
        if x.conflicts is not None:
            x.conflicts.add(near_misses, entering)
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
        """End of stream or shutdown: close open movements and encounters, then the partial window."""
        events: list[NearMissEvent] = []
        frame = self._last
        if frame is not None:
            x = self.windows.extras
            if self.movements is not None and x.movements is not None:
                x.movements.add(self.movements.flush(frame.t_s))
            if self.conflicts is not None:
                near_misses = self.conflicts.flush()
                if x.conflicts is not None:
                    x.conflicts.add(near_misses, 0)
                events = [self._event(frame, nm) for nm in near_misses]
        return events, self.windows.flush()
