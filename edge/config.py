"""Configuration: one YAML file validated by strict pydantic models.

Every model forbids unknown keys, every field has a description, and every quantity carries its unit in
its name (``window_s``, ``lost_track_buffer_frames``, ``points_px``). Geometry is in source-frame pixels
(x to the right, y down). Validators are pure: they check, they never touch files or the network.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.errors import ConfigError
from edge.protocol import PROTOCOL, violation

Point = tuple[float, float]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------- source
def _check_backoff(min_s: float, max_s: float) -> None:
    if min_s > max_s:
        raise ValueError(f"reconnect_min_s ({min_s}) must not exceed reconnect_max_s ({max_s})")


class FileSourceConfig(StrictModel):
    kind: Literal["file"] = "file"
    path: Path = Field(description="Video file (anything FFmpeg reads). Audio tracks are ignored.")
    realtime: bool = Field(
        False, description="`edge run` only: pace the file at its frame rate, like a camera (tests, soak runs)."
    )
    loop: bool = Field(False, description="`edge run` only: start again at the end, like a camera that never stops.")


class RtspSourceConfig(StrictModel):
    kind: Literal["rtsp"] = "rtsp"
    url: str = Field(description="rtsp:// (or other FFmpeg network) URL of the camera.")
    open_timeout_s: float = Field(5.0, gt=0, le=60, description="Give up opening the stream after this.")
    read_timeout_s: float = Field(5.0, gt=0, le=60, description="A read that blocks longer is a stall.")
    reconnect_min_s: float = Field(1.0, gt=0, description="First back-off delay before reopening.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Back-off cap; each delay is drawn uniformly below it.")

    @model_validator(mode="after")
    def _backoff_ordered(self) -> RtspSourceConfig:
        _check_backoff(self.reconnect_min_s, self.reconnect_max_s)
        return self

    @field_validator("url")
    @classmethod
    def _has_scheme(cls, v: str) -> str:
        if "://" not in v:
            raise ValueError("must be a URL such as rtsp://host:554/stream")
        return v


class UsbSourceConfig(StrictModel):
    kind: Literal["usb"] = "usb"
    device_index: int = Field(0, ge=0, description="V4L2 device index (/dev/videoN).")
    open_timeout_s: float = Field(5.0, gt=0, le=60, description="Give up opening the device after this.")
    read_timeout_s: float = Field(5.0, gt=0, le=60, description="A read that blocks longer is a stall.")
    reconnect_min_s: float = Field(1.0, gt=0, description="First back-off delay before reopening.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Back-off cap; each delay is drawn uniformly below it.")

    @model_validator(mode="after")
    def _backoff_ordered(self) -> UsbSourceConfig:
        _check_backoff(self.reconnect_min_s, self.reconnect_max_s)
        return self


SourceConfig = Annotated[
    FileSourceConfig | RtspSourceConfig | UsbSourceConfig, Field(discriminator="kind")
]


# -------------------------------------------------------------------------------------------- detector
class MotionGatingConfig(StrictModel):
    """Frame differencing on a small grey copy decides whether a frame needs the detector."""

    width_px: int = Field(160, ge=32, le=640, description="Width of the grey copy that is differenced.")
    pixel_threshold: int = Field(12, ge=1, le=255, description="Grey-level change that counts as motion.")
    min_changed_frac: float = Field(
        0.001, gt=0, le=1, description="Fraction of changed pixels above which the frame is detected."
    )
    max_skipped_frames: int = Field(
        25, ge=1, le=1000, description="Detect at least this often even when nothing moves (refreshes tracks)."
    )


class DetectorConfig(StrictModel):
    model: str = Field("yolox-nano-416", description="Model name from models/manifest.yaml.")
    model_dir: Path | None = Field(
        None,
        description="Folder holding the model file. Default: $EDGE_MODEL_DIR, then the download cache "
        "(~/.cache/edge/models, filled by `edge models fetch NAME`).",
    )
    input_size_px: tuple[int, int] | None = Field(
        None,
        description="Inference size (width, height), multiples of 32. Only for models with a dynamic input; "
        "default: the manifest's input size.",
    )
    score_threshold: float = Field(
        0.1, ge=0.01, le=1.0,
        description="Keep detections at or above this score. Keep it low: the tracker's second stage uses "
        "low-score boxes to rescue lost tracks.",
    )
    nms_iou_threshold: float = Field(0.45, gt=0, le=1, description="Per-class non-maximum suppression IoU.")
    cross_class_iou_threshold: float = Field(
        0.7, gt=0, le=1,
        description="Boxes of different vehicle classes (car, bus, truck) overlapping more than this are one "
        "vehicle: the lower-scored box is dropped (a pickup must not be both car and truck).",
    )
    rider_overlap_threshold: float = Field(
        0.5, gt=0, le=1,
        description="A person box lying on a bicycle or motorcycle box by at least this fraction of its own "
        "area is the rider and is dropped: the two-wheeler is the road user.",
    )
    threads: int = Field(
        1, ge=1, le=64,
        description="onnxruntime intra-op threads. 1 suits a 2-4 core device: decoding runs on another core "
        "at the same time. Raise it when cores are idle (see tools/bench.py).",
    )
    thread_spinning: bool = Field(
        False,
        description="Let onnxruntime's worker threads spin between inferences (lower latency with threads > 1, "
        "but they burn CPU that the decoder and the analytics need on a small device).",
    )
    graph_optimization: Literal["disable", "basic", "extended", "all"] = Field(
        "all", description="onnxruntime graph optimisation level (constant folding, node fusions, layout).",
    )
    cpu_memory_arena: bool = Field(
        True,
        description="onnxruntime's CPU memory arena: reuses tensor buffers between inferences (fast, fixed "
        "input size). Off only if RSS matters more than speed with a dynamic input size.",
    )
    stride_frames: int = Field(
        1, ge=1, le=10,
        description="Detect on every k-th processed frame and let the tracker predict in between (for weak "
        "devices). Raising it saves inference time; tracks coast between detections. Frames a live source "
        "dropped do not count.",
    )
    detect_interval_s: float | None = Field(
        None, gt=0, le=10,
        description="Detect when at least this much media (replay) or capture (live) time has passed since "
        "the last frame picked for detection, whatever the frame rate or dropped frames (like a detect fps: "
        "0.2 s is 5 detections a second). Live capture times jitter by a few ms: set it a little below a "
        "multiple of the frame interval (0.075 s detects every other frame of a 25 fps camera). Instead of "
        "stride_frames, not with it.",
    )
    motion_gating: MotionGatingConfig | None = Field(
        None, description="Skip detection on frames where nothing moves (cheap frame differencing)."
    )
    execution_providers: tuple[Literal["cpu", "cuda", "tensorrt", "openvino"], ...] = Field(
        ("cpu",),
        description="Preferred order; providers not installed on this machine are reported and skipped, "
        "CPU is always the last resort.",
    )

    @field_validator("input_size_px")
    @classmethod
    def _multiple_of_32(cls, v: tuple[int, int] | None) -> tuple[int, int] | None:
        if v is not None and any(s <= 0 or s % 32 for s in v):
            raise ValueError(f"both sides must be positive multiples of 32, got {v}")
        return v

    @model_validator(mode="after")
    def _one_detection_rate(self) -> DetectorConfig:
        if self.detect_interval_s is not None and self.stride_frames > 1:
            raise ValueError(
                f"detect_interval_s ({self.detect_interval_s:g}) and stride_frames ({self.stride_frames}) both set "
                "the detection rate: keep one (remove stride_frames, or set it to 1)"
            )
        return self


# --------------------------------------------------------------------------------------------- tracker
class TrackerConfig(StrictModel):
    track_activation_threshold: float = Field(
        0.3, gt=0, le=1,
        description="Detections at or above this score are matched first and may start new tracks. "
        "Raising it cuts false tracks but misses faint road users (0.3 suits nano models, whose scores on "
        "small vehicles rarely reach ByteTrack's 0.5).",
    )
    low_score_threshold: float = Field(
        0.1, gt=0, le=1,
        description="Detections between this and track_activation_threshold only extend existing tracks "
        "(ByteTrack's second association stage).",
    )
    minimum_matching_iou: float = Field(
        0.2, gt=0, le=1,
        description="A detection and a predicted track box must overlap at least this much to match.",
    )
    lost_track_buffer_frames: int = Field(
        30, ge=1, le=10_000,
        description="Frames a track survives without a detection before it ends. Raising it bridges longer "
        "occlusions but risks id swaps.",
    )
    minimum_consecutive_frames: int = Field(
        3, ge=1, le=100,
        description="Matched frames before a new track is confirmed and reported.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> TrackerConfig:
        if self.low_score_threshold > self.track_activation_threshold:
            raise ValueError("low_score_threshold must not exceed track_activation_threshold")
        return self


# -------------------------------------------------------------------------------------------- counting
DIRECTION_NAME = r"^[A-Za-z0-9_.-]{1,32}$"


def default_direction_names(points: tuple[tuple[float, float], ...]) -> tuple[str, str]:
    """Names from the line's overall orientation: the normal towards the left side picks up/down/left/right."""
    dx = points[-1][0] - points[0][0]
    dy = points[-1][1] - points[0][1]
    nx, ny = dy, -dx  # normal pointing to the left side (y down)
    if abs(ny) >= abs(nx):
        return ("up", "down") if ny < 0 else ("down", "up")
    return ("left", "right") if nx < 0 else ("right", "left")


class LineConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="Line name used in metrics.")
    points_px: tuple[Point, ...] = Field(
        min_length=2, max_length=32,
        description="Polyline vertices in source-frame pixels [[x, y], ...]; at least two.",
    )
    directions: tuple[str, str] | None = Field(
        None,
        description="Names of the two crossing directions: first the crossing towards the left of the line "
        "as drawn (on screen, facing from the first point to the last), then the opposite. Default: "
        "derived from the orientation (up/down for a horizontal line, left/right for a vertical one).",
    )

    @field_validator("points_px")
    @classmethod
    def _distinct(cls, v: tuple[Point, ...]) -> tuple[Point, ...]:
        for (x0, y0), (x1, y1) in itertools.pairwise(v):
            if math.hypot(x1 - x0, y1 - y0) < 1.0:
                raise ValueError("consecutive points must be at least 1 px apart")
        if any(not (math.isfinite(x) and math.isfinite(y)) for x, y in v):
            raise ValueError("points must be finite numbers")
        return v

    @field_validator("directions")
    @classmethod
    def _names(cls, v: tuple[str, str] | None) -> tuple[str, str] | None:
        import re

        if v is not None:
            if v[0] == v[1]:
                raise ValueError("the two direction names must differ")
            for name in v:
                if not re.fullmatch(DIRECTION_NAME, name):
                    raise ValueError(f"direction name {name!r} must match {DIRECTION_NAME}")
        return v


