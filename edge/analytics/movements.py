"""Turning movements: a road user entering through one approach zone and leaving through another.

Zones are polygons, one per approach, each covering that approach's lanes in both directions. The
geometry is plain 2-D: zones and points may be image pixels (the camera pipeline, with the tracks'
bottom-centres) or ground metres (already-extracted trajectories, :mod:`edge.trajectories`), as long as
both use the same frame. A point inside several zones belongs to the first one listed.

Rules, per track
----------------
* **Entry** is the first zone the track is seen in. A track may be seen outside every zone first (the
  view extends upstream of the zone) and still get its entry when it reaches one.
* **Exit candidate** is the latest zone other than the entry that the track has been in. Returning to
  the entry zone clears it (U-turns are not counted: with one zone per approach, a U-turn and a track
  wobbling on a zone border look the same).
* The movement ``"{entry}->{exit}"`` is **emitted** once, with the track's class at that moment, when
  the track has stayed ``exit_dwell_s`` in its exit candidate (a track clipping the corner of another
  zone on its way is not an exit), or when the track ends (or the stream is flushed) while it has an
  exit candidate, in that zone or after leaving it.
* A track that ends without an entry, or without an exit, is not counted; :class:`MovementStats` counts
  them so that a window's completeness is visible.

Id switches
-----------
A tracker may lose a road user inside the junction (occlusion by a bus, a merge of boxes) and start a new
id for it. The new track is then first seen *outside* every zone, in the middle of the junction: on its
own it has no entry. The rule used here, simple and checkable: a new track first seen outside every zone
takes over the entry zone (and exit candidate) of the nearest track that was **not observed on this
frame**, was last seen at most ``handover_max_gap_s`` ago, has an entry and has not been counted yet, if
that track's position extrapolated at its last velocity is within ``handover_radius`` of the new track.
The old track's state is then dropped, so the road user is counted at most once (if the old id comes back
it starts afresh, usually without an entry). Without such evidence no entry is invented: a track that
appears in the middle of the junction is left uncounted rather than guessed.

Memory: one small state per live track, freed when its id appears in ``ended_ids`` (or on :meth:`flush`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.config import MovementConfig, ZoneConfig
from edge.types import F64, ROAD_USER_CLASSES, BoolArray, Tracks

__all__ = [
    "Movement",
    "MovementAggregator",
    "MovementCounter",
    "MovementStats",
    "MovementWindow",
    "Zone",
    "movement_name",
]



def movement_name(entry: str, exit_: str) -> str:
    return f"{entry}->{exit_}"


@dataclass(frozen=True, slots=True)
class Zone:
    """A named polygon ``(K, 2)`` in any 2-D frame (pixels or metres)."""

    name: str
    polygon: F64

    def __post_init__(self) -> None:
        poly = np.asarray(self.polygon, dtype=np.float64)
        if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < 3:
            raise ValueError(f"zone {self.name!r}: polygon must have shape (K, 2) with K >= 3, got {poly.shape}")
        if not np.isfinite(poly).all():
            raise ValueError(f"zone {self.name!r}: polygon vertices must be finite")
        object.__setattr__(self, "polygon", poly)

    @classmethod
    def from_config(cls, config: ZoneConfig) -> Zone:
        return cls(config.name, np.asarray(config.points_px, dtype=np.float64))

    def contains(self, points: npt.ArrayLike) -> BoolArray:
        """Even-odd point-in-polygon test for points ``(N, 2)`` (points exactly on an edge may go either way)."""
        return _Polygons([self]).inside(np.asarray(points, dtype=np.float64).reshape(-1, 2))[:, 0]


class _Polygons:
    """Several polygons' edges stacked, for an even-odd test of N points against all of them at once."""

    def __init__(self, zones: Sequence[Zone]) -> None:
        self.a = np.concatenate([z.polygon for z in zones])  # edge starts (V, 2)
        self.b = np.concatenate([np.roll(z.polygon, -1, axis=0) for z in zones])  # edge ends
        owner = np.concatenate([np.full(len(z.polygon), k) for k, z in enumerate(zones)])
        self.onehot = (owner[:, None] == np.arange(len(zones))[None, :]).astype(np.int64)  # (V, zones)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.slope = (self.b[:, 0] - self.a[:, 0]) / (self.b[:, 1] - self.a[:, 1])  # dx/dy; inf when horizontal

    def inside(self, p: F64) -> BoolArray:
        """``(N, zones)``: point i inside polygon k (a ray towards +x crosses its edges an odd number of times)."""
        py = p[:, None, 1]
        straddle = (self.a[None, :, 1] > py) != (self.b[None, :, 1] > py)  # never true for a horizontal edge
        with np.errstate(invalid="ignore"):
            x_at = self.a[None, :, 0] + (py - self.a[None, :, 1]) * self.slope[None, :]
        hits = (straddle & (p[:, None, 0] < x_at)).astype(np.int64)
        return np.asarray((hits @ self.onehot) % 2 == 1)


