"""Directional line counting with hysteresis.

A track is counted when the bottom-centre of its box (its ground contact point) moves from one side of
a counting line to the other *through* the line. Each line has a dead band of ``hysteresis_px`` on
both sides: a side only becomes the track's confirmed side once the point is outside the band, so a
box jittering on the line, or a queue creeping over a stop line, never flips sides back and forth.

Two more guards keep a track from counting a crossing it did not make:

* *Confirmation in time.* A crossing counts once the point has stayed beyond the band on the far side for
  ``confirm_s`` (or the track ended there). When a box re-forms (the detector finds the skip of a truck
  alone, then the whole truck; two road users merge into one box and part again), the bottom-centre jumps
  along the line and can flip sides for a frame or two; it flips back within ``confirm_s`` and counts
  nothing.
* *The image border.* A box cut by the left, right or bottom border of the image has no true bottom-centre:
  it zigzags as the road user enters or leaves the view. While a track's box touches one of those borders
  its sides stay as they were; once the box is clear, the crossing is judged from the last point seen clear
  of the border (``counting_border``, with the ``BORDER_FRAC`` of ``edge.analytics.kinematics``).

A track counts at most once per line and direction; it counts in both directions only when it really comes
back: both crossings confirmed, clear of the border. A crossing is counted as the class
``edge.analytics.riders.CountingClasses`` gives the track (its majority class on the frame it crossed,
except for riders of two-wheelers), and a rider and its two-wheeler count once between them.

Sign convention (image pixels, y down): for a segment from ``a`` to ``b`` a point ``p`` is on the
*left* side when ``cross(b - a, p - a) < 0`` (the left as seen on screen, facing from ``a`` to ``b``).
The first direction name of a line is the crossing towards its left side, the second the crossing
towards its right side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from edge.analytics.kinematics import BORDER_FRAC, GroundTracks
from edge.analytics.riders import CountingClasses
from edge.config import LineConfig, default_direction_names
from edge.config.counting import RiderConfig
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
    side: int = 0  # -1 left, +1 right, 0 not yet known: the confirmed side
    point: Vec = field(default_factory=lambda: np.zeros(2))
    counted: int = 0  # bit 1: first direction counted, bit 2: second
    pending: int = 0  # the far side of a crossing awaiting confirmation, 0 when none
    pending_t: float = 0.0  # when that crossing was seen
    pending_class: int = 0  # the track's majority class then: the class it counts as


@dataclass(slots=True)
class _TrackState:
    lines: list[_LineState]
    class_id: int = 0  # the track's majority class when last observed


def counting_border(xyxy: npt.NDArray[np.float32], image_size_px: tuple[int, int] | None) -> npt.NDArray[np.bool_]:
    """Boxes ``(N,4)`` cut by the left, right or bottom image border (within ``BORDER_FRAC`` of it): their
    bottom-centre is not the road user's. A cut at the top leaves the bottom-centre where it is."""
    if image_size_px is None:
        return np.zeros(len(xyxy), np.bool_)
    w, h = image_size_px
    mx, my = BORDER_FRAC * w, BORDER_FRAC * h
    out: npt.NDArray[np.bool_] = (xyxy[:, 0] <= mx) | (xyxy[:, 2] >= w - mx) | (xyxy[:, 3] >= h - my)
    return out