class CountingConfig(StrictModel):
    hysteresis_px: float = Field(
        4.0, ge=0, le=200,
        description="Half-width of a dead band around each line. A box bottom-centre must leave the band on "
        "the far side to count, so jitter on the line or stop-and-go at a stop line never double-counts.",
    )


# ------------------------------------------------------------------------------------------ ground plane
UTM_ZONE = r"^(0?[1-9]|[1-5][0-9]|60)[NS]$"


def _finite_points(points: tuple[Point, ...]) -> None:
    if any(not (math.isfinite(x) and math.isfinite(y)) for x, y in points):
        raise ValueError("points must be finite numbers")


class ReferencePointConfig(StrictModel):
    image_px: Point = Field(description="Where the point is in the source frame, pixels [x, y] (x right, y down).")
    ground_m: Point = Field(
        description="The same point on the ground, metres [x, y]: a local frame (e.g. x east, y north, from a "
        "site plan or a tape) or UTM [easting, northing] when `utm_zone` is set.",
    )


class CalibrationConfig(StrictModel):
    """Image-to-ground homography from surveyed reference points (see ``edge.geometry``)."""

    points: tuple[ReferencePointConfig, ...] = Field(
        min_length=4, max_length=100,
        description="At least 4 reference points on the road surface, spread over the area to be measured, no "
        "3 of them on one line (use 5 or more: with exactly 4 the fit is exact and its error cannot be checked).",
    )
    utm_zone: str | None = Field(
        None, pattern=UTM_ZONE,
        description="UTM zone of `ground_m`, e.g. 32N. Ground coordinates are then UTM easting/northing in "
        "metres; they are shifted to a local frame by `origin_m` so that float precision is kept.",
    )
    origin_m: Point | None = Field(
        None,
        description="Ground point subtracted from every ground coordinate (the local frame's origin, in the "
        "ground_m frame). Default: the centroid of the reference points.",
    )
    method: Literal["least_squares", "ransac"] = Field(
        "least_squares",
        description="least_squares uses every point (surveyed points); ransac drops points whose error exceeds "
        "ransac_threshold_m (points clicked by hand where one may be wrong; needs 5 or more points).",
    )
    ransac_threshold_m: float = Field(
        0.5, gt=0, le=10, description="With method ransac: a point farther than this from its fit is an outlier."
    )
    max_reprojection_error_m: float = Field(
        1.0, gt=0, le=100,
        description="Refuse the calibration when a reference point (inlier) maps farther than this from its "
        "surveyed ground position: a mistyped coordinate or a swapped pair shows up here.",
    )

    @field_validator("points")
    @classmethod
    def _distinct_points(cls, v: tuple[ReferencePointConfig, ...]) -> tuple[ReferencePointConfig, ...]:
        _finite_points(tuple(p.image_px for p in v))
        _finite_points(tuple(p.ground_m for p in v))
        for (i, a), (j, b) in itertools.combinations(enumerate(v), 2):
            if math.dist(a.image_px, b.image_px) < 1.0:
                raise ValueError(f"points {i} and {j} have the same image position (closer than 1 px); "
                                 "remove the duplicate")
            if math.dist(a.ground_m, b.ground_m) < 0.01:
                raise ValueError(f"points {i} and {j} have the same ground position (closer than 1 cm); "
                                 "remove the duplicate")
        return v

    @model_validator(mode="after")
    def _utm_range(self) -> CalibrationConfig:
        if self.utm_zone is not None:
            for i, p in enumerate(self.points):
                easting, northing = p.ground_m
                if not (0.0 < easting < 1_000_000.0 and 0.0 <= northing <= 10_000_000.0):
                    raise ValueError(f"points[{i}].ground_m {p.ground_m} is not a UTM easting/northing in metres "
                                     "(easting 0-1,000,000, northing 0-10,000,000); give [easting, northing]")
        if self.method == "ransac" and len(self.points) < 5:
            raise ValueError("method ransac needs at least 5 points (with 4 every point fits exactly)")
        return self


