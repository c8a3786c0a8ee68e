"""The class a track counts as: a ``person`` track that is the rider of a two-wheeler counts as that two-wheeler.

The tracker gives each track its confidence-weighted majority class (``edge.track``). That is right for every
class but one: a detector often finds the rider of a bicycle, scooter or motorcycle and misses the vehicle
under them (or finds it on a few frames only), and the track becomes a ``person``. Counted as a pedestrian,
a scooter vanishes from the vehicle counts. :class:`CountingClasses` is the one place that decides the class
a crossing is counted as (:meth:`CountingClasses.class_of`), with two rules for ``person`` tracks:

1. *Rides with a two-wheeler.* On each frame a person box that overlaps a ``bicycle`` or ``motorcycle``
   track's box by ``overlap_frac`` of the smaller box rides with it. A person track that rode with one on at
   least ``ride_frames_frac`` of the frames both were seen on (and on ``_MIN_RIDE_FRAMES`` or more) is its
   rider: a two-wheeler found on a few frames only, or lost before the line, still makes its rider one; a
   cyclist passing a pedestrian shares the frames that follow without the box. The rider counts as
   that two-wheeler's class, and the pair counts once per line and direction
   (:meth:`CountingClasses.partners`, used by ``edge.analytics.lines``). Only a two-wheeler that moves
   (``_MOVING_HEIGHTS_PER_S``) is ridden: a pedestrian walking past a parked bicycle is a pedestrian.
2. *Moves like a vehicle.* A person track faster than a pedestrian for ``sustain_s`` counts as a bicycle,
   or as a motorcycle when also faster than a bicycle for that long. Calibrated cameras use the ground
   speed of ``edge.analytics.kinematics`` (m/s); others the speed of the box's bottom-centre in box heights
   per second, measured over ``_BASELINE_S`` so that box jitter (1-2.5 % of the box per frame) stays far
   below the thresholds. Boxes cut by the image border (``at_border``) are not measured. The class, once
   reached, is kept for the rest of the track: a cyclist waiting at a red light is still a cyclist.

Pedestrians on the footway walk (1.2-1.5 m/s), so they still count as persons; the thresholds and their
sources are in :class:`edge.config.counting.RiderConfig`.

Memory: one fixed-size record per live track (counters and one reference point, no per-frame history),
freed when the track ends.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from edge.analytics.kinematics import GroundTracks
from edge.config.counting import RiderConfig
from edge.types import F64, ROAD_USER_CLASSES, BoolArray, Tracks

__all__ = ["BICYCLE", "MOTORCYCLE", "PERSON", "CountingClasses"]

PERSON: Final = ROAD_USER_CLASSES.index("person")
BICYCLE: Final = ROAD_USER_CLASSES.index("bicycle")
MOTORCYCLE: Final = ROAD_USER_CLASSES.index("motorcycle")
_TWO_WHEELERS: Final = (BICYCLE, MOTORCYCLE)
#: A rider rode with its two-wheeler on at least this many frames (one shared box is a passer-by).
_MIN_RIDE_FRAMES: Final = 3
#: Uncalibrated speeds are measured between reference points at least this far apart in time (s).
_BASELINE_S: Final = 0.5
#: A two-wheeler box moving at least this many of its heights per second is moving (box jitter is 1-2.5 % of
#: the box per frame, about 0.05 heights/s over the baseline; a pushed bicycle moves at 1 or more).
_MOVING_HEIGHTS_PER_S: Final = 0.3


@dataclass(slots=True)
class _Track:
    """What one live track has shown so far: fixed size, whatever its length."""

    ride_frames: int = 0  # frames riding with a moving two-wheeler's box
    shared_frames: int = 0  # frames its (latest) two-wheeler was seen on too, from the first ride on
    wheel_id: int = -1  # the two-wheeler track it rode with last (-1: none)
    wheel_class: int = BICYCLE
    ref_t: float = math.nan  # reference point of the pixel speed: time, bottom-centre, box height
    ref_x: float = 0.0
    ref_y: float = 0.0
    ref_h: float = 0.0
    heights_per_s: float = 0.0  # the latest bottom-centre speed measured, box heights per second
    last_t: float = math.nan  # time of the last ground speed used
    fast_s: float = 0.0  # seconds in a row faster than a pedestrian
    faster_s: float = 0.0  # seconds in a row faster than a bicycle
    moves_as: int = PERSON  # PERSON until it moved like a two-wheeler, then BICYCLE or MOTORCYCLE

    @property
    def rides(self) -> bool:
        return self.wheel_id >= 0 and self.ride_frames >= _MIN_RIDE_FRAMES


def _overlap_of_smaller(a: F64, b: F64) -> F64:
    """Intersection of boxes ``a (N,4)`` and ``b (M,4)`` over the smaller box's area, ``(N, M)``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    out: F64 = inter / np.maximum(np.minimum(area_a[:, None], area_b[None, :]), 1e-9)
    return out


