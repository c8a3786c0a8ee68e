"""Configuration: one YAML file validated by strict pydantic models.

Every model forbids unknown keys, every field has a description, and every quantity carries its unit in
its name (``window_s``, ``lost_track_buffer_frames``, ``points_px``). Geometry is in source-frame pixels
(x to the right, y down). Validators are pure: they check, they never touch files or the network.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.errors import ConfigError

Point = tuple[float, float]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------- source
class FileSourceConfig(StrictModel):
    kind: Literal["file"] = "file"
    path: Path = Field(description="Video file (anything FFmpeg reads). Audio tracks are ignored.")


class RtspSourceConfig(StrictModel):
    kind: Literal["rtsp"] = "rtsp"
    url: str = Field(description="rtsp:// (or other FFmpeg network) URL of the camera.")
    open_timeout_s: float = Field(5.0, gt=0, le=60, description="Give up opening the stream after this.")
    read_timeout_s: float = Field(5.0, gt=0, le=60, description="A read that blocks longer is a stall.")
    reconnect_min_s: float = Field(1.0, gt=0, description="First back-off delay before reopening.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Back-off cap; jitter is added on top.")

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
    reconnect_max_s: float = Field(30.0, gt=0, description="Back-off cap; jitter is added on top.")


SourceConfig = Annotated[
    FileSourceConfig | RtspSourceConfig | UsbSourceConfig, Field(discriminator="kind")
]


# -------------------------------------------------------------------------------------------- detector
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
    threads: int = Field(1, ge=1, le=64, description="onnxruntime intra-op threads.")
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
                if not re.match(DIRECTION_NAME, name):
                    raise ValueError(f"direction name {name!r} must match {DIRECTION_NAME}")
        return v


class CountingConfig(StrictModel):
    hysteresis_px: float = Field(
        4.0, ge=0, le=200,
        description="Half-width of a dead band around each line. A box bottom-centre must leave the band on "
        "the far side to count, so jitter on the line or stop-and-go at a stop line never double-counts.",
    )


# -------------------------------------------------------------------------------------------- cameras
class CameraConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Camera id used in topics and metrics.")
    source: SourceConfig | None = Field(
        None, description="Live or file source for `edge run`; `edge replay` takes the video on the CLI."
    )
    lines: tuple[LineConfig, ...] = Field((), description="Counting lines.")
    counting: CountingConfig = Field(default_factory=CountingConfig, description="Line-crossing options.")

    @field_validator("lines")
    @classmethod
    def _unique_lines(cls, v: tuple[LineConfig, ...]) -> tuple[LineConfig, ...]:
        names = [line.name for line in v]
        if len(set(names)) != len(names):
            raise ValueError(f"line names must be unique, got {names}")
        return v


class WindowConfig(StrictModel):
    window_s: int = Field(60, ge=1, le=86_400, description="Length of one metrics window in seconds.")
    origin: datetime = Field(
        datetime(1970, 1, 1, tzinfo=UTC),
        description="Windows are aligned to this instant (ISO 8601 with a zone), e.g. a recording's start.",
    )

    @field_validator("origin")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("must include a time zone, e.g. 2024-05-01T07:00:00Z")
        return v.astimezone(UTC)


class EdgeConfig(StrictModel):
    device_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Device id used in topics.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="Object detector.")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="Multi-object tracker.")
    windows: WindowConfig = Field(default_factory=WindowConfig, description="Metrics windows.")
    cameras: tuple[CameraConfig, ...] = Field(min_length=1, description="Cameras of this device.")

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
        errors = [f"{_yaml_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
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
