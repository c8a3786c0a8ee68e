"""Payload contract: the records that leave the pipeline (metrics.jsonl in replay, MQTT on the device).

Every payload is anonymous and aggregate (privacy invariant P4): counts per window, line, direction and
class, and processing health. No track ids, boxes, positions or images. Models forbid extra keys so a
per-object field cannot slip in unnoticed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from edge.types import ROAD_USER_CLASSES

SCHEMA_VERSION: Literal[1] = 1
#: Namespace for deterministic message ids: the same window always gets the same msg_id, so a
#: consumer can upsert and a duplicate delivery never double-counts.
_MSG_NAMESPACE = uuid.UUID("6f1c1f0e-7a55-4d1e-9a3c-2b7f0a6e3c11")

RoadUserClass = Literal["car", "bus", "truck", "motorcycle", "bicycle", "person"]
if set(get_args(RoadUserClass)) != set(ROAD_USER_CLASSES):  # the contract must follow the pipeline
    raise ImportError("RoadUserClass and ROAD_USER_CLASSES disagree")


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WindowHealth(Payload):
    frames: int = Field(ge=0, description="Frames processed in the window.")
    dropped_frames: int = Field(ge=0, description="Frames the source delivered but the pipeline skipped.")
    fps: float = Field(ge=0, description="Processed frames per second of stream time in the window.")


class WindowMetrics(Payload):
    """One anonymous metrics record per camera and window."""

    schema_version: Literal[1] = SCHEMA_VERSION
    msg_id: str = Field(description="Deterministic id of (device, camera, window_start).")
    device: str
    camera: str
    window_start: str = Field(description="ISO 8601 UTC start of the window, e.g. 2024-05-01T07:00:00Z.")
    window_s: int = Field(gt=0)
    partial: bool = Field(description="True for a window cut short by the end of the stream.")
    counts: dict[str, dict[str, dict[RoadUserClass, int]]] = Field(
        description="Line -> direction -> road-user class -> number of crossings."
    )
    health: WindowHealth


def iso_utc(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{t.microsecond:06d}Z" if t.microsecond else "Z"
    )


def window_msg_id(device: str, camera: str, window_start: str, kind: str = "metrics") -> str:
    return str(uuid.uuid5(_MSG_NAMESPACE, f"{kind}/{device}/{camera}/{window_start}"))
