"""The built-in analytics (:class:`~edge.analytics.base.Analytic`): thin wrappers that feed the existing
counters and aggregators one :class:`~edge.analytics.base.AnalyticsFrame` at a time and shape their
window aggregates into record fields. The maths stays in the wrapped classes:

* :class:`LineCounts`: the line counter's crossings (``edge.analytics.lines``) -> metrics ``counts``;
* :class:`Speeds`: :class:`~edge.analytics.speeds.SpeedAggregator` -> the speeds record;
* :class:`Movements`: :class:`~edge.analytics.movements.MovementCounter` and ``MovementAggregator``
  -> metrics ``movements``;
* :class:`Conflicts`: :class:`~edge.analytics.conflicts.ConflictDetector` and ``ConflictAggregator``
  -> near-miss events and metrics ``conflicts``.

None of them holds per-track state of its own: the wrapped counters free a track's state inside their
``update`` on the frame it ends (they must: a pending movement or encounter is completed then), so
``forget`` has nothing left to do.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np

from edge.analytics.base import AnalyticsFrame, Fragment
from edge.analytics.conflicts import ConflictAggregator, ConflictDetector, NearMiss
from edge.analytics.lines import Crossing
from edge.analytics.movements import Movement, MovementAggregator, MovementCounter, MovementWindow
from edge.analytics.speeds import SpeedAggregator, SpeedWindow
from edge.payloads import ConflictCounts
from edge.payloads import SpeedStats as SpeedRow
from edge.types import MOTOR_VEHICLE_CLASSES, ROAD_USER_CLASSES

__all__ = ["Conflicts", "Counts", "LineCounts", "Movements", "Speeds"]

#: line -> direction -> road-user class -> crossings (every line, direction and class present).
Counts = dict[str, dict[str, dict[str, int]]]
Lines = Sequence[tuple[str, tuple[str, str]]]

#: Worst-case figures for payload sizing: five-digit counts in a window, speeds up to 200 km/h.
_BIG: Final = 99_999
_FAST_KMH: Final = 199.9
_VEHICLE_IDS: Final = np.array([ROAD_USER_CLASSES.index(c) for c in sorted(MOTOR_VEHICLE_CLASSES)])


class LineCounts:
    """Crossings per window, line, direction and class: the metrics record's ``counts``."""

    def __init__(self, lines: Lines) -> None:
        self._lines = list(lines)
        self._counts = self._zeros()

    def _zeros(self) -> Counts:
        return {name: {d: dict.fromkeys(ROAD_USER_CLASSES, 0) for d in dirs} for name, dirs in self._lines}

    def add(self, crossings: Iterable[Crossing]) -> None:
        for c in crossings:
            self._counts[c.line][c.direction][ROAD_USER_CLASSES[c.class_id]] += 1

    def update(self, frame: AnalyticsFrame) -> Sequence[NearMiss]:
        self.add(frame.crossings)
        return ()

    def forget(self, ended_ids: tuple[int, ...]) -> None:
        """No per-track state: the line counter frees it."""

    def close_window(self) -> Counts:
        out, self._counts = self._counts, self._zeros()
        return out

    def close(self) -> Fragment:
        return Fragment(metrics={"counts": self.close_window()})

    def flush(self, t_s: float) -> Sequence[NearMiss]:
        return ()

    def worst_case(self) -> Fragment:
        return Fragment(metrics={"counts": {
            name: {d: dict.fromkeys(ROAD_USER_CLASSES, _BIG) for d in dirs} for name, dirs in self._lines
        }})