class KinematicsConfig(StrictModel):
    """Per-track ground-plane filter: position, velocity, heading and speed (see ``edge.analytics.kinematics``)."""

    measurement_noise_px: float = Field(
        1.5, gt=0, le=100,
        description="Standard deviation of a box bottom-centre's jitter that does not grow with the box, pixels "
        "(frame-to-frame jitter measured on the shared footage is about 0.3 px; boxes also drift over several "
        "frames, so the default is larger). Mapped to metres through the calibration at each point, so far "
        "road users are smoothed more. Raising it smooths speeds more but follows braking and turns later.",
    )
    measurement_noise_box_frac: float = Field(
        0.02, ge=0, le=0.5,
        description="The part of the jitter that grows with the box: this fraction of its width (x) and height "
        "(y). Measured on the shared footage: about 0.02 (tools/eval_conflicts.py --jitter).",
    )
    footprint_offset_frac: float = Field(
        0.25, ge=0, le=1,
        description="Uncertainty of the bottom-centre-to-footprint-centre offset, as a fraction of it: a real "
        "road user is not its class's typical size. Added to each track's position uncertainty as a bias.",
    )
    consistency_hold_s: float = Field(
        1.0, ge=0, le=10,
        description="A track whose measurement failed the innovation gate (a box merge, split or cut by the "
        "image edge) is not consistent for this long, and takes part in no conflict meanwhile.",
    )
    acceleration_noise_mps2: float = Field(
        2.0, gt=0, le=50,
        description="Standard deviation of the acceleration the constant-velocity model does not predict, m/s^2. "
        "Raising it follows braking and turns faster but passes more jitter into speeds.",
    )
    velocity_settle_s: float = Field(
        0.5, ge=0, le=10,
        description="A track's speed and heading count as valid once it has been observed this long (and at "
        "least 3 times); before that its velocity is mostly the filter's initial guess.",
    )
    stationary_enter_speed_mps: float = Field(
        0.5, gt=0, le=10, description="A moving track becomes stationary when its speed falls below this."
    )
    stationary_exit_speed_mps: float = Field(
        1.0, gt=0, le=20,
        description="A stationary track moves again when its speed rises above this (hysteresis: jitter at a "
        "standstill never flips the state).",
    )
    history_samples: int = Field(
        100, ge=0, le=10_000,
        description="Ground positions kept per live track (a fixed-size ring, e.g. 100 = 5 s at 20 fps) for "
        "post-encroachment time; 0 keeps none.",
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> KinematicsConfig:
        if self.stationary_exit_speed_mps <= self.stationary_enter_speed_mps:
            raise ValueError("stationary_exit_speed_mps must exceed stationary_enter_speed_mps (hysteresis)")
        return self


class SpeedConfig(StrictModel):
    speed_limit_kmh: float = Field(
        50.0, gt=0, le=300,
        description="Posted speed limit, km/h; each window reports how many measured crossings exceeded it.",
    )
    min_count_published: int = Field(
        3, ge=1, le=100,
        description="Mean and percentiles are published only from this many measured crossings in a window, "
        "so a record never reveals one road user's speed.",
    )


ZONE_NAME = r"^[A-Za-z0-9_.]{1,32}$"


def _segments_cross(p: Point, q: Point, a: Point, b: Point) -> bool:
    """True when segments p-q and a-b cross properly (not at shared end points)."""

    def orient(o: Point, s: Point, t: Point) -> float:
        return (s[0] - o[0]) * (t[1] - o[1]) - (s[1] - o[1]) * (t[0] - o[0])

    d1, d2 = orient(a, b, p), orient(a, b, q)
    d3, d4 = orient(p, q, a), orient(p, q, b)
    return d1 * d2 < 0 and d3 * d4 < 0


class ZoneConfig(StrictModel):
    name: str = Field(
        pattern=ZONE_NAME,
        description="Approach name used in movement names (e.g. Nord -> movement Nord->Ost).",
    )
    points_px: tuple[Point, ...] = Field(
        min_length=3, max_length=64,
        description="Polygon vertices in source-frame pixels [[x, y], ...], covering the approach's lanes in "
        "both directions where road users enter and leave the view.",
    )

    @field_validator("points_px")
    @classmethod
    def _simple_polygon(cls, v: tuple[Point, ...]) -> tuple[Point, ...]:
        _finite_points(v)
        area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(v, v[1:] + v[:1], strict=True))
        if abs(area2) / 2 < 1.0:
            raise ValueError("the polygon has no area (fewer than 3 distinct points, or all on one line)")
        edges = list(zip(v, v[1:] + v[:1], strict=True))
        for i, j in itertools.combinations(range(len(edges)), 2):
            if j - i > 1 and not (i == 0 and j == len(edges) - 1) and _segments_cross(*edges[i], *edges[j]):
                raise ValueError(f"the polygon's edges {i} and {j} cross; list the vertices in order around it")
        return v


class MovementConfig(StrictModel):
    """Turning movements: a track entering through one zone and leaving through another."""

    zones: tuple[ZoneConfig, ...] = Field(
        min_length=2, max_length=16,
        description="One polygon per approach. Where zones overlap, the first listed wins.",
    )
    exit_dwell_s: float = Field(
        0.5, ge=0, le=30,
        description="A movement is counted once a track has been this long in a zone other than its entry zone "
        "(or when it ends after reaching one); a track clipping a corner of another zone is not an exit.",
    )
    handover_radius_px: float = Field(
        40.0, ge=0, le=1000,
        description="A track first seen outside every zone (an id switch, an occlusion) takes the entry zone of "
        "a track lost within handover_max_gap_s whose predicted position is this close; 0 disables it.",
    )
    handover_max_gap_s: float = Field(
        1.0, gt=0, le=30, description="Longest time between losing a track and handing its entry zone over."
    )

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, v: tuple[ZoneConfig, ...]) -> tuple[ZoneConfig, ...]:
        names = [z.name for z in v]
        if len(set(names)) != len(names):
            raise ValueError(f"zone names must be unique, got {names}")
        return v