class CountingClasses:
    """Per-track evidence for the counting class of one camera's tracks (module docstring)."""

    def __init__(self, config: RiderConfig) -> None:
        self.config = config
        self._tracks: dict[int, _Track] = {}

    @property
    def tracked_count(self) -> int:
        """Tracks with state held (bounded by the tracker's live tracks)."""
        return len(self._tracks)

    def forget(self, ended_ids: tuple[int, ...]) -> None:
        for tid in ended_ids:
            self._tracks.pop(tid, None)

    def update(self, tracks: Tracks, t_s: float, at_border: BoolArray, ground: GroundTracks | None = None) -> None:
        """Account one frame's tracks (``at_border (N,)``: boxes cut by the image border). With ``ground``
        (a calibrated camera) speeds are ground speeds, else bottom-centre speeds in box heights per second."""
        states = [self._tracks.setdefault(tid, _Track()) for tid in tracks.tracker_id.tolist()]
        box = tracks.xyxy.astype(np.float64)
        cfg = self.config
        for i, st in enumerate(states):
            measured = self._pixel_speed(st, box[i], t_s, bool(at_border[i]))
            if measured is not None and ground is None and tracks.class_id[i] == PERSON:
                speed, dt = measured
                self._sustain(st, speed > cfg.pedestrian_max_heights_per_s, speed > cfg.bicycle_max_heights_per_s, dt)
        self._ride(tracks, states)
        if ground is not None:
            self._ground_speeds(ground, t_s)

    def _ride(self, tracks: Tracks, states: list[_Track]) -> None:
        """Count, for each person box, whether it rides with a two-wheeler track's box on this frame."""
        persons = np.flatnonzero(tracks.class_id == PERSON)
        wheels = np.flatnonzero(np.isin(tracks.class_id, _TWO_WHEELERS))
        if not len(persons) or not len(wheels):
            return
        box = tracks.xyxy.astype(np.float64)
        overlap = _overlap_of_smaller(box[persons], box[wheels])
        best = overlap.argmax(axis=1)
        seen = dict(zip(tracks.tracker_id[wheels].tolist(), wheels.tolist(), strict=True))
        for k, i in enumerate(persons.tolist()):
            st, w = states[i], int(wheels[best[k]])
            if overlap[k, best[k]] >= self.config.overlap_frac and states[w].heights_per_s >= _MOVING_HEIGHTS_PER_S:
                st.ride_frames += 1  # one tally for every two-wheeler: one cyclist may have two tracks
                st.shared_frames += 1
                st.wheel_id, st.wheel_class = int(tracks.tracker_id[w]), int(tracks.class_id[w])
            elif st.wheel_id in seen:
                st.shared_frames += 1  # its two-wheeler is there, and it is not on it

    @staticmethod
    def _pixel_speed(st: _Track, box: F64, t_s: float, at_border: bool) -> tuple[float, float] | None:
        """Bottom-centre speed in box heights per second, between reference points ``_BASELINE_S`` apart:
        ``(speed, seconds measured over)`` when a new one is measured, else None."""
        x, y, h = (box[0] + box[2]) / 2, box[3], box[3] - box[1]
        if at_border or h <= 0:
            st.ref_t = math.nan  # a cut box: its bottom-centre is not the road user's; measure afresh after it
            return None
        dt = t_s - st.ref_t
        if math.isnan(dt):
            st.ref_t, st.ref_x, st.ref_y, st.ref_h = t_s, x, y, h
            return None
        if dt < _BASELINE_S:
            return None
        st.heights_per_s = math.hypot(x - st.ref_x, y - st.ref_y) / dt / ((h + st.ref_h) / 2)
        st.ref_t, st.ref_x, st.ref_y, st.ref_h = t_s, x, y, h
        return st.heights_per_s, dt

    def _ground_speeds(self, ground: GroundTracks, t_s: float) -> None:
        """Ground speeds (m/s) of the person tracks with a settled velocity, not cut by the border. A track
        whose box merged or split (not ``consistent``) still has its filtered speed: the jump was not used."""
        cfg = self.config
        usable = (ground.class_id == PERSON) & ground.valid & ~ground.at_border
        for i in np.flatnonzero(usable).tolist():
            st = self._tracks.get(int(ground.tracker_id[i]))
            if st is None:
                continue
            dt = 0.0 if math.isnan(st.last_t) else t_s - st.last_t
            st.last_t = t_s
            speed = float(ground.speed_mps[i])
            self._sustain(st, speed > cfg.pedestrian_max_speed_mps, speed > cfg.bicycle_max_speed_mps, dt)

    def _sustain(self, st: _Track, fast: bool, faster: bool, dt: float) -> None:
        st.fast_s = st.fast_s + dt if fast else 0.0
        st.faster_s = st.faster_s + dt if faster else 0.0
        sustain = self.config.sustain_s - 1e-9
        if st.faster_s >= sustain:
            st.moves_as = MOTORCYCLE
        elif st.fast_s >= sustain and st.moves_as == PERSON:
            st.moves_as = BICYCLE

    def _rider(self, tid: int) -> _Track | None:
        """The track's record when it is a two-wheeler's rider by rule 1."""
        st = self._tracks.get(tid)
        if st is None or not st.rides or st.ride_frames < self.config.ride_frames_frac * st.shared_frames:
            return None
        return st

    def class_of(self, tid: int, class_id: int) -> int:
        """The class a crossing of track ``tid``, of majority class ``class_id``, counts as."""
        if class_id != PERSON:
            return class_id
        if (rider := self._rider(tid)) is not None:
            return rider.wheel_class
        st = self._tracks.get(tid)
        return st.moves_as if st is not None else PERSON

    def partners(self, tid: int, class_id: int) -> list[int]:
        """Tracks that are the same road user as ``tid`` for counting: a rider's two-wheeler, or a two-wheeler's
        riders (person tracks that ride it by rule 1)."""
        if class_id == PERSON:
            rider = self._rider(tid)
            return [rider.wheel_id] if rider is not None else []
        if class_id not in _TWO_WHEELERS:
            return []
        return [other for other, st in self._tracks.items() if st.wheel_id == tid and self._rider(other)]