class LineCounter:
    """Counts directional crossings of every line. State per track is freed when the track ends.

    ``confirm_s``: a crossing counts once the track has stayed beyond the dead band on the far side for this
    long, or ended there (``flush`` counts what is pending at the end of a stream); 0 counts at once.
    ``riders``: the rules for person tracks that count as two-wheelers (``edge.analytics.riders``); None
    counts every track as its majority class.
    """

    def __init__(self, lines: tuple[LineConfig, ...], hysteresis_px: float, *, confirm_s: float = 0.0,
                 riders: RiderConfig | None = None) -> None:
        self.lines = [CountingLine(c) for c in lines]
        self.hysteresis_px = hysteresis_px
        self.confirm_s = confirm_s
        self.classes = CountingClasses(riders) if riders is not None else None
        self._state: dict[int, _TrackState] = {}

    def _step(self, track: _TrackState, p: Vec, tid: int, t_s: float) -> list[Crossing]:
        """Move track ``tid`` to point ``p``; the crossings this completes."""
        crossings: list[Crossing] = []
        for k, (line, st) in enumerate(zip(self.lines, track.lines, strict=True)):
            d = line.signed_distance(p)
            if abs(d) <= self.hysteresis_px:
                continue  # inside the dead band: keep the confirmed side (and any pending crossing)
            side = -1 if d < 0 else 1
            if st.pending:
                st.point = p
                if side != st.pending:
                    st.pending = 0  # back before it was confirmed: a box that re-formed, not a crossing
                elif t_s - st.pending_t >= self.confirm_s:
                    crossings.extend(self._confirm(track, k, tid, t_s))
            elif st.side and side != st.side and line.crossed_by(st.point, p):
                st.pending, st.pending_t, st.pending_class, st.point = side, t_s, track.class_id, p
                if self.confirm_s <= 0:
                    crossings.extend(self._confirm(track, k, tid, t_s))
            else:
                st.side, st.point = side, p
        return crossings

    def _confirm(self, track: _TrackState, k: int, tid: int, t_s: float) -> list[Crossing]:
        """Confirm the pending crossing of line ``k``: the crossing, unless this track or the same road
        user's other track (a rider and its two-wheeler) has already counted that direction."""
        st = track.lines[k]
        side, st.side, st.pending = st.pending, st.pending, 0
        bit = 1 if side < 0 else 2
        if st.counted & bit:
            return []
        st.counted |= bit
        class_id = st.pending_class
        if self.classes is not None:
            partners = [self._state[p].lines[k] for p in self.classes.partners(tid, class_id) if p in self._state]
            already = any(p.counted & bit for p in partners)
            for p in partners:
                p.counted |= bit
            if already:
                return []
            class_id = self.classes.class_of(tid, class_id)
        line = self.lines[k]
        direction = line.directions[0] if side < 0 else line.directions[1]
        return [Crossing(line.name, direction, class_id, tid, t_s)]

    def _pending(self, tid: int, t_s: float) -> list[Crossing]:
        """Confirm every pending crossing of track ``tid`` (it ended, or the stream did, on the far side)."""
        track = self._state[tid]
        return [c for k, st in enumerate(track.lines) if st.pending for c in self._confirm(track, k, tid, t_s)]

    def flush(self, t_s: float) -> list[Crossing]:
        """End of stream: the crossings still awaiting confirmation, counted (no later frame can undo them)."""
        return [c for tid in sorted(self._state) for c in self._pending(tid, t_s)]

    @property
    def tracked_count(self) -> int:
        """Tracks with state held (bounded by the tracker's live tracks)."""
        return len(self._state)

    def _end(self, ended_ids: tuple[int, ...], t_s: float) -> list[Crossing]:
        """Count the pending crossings of tracks that ended, then free their state (a two-wheeler's counted
        crossings pass to the riders still tracked, so a rider crossing later does not count it again)."""
        crossings = [c for tid in ended_ids if tid in self._state for c in self._pending(tid, t_s)]
        for tid in ended_ids:
            track = self._state.pop(tid, None)
            if track is None or self.classes is None:
                continue
            for other in self.classes.partners(tid, track.class_id):
                if other in self._state:
                    for mine, theirs in zip(track.lines, self._state[other].lines, strict=True):
                        theirs.counted |= mine.counted
        if self.classes is not None:
            self.classes.forget(ended_ids)
        return crossings

    def _start(self, origin: Vec | None) -> _TrackState:
        """A new track's state, on the side of each line where it was first seen (``origin``) if known."""
        track = _TrackState([_LineState() for _ in self.lines])
        if origin is not None:  # start from where the road user was first seen
            for line, st in zip(self.lines, track.lines, strict=True):
                d = line.signed_distance(origin)
                if abs(d) > self.hysteresis_px:
                    st.side, st.point = (-1 if d < 0 else 1), origin
        return track

    def update(self, tracks: Tracks, t_s: float, image_size_px: tuple[int, int] | None = None,
               ground: GroundTracks | None = None) -> list[Crossing]:
        """One frame's tracks at ``t_s``; the crossings confirmed on it. With the image's ``(width, height)``,
        a box cut by its left, right or bottom border never moves a track to the other side of a line (its
        bottom-centre is not the road user's): the track changes sides once its box is clear of the border.
        ``ground``: the frame's ground tracks on a calibrated camera (rider speeds in m/s)."""
        crossings = self._end(tracks.ended_ids, t_s)
        if not self.lines:
            return crossings
        border = counting_border(tracks.xyxy, image_size_px)
        if self.classes is not None:
            self.classes.update(tracks, t_s, border, ground)
        anchors = tracks.anchors().astype(np.float64)
        origins = self._clear(tracks.origin_xyxy, image_size_px)
        previous = self._clear(tracks.previous_xyxy, image_size_px)
        for i, tid in enumerate(tracks.tracker_id.tolist()):
            track = self._state.get(tid)
            path = [anchors[i]]
            if track is None:
                track = self._state[tid] = self._start(origins[i] if origins is not None else None)
                if previous is not None and previous[i] is not None:  # follow its path through the previous box
                    path.insert(0, previous[i])
            track.class_id = int(tracks.class_id[i])
            if border[i]:
                continue  # cut by the border: keep its sides until the box is clear of it
            for p in path:
                crossings.extend(self._step(track, p, tid, t_s))
        return crossings

    @staticmethod
    def _clear(xyxy: npt.NDArray[np.float32] | None, image_size_px: tuple[int, int] | None) -> list[Vec | None] | None:
        """Bottom-centres of ``xyxy`` (None for boxes cut by the border), or None without boxes."""
        if xyxy is None:
            return None
        points = bottom_centres(xyxy).astype(np.float64)
        cut = counting_border(xyxy, image_size_px)
        return [None if cut[i] else points[i] for i in range(len(points))]
