"""The approved Data Usage Protocol, as data the software enforces (privacy invariants P1-P6).

The city approved AI traffic cameras "so long as only small clips of video are kept, no audio is
collected, and all other data containing images is deleted", with long-term metrics anonymous. The
limits below are that approval in numbers. A configuration may only tighten them: ``edge.config``
refuses at start-up any value beyond a limit, naming the field, the limit and the clause.

Changing a limit here is a change of the protocol itself: bump ``PROTOCOL.version`` and ``id``, and get
it approved. Attestation records publish the id and the effective limits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class Clause:
    id: str
    text: str


@dataclass(frozen=True, slots=True)
class Limits:
    audio_allowed: bool
    max_clip_s: float
    #: Clip seconds kept per camera in any rolling hour and any rolling 24 h: even a near-miss detector that
    #: fires all the time (a bad calibration, a broken model) cannot turn the device into a recorder.
    max_clip_s_per_hour: float
    max_clip_s_per_day: float
    max_retention_days: float
    max_clip_store_bytes: int
    min_window_s: int
    per_object_output_allowed: bool
    frame_export_on_device_allowed: bool


@dataclass(frozen=True, slots=True)
class DataUsageProtocol:
    id: str
    version: int
    clauses: tuple[Clause, ...]
    limits: Limits

    def clause(self, clause_id: str) -> Clause:
        for c in self.clauses:
            if c.id == clause_id:
                return c
        raise KeyError(clause_id)

    def describe(self) -> dict[str, object]:
        """The protocol as plain data, for attestation records."""
        return {"id": self.id, "version": self.version, "limits": asdict(self.limits)}


PROTOCOL: Final = DataUsageProtocol(
    id="city-dot-ai-traffic-camera-v1",
    version=1,
    clauses=(
        Clause("P1", "No audio is collected: audio streams are never opened, decoded, buffered, written or sent."),
        Clause("P2", "No frame outlives its purpose: frames live in memory only; the only images that reach "
                     "disk are the frames of an event clip; no snapshots, thumbnails, debug dumps or caches."),
        Clause("P3", "Clips are short, few and expire: pre-roll + event + post-roll is capped, the clip seconds "
                     "kept per camera are capped per rolling hour and per rolling day (a clip beyond the budget "
                     "is not kept), no frame is stored in two clips, retention is capped in days and bytes, "
                     "and clip writes are atomic."),
        Clause("P4", "Published data is anonymous and aggregate: per-window metrics of at least the minimum "
                     "window; no track ids, trajectories, boxes, images, plates or faces leave the device."),
        Clause("P5", "Configuration can only tighten the protocol."),
        Clause("P6", "The device attests what it runs: software version, protocol and effective limits, "
                     "hashes of config and model, and the start-up checks."),
    ),
    limits=Limits(
        audio_allowed=False,
        max_clip_s=30.0,
        max_clip_s_per_hour=120.0,
        max_clip_s_per_day=600.0,
        max_retention_days=30.0,
        max_clip_store_bytes=8 * 1024**3,
        min_window_s=60,
        per_object_output_allowed=False,
        frame_export_on_device_allowed=False,
    ),
)


def violation(field: str, value: object, limit: object, clause_id: str, fix: str) -> str:
    """The message for a config value beyond a protocol limit: field, value, limit, clause, fix."""
    clause = PROTOCOL.clause(clause_id)
    return (f"{field} = {value} is beyond the limit {limit} of protocol {PROTOCOL.id} clause {clause.id} "
            f"({clause.text.split(':')[0]}); {fix}")