class Speeds:
    """Speeds at the counting lines (calibrated cameras): the speeds record, sparse, with mean and
    percentiles withheld below ``min_count_published`` crossings."""

    def __init__(self, lines: Lines, speed_limit_kmh: float, min_count_published: int) -> None:
        self._lines = list(lines)
        self.aggregator = SpeedAggregator(self._lines, speed_limit_kmh)
        self.min_count_published = min_count_published

    def update(self, frame: AnalyticsFrame) -> Sequence[NearMiss]:
        self.aggregator.add(frame.crossings, frame.ground)
        return ()

    def forget(self, ended_ids: tuple[int, ...]) -> None:
        """No per-track state: speeds are looked up in the frame's ground tracks."""

    def close_window(self) -> SpeedWindow:
        """The window's statistics for every line, direction and class (``SpeedAggregator.close``)."""
        return self.aggregator.close()

    def close(self) -> Fragment:
        out: dict[str, dict[str, dict[str, SpeedRow]]] = {}
        for line, per_dir in self.close_window().items():
            out[line] = {}
            for direction, per_class in per_dir.items():
                out[line][direction] = {}
                for cls, st in per_class.items():
                    if st.count == 0 and st.unmeasured == 0:
                        continue
                    shown = st.count >= self.min_count_published
                    out[line][direction][cls] = SpeedRow(
                        count=st.count, unmeasured=st.unmeasured, mean_kmh=st.mean_kmh if shown else None,
                        p50_kmh=st.p50_kmh if shown else None, p85_kmh=st.p85_kmh if shown else None,
                        over_limit=st.over_limit,
                    )
        return Fragment(speeds={"speed_limit_kmh": self.aggregator.speed_limit_kmh, "speeds": out})

    def flush(self, t_s: float) -> Sequence[NearMiss]:
        return ()

    def worst_case(self) -> Fragment:
        stats = SpeedRow(count=_BIG, unmeasured=_BIG, mean_kmh=_FAST_KMH, p50_kmh=_FAST_KMH, p85_kmh=_FAST_KMH,
                         over_limit=_BIG)
        return Fragment(speeds={"speed_limit_kmh": 300.0, "speeds": {
            name: {d: dict.fromkeys(ROAD_USER_CLASSES, stats) for d in dirs} for name, dirs in self._lines
        }})


class Movements:
    """Turning movements per window, movement and class: the metrics record's ``movements`` (zeros
    left out). ``counted`` holds the movements of the latest ``update`` or ``flush`` only (offline tools
    list them per track; replaced on every call, so it never grows)."""

    def __init__(self, counter: MovementCounter) -> None:
        self.counter = counter
        self.aggregator = MovementAggregator(counter.movement_names)
        self.counted: list[Movement] = []

    def update(self, frame: AnalyticsFrame) -> Sequence[NearMiss]:
        tracks = frame.tracks
        self.counted = self.counter.update(tracks.tracker_id, tracks.class_id, frame.positions(), frame.t_s,
                                           frame.ended_ids)
        self.aggregator.add(self.counted)
        return ()

    def forget(self, ended_ids: tuple[int, ...]) -> None:
        """Nothing left: ``MovementCounter.update`` freed them (emitting their pending movements)."""

    def close_window(self) -> MovementWindow:
        """Every possible movement and class, zeros included (``MovementAggregator.close``)."""
        return self.aggregator.close()

    def close(self) -> Fragment:
        return Fragment(metrics={"movements": {
            m: {c: n for c, n in per.items() if n} for m, per in self.close_window().items() if any(per.values())
        }})

    def flush(self, t_s: float) -> Sequence[NearMiss]:
        self.counted = self.counter.flush(t_s)
        self.aggregator.add(self.counted)
        return ()

    def worst_case(self) -> Fragment:
        names = self.counter.movement_names
        return Fragment(metrics={"movements": {m: dict.fromkeys(ROAD_USER_CLASSES, _BIG) for m in names}
                                 if names else None})


class Conflicts:
    """Near-misses (calibrated cameras): returns each as it ends, and fills the metrics record's
    ``conflicts`` with the window's counts against the motor vehicles that entered (first seen)."""

    def __init__(self, detector: ConflictDetector) -> None:
        self.detector = detector
        self.aggregator = ConflictAggregator()
        self._newest_id = 0  # tracker ids grow: a larger id is a road user seen for the first time

    def update(self, frame: AnalyticsFrame) -> Sequence[NearMiss]:
        if frame.ground is None:
            raise ValueError("Conflicts needs the frame's ground tracks: build it for calibrated cameras only")
        tracks = frame.tracks
        near_misses = self.detector.update(frame.ground, frame.ended_ids)
        fresh = tracks.tracker_id > self._newest_id
        entering = int(np.count_nonzero(fresh & np.isin(tracks.class_id, _VEHICLE_IDS)))
        if len(tracks):
            self._newest_id = max(self._newest_id, int(tracks.tracker_id.max()))
        self.aggregator.add(near_misses, entering)
        return near_misses

    def forget(self, ended_ids: tuple[int, ...]) -> None:
        """Nothing left: ``ConflictDetector.update`` closed their encounters."""

    def close(self) -> Fragment:
        return Fragment(metrics={"conflicts": self.aggregator.close()})

    def flush(self, t_s: float) -> Sequence[NearMiss]:
        near_misses = self.detector.flush()
        self.aggregator.add(near_misses, 0)
        return near_misses

    def worst_case(self) -> Fragment:
        return Fragment(metrics={"conflicts": ConflictCounts(
            by_type={t: {"high": _BIG, "medium": _BIG, "low": _BIG} for t in ("rear_end", "crossing", "angled")},
            vulnerable=_BIG, vehicles_entering=_BIG, per_1000_vehicles=99_999.99,
        )})
