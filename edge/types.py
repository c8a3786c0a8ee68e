"""Typed values passed between pipeline stages.

Coordinates are source-frame pixels, x to the right and y down, boxes as ``(x1, y1, x2, y2)``.
Arrays are parallel: row ``i`` of every array describes the same object.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

#: Road-user classes the pipeline knows, in a fixed order; ``class_id`` indexes this tuple.
ROAD_USER_CLASSES: Final = ("car", "bus", "truck", "motorcycle", "bicycle", "person")
MOTOR_VEHICLE_CLASSES: Final = frozenset({"car", "bus", "truck", "motorcycle"})

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def class_name(class_id: int) -> str:
    return ROAD_USER_CLASSES[class_id]


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded video frame (BGR, uint8, HxWx3) with its position in the stream.

    ``image`` is the *analysis copy*: the decoder scales the camera frame down to about the detector's
    input size (``analysis_size``), so full-resolution pixels are never converted or held (clips are cut
    from the encoded packets instead). ``source_size`` is the camera frame's ``(width, height)``; coordinates handed to
    the analytics are always in those source pixels (``Frame.to_source``).

    ``t_s`` is media time for files (deterministic replay) and ``time.monotonic()`` for live sources.
    ``wall_time_s`` is the UTC wall clock (seconds since the epoch) at capture for live sources, and
    ``None`` for files (the replay maps media time onto a configured start time).
    """

    image: npt.NDArray[np.uint8]
    index: int
    t_s: float
    wall_time_s: float | None = None
    #: Presentation timestamp in the stream's time base (links the frame to its encoded packets).
    pts: int | None = None
    #: Camera frame ``(width, height)``; None when ``image`` is the full frame.
    source_size: tuple[int, int] | None = None
    #: Stream session the frame came from (``StreamInfo.session``): pts restart in a new session.
    session: int = 0

    @property
    def to_source(self) -> tuple[float, float]:
        """Factors ``(sx, sy)`` from image pixels to source pixels (1, 1 for a full-size image)."""
        if self.source_size is None:
            return 1.0, 1.0
        h, w = self.image.shape[:2]
        return self.source_size[0] / w, self.source_size[1] / h


def analysis_size(size: tuple[int, int], model_input: tuple[int, int]) -> tuple[int, int]:
    """``(width, height)`` of the analysis copy of a ``size`` frame for a detector of ``model_input``.

    The frame is divided by the largest whole factor that keeps it at least as large as the letterboxed
    model input: area averaging by a whole factor is 1.7x cheaper than by a fraction (1080p to a 416 px
    model: 480x270 in 2.1 ms instead of 416x234 in 3.6 ms), and the detector's last small resize is cheap.
    """
    scale = min(model_input[0] / size[0], model_input[1] / size[1])
    k = max(1, math.floor(1 / scale)) if scale < 1 else 1
    return size[0] // k, size[1] // k


@dataclass(frozen=True, slots=True)
class EncodedPacket:
    """One compressed video packet as demuxed (decode order), kept in RAM by the pre-event buffer."""

    data: bytes
    pts: int | None
    dts: int
    keyframe: bool


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What a decoder needs to decode a source's packets again later (for clips)."""

    codec: str
    extradata: bytes
    width: int
    height: int
    time_base_num: int
    time_base_den: int
    fps: float
    #: Stream session, numbered by the source: 1 when it opens, one more at each reconnect. pts restart in
    #: a new session, so packets and frames of different sessions never mix.
    session: int = 0


def bottom_centres(xyxy: FloatArray) -> FloatArray:
    """Bottom-centre ``(N,2)`` of boxes ``(N,4)``: where a road user touches the ground."""
    return np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, xyxy[:, 3]], axis=1).astype(np.float32)


def _check_rows(name: str, arr: np.ndarray, n: int, shape_tail: tuple[int, ...] = ()) -> None:
    if arr.shape != (n, *shape_tail):
        raise ValueError(f"{name} must have shape {(n, *shape_tail)}, got {arr.shape}")


@dataclass(frozen=True, slots=True)
class Detections:
    """Detector output for one frame: ``xyxy (N,4)``, ``confidence (N,)``, ``class_id (N,)``."""

    xyxy: FloatArray
    confidence: FloatArray
    class_id: IntArray

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        _check_rows("xyxy", self.xyxy, n, (4,))
        _check_rows("confidence", self.confidence, n)
        _check_rows("class_id", self.class_id, n)

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0,), np.int64)
        )

    @classmethod
    def from_lists(
        cls, xyxy: list[list[float]], confidence: list[float], class_id: list[int]
    ) -> Detections:
        """Small factory for tests and tools."""
        return cls(
            np.asarray(xyxy, np.float32).reshape(-1, 4),
            np.asarray(confidence, np.float32),
            np.asarray(class_id, np.int64),
        )

    def __getitem__(self, mask: npt.NDArray[np.bool_] | IntArray) -> Detections:
        return Detections(self.xyxy[mask], self.confidence[mask], self.class_id[mask])

    def scaled(self, sx: float, sy: float) -> Detections:
        """Boxes multiplied by ``sx`` in x and ``sy`` in y (image pixels to source pixels)."""
        if sx == 1.0 and sy == 1.0:
            return self
        factors = np.array([sx, sy, sx, sy], np.float32)
        return Detections(self.xyxy * factors, self.confidence, self.class_id)


@dataclass(frozen=True, slots=True)
class Tracks:
    """Confirmed tracks after association on one frame.

    ``tracker_id (N,)`` ids are owned by one tracker instance. ``xyxy`` is the detection box when the
    track was matched this frame. ``class_id`` is the track's majority class so far.
    """

    xyxy: FloatArray
    confidence: FloatArray
    class_id: IntArray
    tracker_id: IntArray
    #: Ids of tracks that ended on this frame; their per-track state elsewhere must be freed.
    ended_ids: tuple[int, ...] = field(default=())
    #: ``(N,4)`` box where each track was first detected (before it was confirmed), when the tracker
    #: knows it: counting starts from there, so a track confirmed just past a line still counts.
    origin_xyxy: FloatArray | None = None
    #: ``(N,4)`` the detection box matched before this one, when the tracker knows it: with ``origin_xyxy``
    #: it traces a newly confirmed track's path instead of one straight chord (which cuts corners when
    #: detection runs on every k-th frame only).
    previous_xyxy: FloatArray | None = None

    def __post_init__(self) -> None:
        n = len(self.xyxy)
        _check_rows("xyxy", self.xyxy, n, (4,))
        _check_rows("confidence", self.confidence, n)
        _check_rows("class_id", self.class_id, n)
        _check_rows("tracker_id", self.tracker_id, n)
        if self.origin_xyxy is not None:
            _check_rows("origin_xyxy", self.origin_xyxy, n, (4,))
        if self.previous_xyxy is not None:
            _check_rows("previous_xyxy", self.previous_xyxy, n, (4,))

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls, ended_ids: tuple[int, ...] = ()) -> Tracks:
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0,), np.int64),
            np.zeros((0,), np.int64),
            ended_ids,
        )

    def anchors(self) -> FloatArray:
        """Bottom-centre of each box ``(N,2)``: the ground contact point used for counting."""
        return bottom_centres(self.xyxy)