# -------------------------------------------------------------------------------------------- cameras
class ConflictConfig(StrictModel):
    """Near-miss detection between road users on the ground plane (needs a calibration).

    A near-miss needs evidence (see ``edge.analytics.conflicts``): mature, consistent tracks, a TTC at or
    below the threshold held for ``min_exposure_s``, a gap larger than the pair's position uncertainty and
    a closing speed larger than its velocity uncertainty. Every false alarm keeps video (P3).
    """

    ttc_threshold_s: float = Field(
        1.5, gt=0, le=10,
        description="TTC at or below this, held for min_exposure_s, makes an encounter a near-miss (FHWA SSAM "
        "default 1.5 s).",
    )
    pet_threshold_s: float = Field(
        1.5, gt=0, le=10,
        description="Paths crossing (not following) with a post-encroachment time at or below this: near-miss.",
    )
    min_exposure_s: float = Field(
        0.3, ge=0, le=5,
        description="The TTC must stay at or below the threshold this long without a break (a time-exposed "
        "TTC). Raising it drops short noise-driven dips but also brief real conflicts.",
    )
    min_exposure_frames: int = Field(
        3, ge=1, le=100, description="... and over at least this many evaluated frames (for low frame rates)."
    )
    min_track_age_s: float = Field(
        1.0, ge=0, le=30,
        description="Both road users must have been tracked this long (a new track's velocity is its guess).",
    )
    max_position_std_m: float = Field(
        1.0, gt=0, le=20,
        description="Road users whose position is more uncertain than this (one standard deviation, metres: "
        "small far-away boxes) take part in no conflict.",
    )
    gap_sigmas: float = Field(
        1.0, ge=0, le=10,
        description="A frame counts as evidence only when the collision course holds with each footprint shrunk "
        "by this many of its position standard deviations per side: a gap or an overlap within the pair's "
        "uncertainty tells nothing (a merge of boxes looks the same).",
    )
    closing_sigmas: float = Field(
        2.0, ge=0, le=10,
        description="... and when the relative speed exceeds this many combined velocity standard deviations.",
    )
    serious_deceleration_mps2: float = Field(
        4.0, gt=0, le=15,
        description="Severity after the Swedish Traffic Conflict Technique (Hyden 1987): a conflict is serious "
        "('high') when stopping from the conflicting speed within the time to accident needs more than this "
        "deceleration, i.e. TA <= speed / (2 x this); the border rises with speed as the TCT's does.",
    )
    medium_ta_s: float = Field(
        1.0, gt=0, le=10,
        description="A conflict that is not serious is 'medium' when its time to accident (or PET) is at or "
        "below this, else 'low'.",
    )
    horizon_s: float = Field(5.0, gt=0, le=30, description="TTC looks this far ahead under constant velocity.")
    max_pair_distance_m: float = Field(
        30.0, gt=0, le=200,
        description="Only road users this close are paired (spatial pruning keeps busy scenes cheap).",
    )
    min_speed_mps: float = Field(
        1.0, ge=0, le=20, description="At least one road user of a pair must move this fast to be a conflict."
    )
    encounter_gap_s: float = Field(
        1.0, gt=0, le=10, description="An encounter ends when the pair has not been close for this long."
    )
    impact_closing_speed_mps: float = Field(
        5.0, gt=0, le=50,
        description="A collision seen without a sustained lead-up (a road user that enters the view just before "
        "the crash): footprints touching within gap_sigmas of their uncertainty while closing at least this fast "
        "(and faster than closing_sigmas velocity standard deviations), ...",
    )
    impact_min_track_age_s: float = Field(
        0.3, ge=0, le=30,
        description="... the faster road user tracked at least this long, located within max_position_std_m, ...",
    )
    impact_confirm_s: float = Field(
        0.5, gt=0, le=5,
        description="... and within this time after the contact its motion breaks: a measurement fails the "
        "innovation gate, the track ends, or it loses half its speed. Passing close by does none of these.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> ConflictConfig:
        if self.medium_ta_s > max(self.ttc_threshold_s, self.pet_threshold_s):
            raise ValueError("medium_ta_s must not exceed the TTC and PET thresholds")
        return self


class CameraConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Camera id used in topics and metrics.")
    source: SourceConfig | None = Field(
        None, description="Live or file source for `edge run`; `edge replay` takes the video on the CLI."
    )
    lines: tuple[LineConfig, ...] = Field((), description="Counting lines.")
    counting: CountingConfig = Field(default_factory=CountingConfig, description="Line-crossing options.")
    calibration: CalibrationConfig | None = Field(
        None, description="Ground-plane calibration; needed for speeds and near-miss measures."
    )
    kinematics: KinematicsConfig = Field(
        default_factory=KinematicsConfig, description="Ground-plane position and velocity filter."
    )
    speeds: SpeedConfig = Field(default_factory=SpeedConfig, description="Speed statistics at line crossings.")
    movements: MovementConfig | None = Field(None, description="Turning movements between approach zones.")
    conflicts: ConflictConfig = Field(
        default_factory=ConflictConfig, description="Near-miss detection (active when calibrated)."
    )

    @field_validator("lines")
    @classmethod
    def _unique_lines(cls, v: tuple[LineConfig, ...]) -> tuple[LineConfig, ...]:
        names = [line.name for line in v]
        if len(set(names)) != len(names):
            raise ValueError(f"line names must be unique, got {names}")
        return v

    # The 4 KB payload limit is checked at start-up (edge.prepare.payload_problems): the size depends on
    # the analytics the camera runs (edge.analytics.registry), and this module must not import them.


class WindowConfig(StrictModel):
    window_s: int = Field(
        60, le=86_400,
        description=f"Length of one metrics window in seconds (protocol minimum: {PROTOCOL.limits.min_window_s}).",
    )
    origin: datetime = Field(
        datetime(1970, 1, 1, tzinfo=UTC),
        description="Windows are aligned to this instant (ISO 8601 with a zone), e.g. a recording's start.",
    )

    @field_validator("window_s")
    @classmethod
    def _protocol_window(cls, v: int) -> int:
        if v < PROTOCOL.limits.min_window_s:
            raise ValueError(violation("windows.window_s", v, f">= {PROTOCOL.limits.min_window_s} s", "P4",
                                       "use a longer window: short windows can single out road users"))
        return v

    @field_validator("origin")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("must include a time zone, e.g. 2024-05-01T07:00:00Z")
        return v.astimezone(UTC)


# ------------------------------------------------------------------------------------------------ mqtt
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_TOPIC_LEVEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _is_loopback(host: str) -> bool:
    """True for a loopback name or address. No DNS look-up: validators are pure."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class MqttTlsConfig(StrictModel):
    ca_file: Path = Field(
        description="PEM file of the CA that signed the broker's certificate. It is pinned: system CAs are not "
        "trusted, and the broker's host name must match its certificate."
    )
    cert_file: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS; needs key_file.")
    key_file: Path | None = Field(None, description="Private key (PEM) of cert_file; keep it 0600.")

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both for mutual TLS, or neither")
        return self


class MqttConfig(StrictModel):
    url: str | None = Field(
        None,
        description="Broker as mqtts://host:port (TLS) or mqtt://host:port (plaintext, this machine only). "
        "Alternative to host and port.",
    )
    host: str | None = Field(None, min_length=1, max_length=253, description="Broker host; alternative to url.")
    port: int | None = Field(None, ge=1, le=65535, description="Broker port; default 8883 with TLS, 1883 without.")
    prefix: str = Field(
        "traffic/v1", min_length=1, max_length=128,
        description="Topic prefix: topics are {prefix}/{device}/status and /health, {prefix}/{device}/{camera}/"
        "metrics and /events. Levels of letters, digits, '_', '.', '-'; no wildcards.",
    )
    client_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]{1,128}$",
        description="MQTT client id; default edge-{device_id}. Unique per broker: a second client with the same "
        "id disconnects the first.",
    )
    keepalive_s: int = Field(
        30, ge=5, le=3600, description="Ping period on an idle link; a dead link is noticed after about 1.5 x this."
    )
    connect_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Give up one connection attempt (TCP, TLS, CONNACK) after this."
    )
    tls: MqttTlsConfig | None = Field(
        None, description="TLS with a pinned CA; required for any broker that is not on this machine."
    )
    username: str | None = Field(None, min_length=1, max_length=128, description="Login name on the broker.")
    password_file: Path | None = Field(
        None, description="File whose first line is the password (keep it 0600). Read at start, never logged."
    )
    password_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="Name of the environment variable holding the password; alternative to password_file.",
    )
    outbox_path: Path = Field(
        Path("/var/lib/edge/outbox.sqlite3"),
        description="SQLite file of the store-and-forward outbox. Best on its own partition or quota.",
    )
    outbox_max_bytes: int = Field(
        64 * 2**20, ge=256 * 2**10, le=2**40,
        description="Disk budget of the outbox, write-ahead log included. When it is full, health messages are "
        "dropped first, then metrics, events last, oldest first within a kind; every drop is counted.",
    )
    event_ttl_s: float = Field(
        7 * 86_400.0, gt=0, le=365 * 86_400, description="An event still unsent after this is dropped (counted)."
    )
    metrics_ttl_s: float = Field(
        2 * 86_400.0, gt=0, le=365 * 86_400, description="A metrics window still unsent after this is dropped."
    )
    health_ttl_s: float = Field(
        3600.0, gt=0, le=365 * 86_400, description="A health message still unsent after this is dropped."
    )
    inflight_max: int = Field(
        20, ge=1, le=1000,
        description="Messages sent and not yet acknowledged at once. Bounds the duplicates after a reconnect; "
        "raising it drains a backlog faster over a slow link.",
    )
    reconnect_min_s: float = Field(
        1.0, gt=0, le=600,
        description="Shortest reconnect delay. The cap doubles per failed attempt up to reconnect_max_s and each "
        "delay is drawn uniformly between the two (jitter), so a fleet does not reconnect in lock-step.",
    )
    reconnect_max_s: float = Field(60.0, gt=0, le=3600, description="Longest reconnect delay.")
    auth_retry_s: float = Field(
        300.0, ge=60, le=86_400,
        description="Delay before retrying after the broker refused the login or its certificate failed "
        "verification. That is a configuration fault: it raises the health alarm, and fast retries would only "
        "load the broker.",
    )
    health_interval_s: float = Field(
        60.0, ge=1, le=86_400, description="Period of health messages while connected; one also follows each connect."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"scheme must be mqtts:// (TLS) or mqtt:// (plaintext, loopback only), got {v!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold credentials: set username and password_file instead")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"must be scheme://host[:port] only, got {v!r}")
        try:
            parts.port  # noqa: B018  (urlsplit checks the port range only when it is read)
        except ValueError as exc:
            raise ValueError(f"bad port in {v!r}: {exc}") from None
        if not parts.hostname:
            raise ValueError(f"has no host: {v!r}")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if "+" in v or "#" in v:
            raise ValueError(f"must not contain the MQTT wildcards '+' or '#', got {v!r}")
        if v.startswith("$"):
            raise ValueError(f"must not start with '$' (reserved for broker topics), got {v!r}")
        levels = v.split("/")
        if not all(_TOPIC_LEVEL.fullmatch(level) for level in levels):
            raise ValueError(
                f"must be '/'-separated levels of letters, digits, '_', '.', '-' with no empty level "
                f"(no leading, trailing or double '/'), e.g. traffic/v1; got {v!r}"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if (self.url is None) == (self.host is None):
            raise ValueError("set either url (e.g. mqtts://broker.example:8883) or host (with port), not both")
        if self.url is not None:
            scheme = urlsplit(self.url).scheme
            if self.port is not None:
                raise ValueError("port goes into the url (mqtts://host:port) when url is set")
            if scheme == "mqtts" and self.tls is None:
                raise ValueError("url is mqtts:// but tls is not set: set tls.ca_file to the CA of the broker")
            if scheme == "mqtt" and self.tls is not None:
                raise ValueError("url is plaintext mqtt:// but tls is set: use mqtts:// for a TLS broker")
        if not (self.tls is not None or _is_loopback(self.broker_host)):
            raise ValueError(
                f"broker {self.broker_host!r} is not on this machine and tls is not set: credentials and data would "
                "cross the network in plaintext. Set tls.ca_file to the CA that signed the broker's certificate "
                "(and use an mqtts:// url); plaintext is allowed for loopback only"
            )
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("set password_file or password_env, not both")
        if (self.password_file is not None or self.password_env is not None) and self.username is None:
            raise ValueError("a password needs a username: set username")
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must not exceed reconnect_max_s ({self.reconnect_max_s})"
            )
        return self

    @property
    def broker_host(self) -> str:
        if self.url is not None:
            return urlsplit(self.url).hostname or ""
        return self.host or ""

    @property
    def broker_port(self) -> int:
        if self.url is not None and (port := urlsplit(self.url).port) is not None:
            return port
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883

    def ttl_s(self, kind: Literal["event", "metrics", "health", "status"]) -> float:
        """Time to live of a message kind in the outbox (status: superseded by the next one, kept a day)."""
        return {"event": self.event_ttl_s, "metrics": self.metrics_ttl_s, "health": self.health_ttl_s,
                "status": 86_400.0}[kind]


# ---------------------------------------------------------------------------------------- privacy, clips
class PrivacyConfig(StrictModel):
    """Switches the protocol forbids. They exist so that a config asking for them is refused by name."""

    record_audio: bool = Field(False, description="Must stay false: audio is never collected (P1).")
    per_object_output: bool = Field(False, description="Must stay false: only aggregates leave the device (P4).")
    export_frames: bool = Field(False, description="Must stay false: no frame is stored outside clips (P2).")

    @model_validator(mode="after")
    def _protocol(self) -> PrivacyConfig:
        limits = PROTOCOL.limits
        problems = []
        if self.record_audio and not limits.audio_allowed:
            problems.append(violation("privacy.record_audio", True, False, "P1", "remove it"))
        if self.per_object_output and not limits.per_object_output_allowed:
            problems.append(violation("privacy.per_object_output", True, False, "P4", "remove it"))
        if self.export_frames and not limits.frame_export_on_device_allowed:
            problems.append(violation("privacy.export_frames", True, False, "P2", "remove it"))
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RedactionConfig(StrictModel):
    persons: bool = Field(True, description="Blur every tracked person in clip frames before encoding.")
    plates: bool = Field(False, description="Also blur the lower front/rear strip of vehicles, where plates sit.")
    pad_frac: float = Field(0.15, ge=0, le=1, description="Grow each blurred box by this fraction per side.")
    blur_cells: int = Field(8, ge=2, le=32, description="Cells kept along a box's longer side; lower is stronger.")
    plate_strip_frac: float = Field(
        0.35, gt=0, le=1, description="Height fraction of the bottom strip of a vehicle box blurred for plates."
    )
    carry_frames: int = Field(
        15, ge=0, le=300,
        description="Keep blurring a person's last box for this many frames after the detector lost them.",
    )


class ClipEncryptionConfig(StrictModel):
    public_key_file: Path = Field(
        description="The city's X25519 public key (PEM). Clips are encrypted to it; the device cannot read them."
    )


class ClipsConfig(StrictModel):
    """Short event clips (off by default). Limits are capped by the protocol (P3)."""

    enabled: bool = Field(False, description="Record a clip around each near-miss event.")
    store_dir: Path = Field(Path("/var/lib/edge/clips"), description="The only folder where clips are written.")
    pre_roll_s: float = Field(5.0, ge=0, description="Seconds of video before the event.")
    post_roll_s: float = Field(5.0, ge=0, description="Seconds of video after the (last merged) event.")
    max_clip_s: float = Field(
        PROTOCOL.limits.max_clip_s, gt=0, description="Longest clip; overlapping events merge up to this length."
    )
    budget_s_per_hour: float = Field(
        PROTOCOL.limits.max_clip_s_per_hour, gt=0,
        description="Clip seconds kept per camera in any rolling hour (by the clips' UTC times); a clip that "
        "does not fit is not kept, its event is still published.",
    )
    budget_s_per_day: float = Field(
        PROTOCOL.limits.max_clip_s_per_day, gt=0,
        description="Clip seconds kept per camera in any rolling 24 hours; as budget_s_per_hour.",
    )
    retention_days: float = Field(
        PROTOCOL.limits.max_retention_days, gt=0, description="Clips older than this are deleted."
    )
    max_store_bytes: int = Field(
        2 * 1024**3, gt=0, description="Byte budget of the clip store; the oldest clips go first."
    )
    buffer_max_bytes: int = Field(
        64 * 1024**2, ge=1024**2, le=1024**3,
        description="RAM budget of the pre-event buffer of encoded packets (never written to disk).",
    )
    redaction: RedactionConfig | None = Field(
        default_factory=RedactionConfig, description="Blurring before encoding; null turns it off."
    )
    encryption: ClipEncryptionConfig | None = Field(None, description="Encrypt clips at rest to the city's key.")

    @model_validator(mode="after")
    def _protocol(self) -> ClipsConfig:
        limits = PROTOCOL.limits
        problems = []
        if self.max_clip_s > limits.max_clip_s:
            problems.append(violation("clips.max_clip_s", self.max_clip_s, limits.max_clip_s, "P3", "lower it"))
        if self.pre_roll_s + self.post_roll_s > min(self.max_clip_s, limits.max_clip_s):
            problems.append(violation(
                "clips.pre_roll_s + clips.post_roll_s", self.pre_roll_s + self.post_roll_s,
                min(self.max_clip_s, limits.max_clip_s), "P3", "shorten the pre-roll or the post-roll"))
        if self.budget_s_per_hour > limits.max_clip_s_per_hour:
            problems.append(violation("clips.budget_s_per_hour", self.budget_s_per_hour, limits.max_clip_s_per_hour,
                                      "P3", "lower it"))
        if self.budget_s_per_day > limits.max_clip_s_per_day:
            problems.append(violation("clips.budget_s_per_day", self.budget_s_per_day, limits.max_clip_s_per_day,
                                      "P3", "lower it"))
        if self.retention_days > limits.max_retention_days:
            problems.append(violation("clips.retention_days", self.retention_days, limits.max_retention_days,
                                      "P3", "lower it"))
        if self.max_store_bytes > limits.max_clip_store_bytes:
            problems.append(violation("clips.max_store_bytes", self.max_store_bytes, limits.max_clip_store_bytes,
                                      "P3", "lower it"))
        if problems:
            raise ValueError("; ".join(problems))
        return self


class EdgeConfig(StrictModel):
    device_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Device id used in topics.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="Object detector.")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="Multi-object tracker.")
    windows: WindowConfig = Field(default_factory=WindowConfig, description="Metrics windows.")
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig, description="Switches the protocol forbids.")
    clips: ClipsConfig = Field(default_factory=ClipsConfig, description="Event clips (off by default).")
    cameras: tuple[CameraConfig, ...] = Field(min_length=1, description="Cameras of this device.")
    mqtt: MqttConfig | None = Field(
        None, description="MQTT publishing with a store-and-forward outbox; absent: no publishing."
    )

    @field_validator("cameras")
    @classmethod
    def _unique_cameras(cls, v: tuple[CameraConfig, ...]) -> tuple[CameraConfig, ...]:
        names = [c.name for c in v]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        return v

    def camera(self, name: str | None) -> CameraConfig:
        """The camera called ``name``, or the only/first camera when ``name`` is None."""
        if name is None:
            return self.cameras[0]
        for cam in self.cameras:
            if cam.name == name:
                return cam
        known = ", ".join(c.name for c in self.cameras)
        raise ConfigError(f"no camera named {name!r} in the config; known cameras: {known}")


# ---------------------------------------------------------------------------------------------- loading
def _yaml_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("file", "rtsp", "usb") and out.endswith("source"):
            continue  # discriminated-union tag pydantic adds to the location
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def parse_config(data: Any, origin: str = "config") -> EdgeConfig:
    """Validate a parsed YAML document; raise ``ConfigError`` listing every problem with its YAML path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as exc:
        found = exc.errors()
        # pydantic also reports a too-short tuple when its only items failed; the item errors say it all
        errors = [
            f"{_yaml_path(e['loc'])}: {e['msg']}"
            for e in found
            if not (e["type"] == "too_short" and any(o["loc"][: len(e["loc"])] == e["loc"] != o["loc"] for o in found))
        ]
        raise ConfigError(f"{origin}: {len(errors)} error(s)", errors) from None


def load_config(path: Path) -> EdgeConfig:
    """Read and validate a YAML config file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}; check the path") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, str(path))


# ------------------------------------------------------------------------------- trajectory studies
class TrajectoryStudyConfig(StrictModel):
    """``edge analyse-trajectories``: zones and lines in the trajectories' own ground frame (metres)."""

    zones_m: dict[str, tuple[Point, ...]] = Field(
        default_factory=dict, description="Approach name -> polygon [[x, y], ...] in metres, for movements."
    )
    lines_m: tuple[LineConfig, ...] = Field(
        (), description="Counting lines; their points_px are read as metres, and directions must be named."
    )
    speed_limit_kmh: float = Field(50.0, gt=0, le=300, description="Posted speed limit for over-limit counts.")
    conflicts: ConflictConfig = Field(default_factory=ConflictConfig, description="Near-miss thresholds.")

    @field_validator("lines_m")
    @classmethod
    def _named_directions(cls, v: tuple[LineConfig, ...]) -> tuple[LineConfig, ...]:
        for line in v:
            if line.directions is None:
                raise ValueError(f"line {line.name!r} needs `directions`: up/down defaults assume image axes")
        return v


def load_study(path: Path) -> TrajectoryStudyConfig:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read study config {path}: {exc.strerror}; check the path") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return TrajectoryStudyConfig.model_validate(data or {})
    except ValidationError as exc:
        errors = [f"{_yaml_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path}: {len(errors)} error(s)", errors) from None
