"""Payload contract: the records that leave the pipeline (metrics.jsonl in replay, MQTT on the device).

Every payload is anonymous and aggregate (privacy invariant P4): counts per window, line, direction and
class, and processing health. No track ids, boxes, positions or images. Models forbid extra keys so a
per-object field cannot slip in unnoticed.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from edge.types import ROAD_USER_CLASSES

SCHEMA_VERSION: Literal[2] = 2
#: Namespace for deterministic message ids: the same window always gets the same msg_id, so a
#: consumer can upsert and a duplicate delivery never double-counts.
_MSG_NAMESPACE = uuid.UUID("6f1c1f0e-7a55-4d1e-9a3c-2b7f0a6e3c11")

RoadUserClass = Literal["car", "bus", "truck", "motorcycle", "bicycle", "person"]
if set(get_args(RoadUserClass)) != set(ROAD_USER_CLASSES):  # the contract must follow the pipeline
    raise ImportError("RoadUserClass and ROAD_USER_CLASSES disagree")


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def to_json(self) -> str:
        """The one serialisation of every payload, in metrics.jsonl and on MQTT alike: a field without a
        value (not configured, not measured, withheld) is left out, never written as null."""
        return self.model_dump_json(exclude_none=True)


class WindowHealth(Payload):
    frames: int = Field(ge=0, description="Frames processed in the window.")
    dropped_frames: int = Field(ge=0, description="Frames the source delivered but the pipeline skipped.")
    fps: float = Field(ge=0, description="Processed frames per second of stream time in the window.")
    clips_started: int | None = Field(
        None, ge=0, description="Event clips begun in the window within the clip-seconds budget (each is then "
        "written, or dropped and counted in the device health); absent when clips are off.",
    )
    clips_dropped_budget: int | None = Field(
        None, ge=0, description="Near-misses in the window that got no clip (or no longer clip) because the "
        "camera's clip-seconds budget per hour or day was spent (protocol P3); absent when clips are off.",
    )


class SpeedStats(Payload):
    """Speeds of one line, direction and class in one window. The speed statistics are left out below
    ``speeds.min_count_published`` measured crossings, so a record never reveals one road user's speed."""

    count: int = Field(ge=0, description="Crossings with a measured speed.")
    unmeasured: int = Field(ge=0, description="Crossings whose ground velocity had not settled yet (no speed).")
    mean_kmh: float | None = Field(None, ge=0, description="Mean speed, km/h; absent below the published minimum.")
    p50_kmh: float | None = Field(None, ge=0, description="Median speed, km/h; absent below the published minimum.")
    p85_kmh: float | None = Field(
        None, ge=0, description="85th percentile speed (the traffic engineers' standard), km/h; absent below the "
        "published minimum.",
    )
    over_limit: int = Field(ge=0, description="Crossings faster than speed_limit_kmh.")


class ConflictCounts(Payload):
    """Near-misses that ended in the window, and the exposure they are set against."""

    by_type: dict[Literal["rear_end", "crossing", "angled"], dict[Literal["high", "medium", "low"], int]] = Field(
        description="Conflict type -> severity -> number of near-misses."
    )
    vulnerable: int = Field(ge=0, description="Near-misses involving a person, bicycle or motorcycle.")
    vehicles_entering: int = Field(ge=0, description="Motor vehicles first seen (confirmed tracks) in the window.")
    per_1000_vehicles: float | None = Field(
        None, ge=0, description="Near-misses per 1,000 vehicles entering; null when none entered."
    )


class WindowHeader(Payload):
    """What every per-window record starts with; (device, camera, window_start) is its key."""

    schema_version: Literal[2] = SCHEMA_VERSION
    msg_id: str = Field(description="Deterministic id of (device, camera, window_start, record kind).")
    device: str
    camera: str
    window_start: str = Field(description="ISO 8601 UTC start of the window, e.g. 2024-05-01T07:00:00Z.")
    window_s: int = Field(gt=0)
    partial: bool = Field(description="True for a window cut short by the end of the stream.")


class WindowMetrics(WindowHeader):
    """One anonymous metrics record per camera and window."""

    counts: dict[str, dict[str, dict[RoadUserClass, int]]] = Field(
        description="Line -> direction -> road-user class -> number of crossings."
    )
    movements: dict[str, dict[RoadUserClass, int]] | None = Field(
        None, description="Turning movement (e.g. 'Nord->Ost') -> class -> count; zeros left out. Present when "
        "zones are configured.",
    )
    conflicts: ConflictCounts | None = Field(None, description="Near-misses; present when the camera is calibrated.")
    health: WindowHealth