@dataclass(frozen=True, slots=True)
class Movement:
    """One counted movement. Internal only: ``tracker_id`` never leaves the device."""

    entry: str
    exit: str
    class_id: int
    tracker_id: int
    t_s: float

    @property
    def name(self) -> str:
        return movement_name(self.entry, self.exit)


@dataclass(slots=True)
class MovementStats:
    """Running totals of what happened to tracks (anonymous counters, for health and evaluation)."""

    counted: int = 0
    handovers: int = 0
    ended_without_entry: int = 0
    ended_without_exit: int = 0


@dataclass(slots=True)
class _State:
    class_id: int
    entry: str | None
    point: F64
    t_s: float
    velocity: F64 = field(default_factory=lambda: np.zeros(2))
    candidate: str | None = None
    candidate_since: float | None = None  # when the track last entered its candidate zone; None if outside it
    done: bool = False


class MovementCounter:
    """Counts one movement per track between approach zones (rules in the module docstring).

    ``handover_radius`` is in the zones' units (pixels or metres); 0 disables the id-switch handover.
    """

    def __init__(
        self,
        zones: Sequence[Zone],
        *,
        exit_dwell_s: float = 0.5,
        handover_radius: float = 0.0,
        handover_max_gap_s: float = 1.0,
    ) -> None:
        names = [z.name for z in zones]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"need at least 2 zones with unique names, got {names}")
        if not (exit_dwell_s >= 0 and handover_radius >= 0 and handover_max_gap_s > 0):
            raise ValueError("exit_dwell_s and handover_radius must be >= 0, handover_max_gap_s > 0")
        self.zones = list(zones)
        self._polygons = _Polygons(self.zones)
        self.exit_dwell_s = exit_dwell_s
        self.handover_radius = handover_radius
        self.handover_max_gap_s = handover_max_gap_s
        self.stats = MovementStats()
        self._state: dict[int, _State] = {}

    @classmethod
    def from_config(cls, config: MovementConfig) -> MovementCounter:
        """Zones in image pixels, as configured for a camera."""
        return cls(
            [Zone.from_config(z) for z in config.zones],
            exit_dwell_s=config.exit_dwell_s,
            handover_radius=config.handover_radius_px,
            handover_max_gap_s=config.handover_max_gap_s,
        )

    @property
    def movement_names(self) -> list[str]:
        """Every possible movement (entry != exit), in zone order."""
        return [movement_name(a.name, b.name) for a in self.zones for b in self.zones if a.name != b.name]

    @property
    def tracked_count(self) -> int:
        """Tracks with state held (bounded by the tracker's live tracks)."""
        return len(self._state)

    def zone_of(self, points: npt.ArrayLike) -> list[str | None]:
        """The (first) zone containing each point ``(N, 2)``, or None."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        inside = self._polygons.inside(p)
        first = inside.argmax(axis=1)  # the first zone listed wins
        return [self.zones[int(k)].name if inside[i, k] else None for i, k in enumerate(first.tolist())]

    def update_tracks(self, tracks: Tracks, t_s: float) -> list[Movement]:
        """Camera pipeline: zones in pixels, tracks located by their box bottom-centres."""
        return self.update(tracks.tracker_id, tracks.class_id, tracks.anchors(), t_s, tracks.ended_ids)

    def update(
        self,
        tracker_id: npt.ArrayLike,
        class_id: npt.ArrayLike,
        points: npt.ArrayLike,
        t_s: float,
        ended_ids: Iterable[int] = (),
    ) -> list[Movement]:
        """One frame: tracks ``tracker_id (N,)`` of class ``class_id (N,)`` at ``points (N, 2)``.

        ``ended_ids`` are tracks that ended on this frame (a pending movement of theirs is emitted now).
        Returns the movements counted on this frame.
        """
        out: list[Movement] = []
        for tid in ended_ids:
            st = self._state.pop(int(tid), None)
            if st is not None:
                self._finish(int(tid), st, t_s, out)
        ids = np.asarray(tracker_id, dtype=np.int64).reshape(-1)
        classes = np.asarray(class_id, dtype=np.int64).reshape(-1)
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        if not (len(classes) == len(pts) == len(ids)):
            raise ValueError(f"tracker_id, class_id and points must have the same rows, got "
                             f"{len(ids)}, {len(classes)}, {len(pts)}")
        zones = self.zone_of(pts)
        seen = set(ids.tolist())
        for i, tid in enumerate(ids.tolist()):
            zone, p, cls = zones[i], pts[i], int(classes[i])
            st = self._state.get(tid)
            if st is None:
                st = self._handover(p, t_s, seen) if zone is None else None
                if st is None:
                    st = _State(cls, zone, p.copy(), t_s)
                else:
                    st.point, st.t_s, st.class_id = p.copy(), t_s, cls
                self._state[tid] = st
            else:
                dt = t_s - st.t_s
                if dt > 0:
                    st.velocity = 0.5 * st.velocity + 0.5 * (p - st.point) / dt
                st.point, st.t_s, st.class_id = p.copy(), t_s, cls
            self._visit(st, zone, t_s)
            entry, exit_, since = st.entry, st.candidate, st.candidate_since
            if not st.done and entry and exit_ and since is not None and t_s - since >= self.exit_dwell_s:
                self._emit(tid, st, entry, exit_, t_s, out)
        return out

    def flush(self, t_s: float) -> list[Movement]:
        """End of stream: emit every pending movement (tracks with an exit candidate) and free all state."""
        out: list[Movement] = []
        for tid, st in sorted(self._state.items()):
            self._finish(tid, st, t_s, out)
        self._state.clear()
        return out

    # ---------------------------------------------------------------------------------------- internals
    @staticmethod
    def _visit(st: _State, zone: str | None, t_s: float) -> None:
        if zone is None:
            st.candidate_since = None
        elif st.entry is None:
            st.entry = zone
        elif zone == st.entry:
            st.candidate, st.candidate_since = None, None
        elif zone != st.candidate:
            st.candidate, st.candidate_since = zone, t_s
        elif st.candidate_since is None:  # back into the candidate zone after leaving it
            st.candidate_since = t_s

    def _handover(self, p: F64, t_s: float, seen: set[int]) -> _State | None:
        if self.handover_radius <= 0:
            return None
        best: tuple[float, int] | None = None
        for tid, st in self._state.items():
            gap = t_s - st.t_s
            if tid in seen or st.entry is None or st.done or not (0 < gap <= self.handover_max_gap_s):
                continue
            predicted = st.point + st.velocity * gap
            d = math.hypot(*(p - predicted))
            if d <= self.handover_radius and (best is None or d < best[0]):
                best = (d, tid)
        if best is None:
            return None
        self.stats.handovers += 1
        old = self._state.pop(best[1])
        old.candidate_since = None
        return old

    def _finish(self, tid: int, st: _State, t_s: float, out: list[Movement]) -> None:
        if st.done:
            return
        if st.entry is None:
            self.stats.ended_without_entry += 1
        elif st.candidate is None:
            self.stats.ended_without_exit += 1
        else:
            self._emit(tid, st, st.entry, st.candidate, t_s, out)

    def _emit(self, tid: int, st: _State, entry: str, exit_: str, t_s: float, out: list[Movement]) -> None:
        st.done = True
        self.stats.counted += 1
        out.append(Movement(entry, exit_, st.class_id, tid, t_s))


#: movement name -> road-user class -> count (every possible movement and class present).
MovementWindow = dict[str, dict[str, int]]


class MovementAggregator:
    """Counts movements per window, per movement and class; :meth:`close` returns them and starts anew."""

    def __init__(self, movement_names: Iterable[str]) -> None:
        self._names = list(movement_names)
        self._reset()

    def _reset(self) -> None:
        self._counts: MovementWindow = {m: dict.fromkeys(ROAD_USER_CLASSES, 0) for m in self._names}

    def add(self, movements: Iterable[Movement]) -> None:
        for m in movements:
            self._counts.setdefault(m.name, dict.fromkeys(ROAD_USER_CLASSES, 0))[ROAD_USER_CLASSES[m.class_id]] += 1

    def close(self) -> MovementWindow:
        out = self._counts
        self._reset()
        return out
