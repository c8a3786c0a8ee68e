"""Directional line counting with hysteresis.

A track is counted when the bottom-centre of its box (its ground contact point) moves from one side of
a counting line to the other *through* the line. Each line has a dead band of ``hysteresis_px`` on
both sides: a side only becomes the track's confirmed side once the point is outside the band, so a
box jittering on the line, or a queue creeping over a stop line, never flips sides back and forth.
A track counts at most once per line and direction.

Sign convention (image pixels, y down): for a segment from ``a`` to ``b`` a point ``p`` is on the
*left* side when ``cross(b - a, p - a) < 0`` (the left as seen on screen, facing from ``a`` to ``b``).
The first direction name of a line is the crossing towards its left side, the second the crossing
towards its right side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.config import LineConfig, default_direction_names
from edge.types import Tracks, bottom_centres

Vec = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Crossing:
    """One counted line crossing. Internal only: ``tracker_id`` never leaves the device."""

    line: str
    direction: str
    class_id: int
    tracker_id: int
    t_s: float


def _cross(a: Vec, b: Vec) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


def _segments_intersect(p: Vec, q: Vec, a: Vec, b: Vec) -> bool:
    """True when segment p-q intersects segment a-b (touching counts)."""
    d1, d2 = _cross(b - a, p - a), _cross(b - a, q - a)
    d3, d4 = _cross(q - p, a - p), _cross(q - p, b - p)
    return d1 * d2 <= 0 and d3 * d4 <= 0


class CountingLine:
    """Geometry of one polyline with its two direction names."""

    def __init__(self, config: LineConfig) -> None:
        self.name = config.name
        self.points: Vec = np.asarray(config.pixel_points, np.float64)
        self.directions = config.directions or default_direction_names(config.pixel_points)
        self._a = self.points[:-1]
        self._ab = self.points[1:] - self.points[:-1]
        self._len2 = np.sum(self._ab**2, axis=1)

    def signed_distance(self, p: Vec) -> float:
        """Distance from ``p`` to the nearest segment, negative on the left side of that segment."""
        ap = p - self._a
        t = np.clip(np.sum(ap * self._ab, axis=1) / self._len2, 0.0, 1.0)
        offset = p - (self._a + t[:, None] * self._ab)
        dist = np.hypot(offset[:, 0], offset[:, 1])
        i = int(np.argmin(dist))
        return float(dist[i]) if _cross(self._ab[i], ap[i]) >= 0 else -float(dist[i])

    def crossed_by(self, p: Vec, q: Vec) -> bool:
        return any(_segments_intersect(p, q, a, b) for a, b in zip(self._a, self.points[1:], strict=True))


@dataclass(slots=True)
class _LineState:
    side: int = 0  # -1 left, +1 right, 0 not yet known
    point: Vec = field(default_factory=lambda: np.zeros(2))
    counted: int = 0  # bit 1: first direction counted, bit 2: second


class LineCounter:
    """Counts directional crossings of every line. State per track is freed when the track ends."""

    def __init__(self, lines: tuple[LineConfig, ...], hysteresis_px: float) -> None:
        self.lines = [CountingLine(c) for c in lines]
        self.hysteresis_px = hysteresis_px
        self._state: dict[int, list[_LineState]] = {}

    def _step(self, states: list[_LineState], p: Vec, tid: int, class_id: int, t_s: float) -> list[Crossing]:
        """Move track ``tid`` to point ``p``; the crossings this completes."""
        crossings: list[Crossing] = []
        for line, st in zip(self.lines, states, strict=True):
            d = line.signed_distance(p)
            if abs(d) <= self.hysteresis_px:
                continue  # inside the dead band: keep the confirmed side
            side = -1 if d < 0 else 1
            if st.side and side != st.side and line.crossed_by(st.point, p):
                bit = 1 if side < 0 else 2
                if not st.counted & bit:
                    st.counted |= bit
                    direction = line.directions[0] if side < 0 else line.directions[1]
                    crossings.append(Crossing(line.name, direction, class_id, tid, t_s))
            st.side, st.point = side, p
        return crossings

    @property
    def tracked_count(self) -> int:
        """Tracks with state held (bounded by the tracker's live tracks)."""
        return len(self._state)

    def update(self, tracks: Tracks, t_s: float) -> list[Crossing]:
        for tid in tracks.ended_ids:
            self._state.pop(tid, None)
        crossings: list[Crossing] = []
        if not self.lines:
            return crossings
        anchors = tracks.anchors().astype(np.float64)
        origins = bottom_centres(tracks.origin_xyxy).astype(np.float64) if tracks.origin_xyxy is not None else None
        previous = (bottom_centres(tracks.previous_xyxy).astype(np.float64)
                    if tracks.previous_xyxy is not None else None)
        for i, tid in enumerate(tracks.tracker_id.tolist()):
            path = [anchors[i]]
            states = self._state.get(tid)
            if states is None:
                states = self._state[tid] = [_LineState() for _ in self.lines]
                if origins is not None:  # start from where the road user was first seen
                    for line, st in zip(self.lines, states, strict=True):
                        d = line.signed_distance(origins[i])
                        if abs(d) > self.hysteresis_px:
                            st.side, st.point = (-1 if d < 0 else 1), origins[i]
                if previous is not None:  # and follow its path through the previous detection
                    path.insert(0, previous[i])
            for p in path:
                crossings.extend(self._step(states, p, tid, int(tracks.class_id[i]), t_s))
        return crossings