class WindowSpeeds(WindowHeader):
    """Speeds at one counting line per window, for a calibrated camera: a record per line (with the counts
    they would not fit the 4 KB payload limit). Keyed by (device, camera, window_start, line)."""

    line: str = Field(description="The counting line, as named in the config.")
    speed_limit_kmh: float = Field(gt=0, description="The limit behind over_limit.")
    speeds: dict[str, dict[RoadUserClass, SpeedStats]] = Field(
        description="Direction -> class -> speed statistics; classes without crossings are left out."
    )


def iso_utc(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{t.microsecond:06d}Z" if t.microsecond else "Z"
    )


def window_msg_id(device: str, camera: str, window_start: str, kind: str = "metrics") -> str:
    return str(uuid.uuid5(_MSG_NAMESPACE, f"{kind}/{device}/{camera}/{window_start}"))


# ------------------------------------------------------------------------------ device payloads (MQTT)
#: What a message is, for the outbox's drop order and TTL and for the topic it goes to.
MessageKind = Literal["event", "metrics", "health", "status"]
#: FHWA SSAM conflict types; tests check it equals ``edge.analytics.surrogate.ConflictType``.
ConflictKind = Literal["rear_end", "crossing", "angled"]

_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class NearMissEvent(Payload):
    """One near-miss (traffic conflict) between two road users on ``{prefix}/{device}/{camera}/events``.

    Anonymous like the metrics: the classes of the two road users, the surrogate safety measures and the
    conflict's location rounded to a metre; never track ids, boxes, trajectories, plates or images.
    """

    schema_version: Literal[2] = SCHEMA_VERSION
    msg_id: str = Field(max_length=64, description="Unique id of the event (UUID); a duplicate delivery repeats it.")
    device: str = Field(pattern=_NAME)
    camera: str = Field(pattern=_NAME)
    time: str = Field(max_length=32, description="ISO 8601 UTC instant of the conflict, e.g. 2024-05-01T07:00:03.2Z.")
    conflict_type: ConflictKind = Field(description="From the angle between headings (FHWA SSAM v2).")
    severity: Literal["high", "medium", "low"] = Field(
        description="high: a serious conflict after the Swedish Traffic Conflict Technique (stopping from the "
        "conflicting speed within the time to accident needs more than the configured deceleration) or a "
        "collision; medium: time to accident (or PET) at most the medium bound; low: the rest."
    )
    road_users: tuple[RoadUserClass, RoadUserClass] = Field(description="Classes of the two road users.")
    speeds_mps: tuple[float, float] = Field(description="Ground speeds of the two road users at the conflict, m/s.")
    vulnerable: bool = Field(description="True when a person, bicycle or motorcycle is involved.")
    ttc_s: float | None = Field(
        None, ge=0, description="Time to accident: the lowest evidenced time to collision in seconds, if closing."
    )
    pet_s: float | None = Field(None, ge=0, description="Post-encroachment time in seconds, if their paths crossed.")
    drac_mps2: float | None = Field(None, ge=0, description="Deceleration needed to avoid the collision, m/s^2.")
    time_exposed_s: float = Field(
        0.0, ge=0, description="How long the TTC stayed at or below the threshold without a break, seconds."
    )
    conflicting_speed_mps: float | None = Field(
        None, ge=0, description="Speed of the evasive (or else the faster) road user at the time to accident, m/s."
    )
    evasive_deceleration_mps2: float | None = Field(
        None, description="Largest speed drop rate of either road user during the conflict, m/s^2 (evasive action)."
    )
    collision: bool = Field(False, description="A collision: the footprints overlapped after a sustained collision "
                            "course, or touched while closing fast and the striking road user's motion then broke.")
    location_m: tuple[int, int] = Field(
        description="Where it happened in the camera's local ground frame, rounded to the metre."
    )
    clip: str | None = Field(None, max_length=96, description="Id of the clip that holds it, when clips are on.")


class DeviceStatus(Payload):
    """Retained availability on ``{prefix}/{device}/status``: ``online`` after every connect, ``offline`` as
    the last will (sent by the broker when the device vanishes) and on a clean stop."""

    schema_version: Literal[2] = SCHEMA_VERSION
    msg_id: str = Field(max_length=64, description="Unique id (UUID) of this status message.")
    device: str = Field(pattern=_NAME)
    state: Literal["online", "offline"]
    attestation: dict[str, Any] | None = Field(
        None,
        description="With online only: the device's attestation record (edge.attest: software version, "
        "protocol and effective limits, config and model sha256, start-up checks).",
    )


