"""Detector, motion gating and tracker sections (``detector``, ``detector.motion_gating``, ``tracker``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.config.base import StrictModel


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
        "default: picked from the first frame, the smallest that holds it at the scale of the manifest's input "
        "size, without letterbox padding rows (416x256 for a 16:9 camera with yolox-nano-dynamic). A fixed "
        "model always runs at its manifest size.",
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
    nested_vehicle_overlap_frac: float = Field(
        0.8, gt=0, le=1,
        description="Two boxes of different vehicle classes (car, bus, truck), the smaller lying inside the "
        "larger by at least this fraction of the smaller's own area, are one vehicle (a truck's cab found as a "
        "car inside the truck's box): the lower-scored box is dropped. A car partly hidden behind a truck shows "
        "less of itself inside the truck's box (up to 0.75 on the OpenTrafficCam clip): keep this above that. "
        "1 merges only boxes wholly inside another.",
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
