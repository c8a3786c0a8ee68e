"""What an analytic is: the plug-in seam between the tracker and the window records.

An *analytic* (line counts, speeds, turning movements, near-misses, ...) sees every frame as one
:class:`AnalyticsFrame`, keeps its own per-window aggregate, and when a window closes hands over its
:class:`Fragment`: the fields of the window records it owns (``counts``, ``movements``, ``conflicts`` of
the metrics record; the whole body of the speeds record). :class:`~edge.analytics.windows.WindowAggregator`
merges the fragments under the record header; :mod:`edge.analytics.registry` decides which analytics a
camera (or a trajectory study) runs. The call order per camera is::

    for each frame, in order:   update(frame) -> near-misses, then forget(frame.ended_ids)
    when a window closes:       close() -> Fragment (and the analytic starts its next window)
    at the end of the stream:   flush(t_s) -> near-misses, then the last close()
    once, at start-up:          worst_case() -> Fragment (payload sizing; must not change any state)

The driver (``edge.pipeline``, ``edge.trajectories``) closes windows *before* it hands over a frame of a
later window, so a frame's contribution always lands in its own window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

import numpy as np

from edge.analytics.conflicts import NearMiss
from edge.analytics.kinematics import GroundTracks
from edge.analytics.lines import Crossing
from edge.types import F64, Tracks

__all__ = ["Analytic", "AnalyticsFrame", "Fragment", "RecordKind", "find", "flush_all", "merge", "update_all"]

#: The window records a fragment can add fields to (``edge.payloads.WindowMetrics`` / ``WindowSpeeds``).
RecordKind = Literal["metrics", "speeds"]

A = TypeVar("A")


@dataclass(frozen=True, slots=True)
class AnalyticsFrame:
    """Everything an analytic sees of one frame (``t_s`` is the frame's media or monotonic time).

    ``tracks`` are the frame's confirmed tracks (image pixels; for trajectory files, zero-size boxes at
    the ground points); ``crossings`` the line crossings the camera's line counter found on this frame;
    ``ground`` the ground-plane tracks of a calibrated camera (None otherwise); ``points`` the tracks'
    positions ``(N, 2)`` in the zones' frame when they are not the boxes' bottom-centres (trajectory
    files hand over their float64 metres).
    """

    t_s: float
    tracks: Tracks
    crossings: Sequence[Crossing] = ()
    ground: GroundTracks | None = None
    points: F64 | None = None

    @property
    def ended_ids(self) -> tuple[int, ...]:
        """Tracks that ended on this frame: whatever an analytic holds per track for them must go."""
        return self.tracks.ended_ids

    def positions(self) -> F64:
        """Each track's position ``(N, 2)``, float64: ``points`` if given, else the box bottom-centres."""
        if self.points is not None:
            return self.points
        return np.asarray(self.tracks.anchors(), dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Fragment:
    """The part of one window's records an analytic owns: record field name -> value, per record.

    The payload models (``edge.payloads``) validate the merged fields and forbid unknown keys, so a
    fragment can only fill fields the contract has. A window gets a speeds record when some analytic
    gives ``speeds`` fields.
    """

    metrics: Mapping[str, object] = field(default_factory=dict)
    speeds: Mapping[str, object] = field(default_factory=dict)


class Analytic(Protocol):
    """One analytic of one camera; owns all of its state (call order in the module docstring)."""

    def update(self, frame: AnalyticsFrame) -> Sequence[NearMiss]:
        """Account one frame; return the near-misses it completed (most analytics: none)."""
        ...

    def forget(self, ended_ids: tuple[int, ...]) -> None:
        """Free every per-track state of these tracks (called after ``update`` of the frame they ended on)."""
        ...

    def close(self) -> Fragment:
        """The current window's fragment; then start the next window."""
        ...

    def flush(self, t_s: float) -> Sequence[NearMiss]:
        """End of stream at ``t_s``: count whatever is pending into the current window."""
        ...

    def worst_case(self) -> Fragment:
        """The largest fragment this analytic can produce in one window (for the 4 KB payload check)."""
        ...


def update_all(analytics: Iterable[Analytic], frame: AnalyticsFrame) -> list[NearMiss]:
    """One frame through every analytic, in order; their near-misses, in the same order."""
    found: list[NearMiss] = []
    for analytic in analytics:
        found.extend(analytic.update(frame))
        analytic.forget(frame.ended_ids)
    return found


def flush_all(analytics: Iterable[Analytic], t_s: float) -> list[NearMiss]:
    """End of stream: flush every analytic, in order; their near-misses, in the same order."""
    return [nm for analytic in analytics for nm in analytic.flush(t_s)]


def merge(fragments: Iterable[Fragment]) -> dict[RecordKind, dict[str, object]]:
    """The fields of each record from these fragments; two fragments that fill one field are a wiring
    error (ValueError naming the field)."""
    merged: dict[RecordKind, dict[str, object]] = {"metrics": {}, "speeds": {}}
    for fragment in fragments:
        parts: tuple[tuple[RecordKind, Mapping[str, object]], ...] = (
            ("metrics", fragment.metrics), ("speeds", fragment.speeds))
        for kind, fields in parts:
            target = merged[kind]
            if twice := sorted(target.keys() & fields.keys()):
                raise ValueError(f"two analytics fill the {kind} record's field(s) {', '.join(twice)}; "
                                 "each field must have one owner (edge/analytics/registry.py)")
            target.update(fields)
    return merged


def find(analytics: Iterable[object], kind: type[A]) -> A | None:
    """The first analytic of type ``kind`` in ``analytics``, or None."""
    return next((a for a in analytics if isinstance(a, kind)), None)