class OutboxHealth(Payload):
    depth: int = Field(ge=0, description="Messages waiting in the outbox for a broker acknowledgement.")
    size_bytes: int = Field(ge=0, description="Bytes the outbox uses on disk, write-ahead log included.")
    max_bytes: int = Field(gt=0, description="The outbox's budget on disk.")
    oldest_age_s: float = Field(ge=0, description="Age of the oldest waiting message, 0 when empty.")
    dropped_full: dict[MessageKind, int] = Field(description="Messages dropped to stay within the budget, per kind.")
    dropped_ttl: dict[MessageKind, int] = Field(description="Messages dropped unsent after their TTL, per kind.")
    rejected: dict[MessageKind, int] = Field(description="Messages the broker refused for good (PUBACK failure).")
    dropped_error: dict[MessageKind, int] = Field(
        description="Messages lost to a disk write error other than a full disk, per kind."
    )


class MqttHealth(Payload):
    published: int = Field(ge=0, description="PUBLISH packets sent (resends included).")
    acked: int = Field(ge=0, description="PUBLISH packets the broker acknowledged with success.")
    errors: int = Field(ge=0, description="PUBACK failures and failed connection attempts.")
    reconnects: int = Field(ge=0, description="Successful connections after the first.")
    connect_attempts: int = Field(ge=0, description="Connection attempts, successful or not.")
    too_large: int = Field(
        0, ge=0, description="Messages over the broker's Maximum Packet Size held in the outbox (kept, never "
        "deleted for their size, and tried again after the next reconnect), on the latest connection that met "
        "any; 0 once a connection sends everything.",
    )


class CameraHealth(Payload):
    state: Literal["connecting", "streaming", "reconnecting", "closed", "crashed", "stopped", "failed"] = Field(
        description="The camera source's state, or the worker's when it is not running; \"failed\": the worker "
        "crashed too often (its restart budget per hour is spent) and stays down."
    )
    frames: int = Field(ge=0, description="Frames processed since start.")
    fps_in: float = Field(ge=0, description="Frames the source delivered per second since the last health record.")
    fps_out: float = Field(ge=0, description="Frames processed per second since the last health record.")
    dropped_frames: int = Field(ge=0, description="Frames the live reader replaced before they were processed.")
    decode_errors: int = Field(
        0, ge=0, description="Video packets of the camera's source that did not decode (corrupt data, skipped), "
        "plus one for a file that ended early (truncated or damaged): a camera since its worker started, a file "
        "since it was last opened.",
    )
    restarts: int = Field(ge=0, description="Times the watchdog restarted this camera's worker.")
    frame_age_s: float | None = Field(None, ge=0, description="Seconds since the last processed frame.")
    clips_written: int = Field(ge=0)
    clips_dropped: int = Field(ge=0, description="Clips not written: busy writer, disk full, redaction, errors.")
    clips_dropped_budget: int = Field(
        ge=0, description="Clips (or extensions of one) refused since start because the camera's "
        "clip-seconds budget per hour or day was spent (protocol P3); their events were still published.",
    )
    clip_s_last_hour: float = Field(
        ge=0, description="Clip seconds counted against the hourly budget now (kept or being written)."
    )
    clip_s_last_day: float = Field(
        ge=0, description="Clip seconds counted against the daily budget now (kept or being written)."
    )
    clip_store_bytes: int = Field(ge=0, description="Bytes the camera's clips use in the clip store.")


class DeviceHealth(Payload):
    """Delivery health on ``{prefix}/{device}/health``: after each connect and periodically while connected."""

    schema_version: Literal[2] = SCHEMA_VERSION
    msg_id: str = Field(max_length=64, description="Unique id (UUID) of this health message.")
    device: str = Field(pattern=_NAME)
    time: str = Field(max_length=32, description="ISO 8601 UTC instant the figures were taken.")
    alarm: str | None = Field(
        None, max_length=200,
        description="Open configuration fault (refused login, untrusted broker certificate, refused topic); "
        "absent when there is none.",
    )
    outbox: OutboxHealth
    mqtt: MqttHealth
    cameras: dict[str, CameraHealth] = Field(
        default_factory=dict, max_length=16,
        description="Per camera: pipeline and source state (`edge run`); empty from a replay that publishes.",
    )
    cpu_temp_c: float | None = Field(None, description="Hottest thermal zone, when the kernel exposes one.")


#: Largest payload the device sends (the broker's max_packet_size should be just above it): an image
#: cannot travel even by mistake. A camera whose window records could exceed it is refused at start-up
#: (``edge.prepare``, from the analytics' worst-case fragments).
MAX_PAYLOAD_BYTES = 4096

