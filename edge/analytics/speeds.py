"""Speeds at line crossings, aggregated per window, line, direction and class.

When the line counter (:mod:`edge.analytics.lines`) counts a crossing, the crossing track's ground speed
on that frame is looked up in the :class:`~edge.analytics.kinematics.GroundTracks` of the same frame. A
crossing whose track has no settled velocity yet (a track born a moment ago) or no ground position is
counted as ``unmeasured``: it never contributes a guessed speed.

Per window, per line, direction and class, :class:`SpeedAggregator` reports the number of measured
crossings, the mean speed, the median (p50), the 85th percentile (p85, the usual design/enforcement
statistic: the speed 85 % of road users do not exceed) and the number above ``speed_limit_kmh``.
Percentiles interpolate linearly between order statistics (numpy's default, Hyndman and Fan type 7), so
with few crossings they lie between observed speeds. Speeds are reported in km/h, rounded to 0.1.

Memory: one float per measured crossing in the current window, dropped when the window closes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from edge.analytics.kinematics import GroundTracks
from edge.analytics.lines import Crossing
from edge.types import ROAD_USER_CLASSES

__all__ = ["MPS_TO_KMH", "SpeedAggregator", "SpeedStats", "SpeedWindow", "speed_stats"]

MPS_TO_KMH: Final = 3.6


@dataclass(frozen=True, slots=True)
class SpeedStats:
    """Speeds of one (line, direction, class) in one window, km/h; the speed fields are None when ``count`` is 0."""

    count: int
    unmeasured: int
    mean_kmh: float | None
    p50_kmh: float | None
    p85_kmh: float | None
    over_limit: int

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "count": self.count,
            "unmeasured": self.unmeasured,
            "mean_kmh": self.mean_kmh,
            "p50_kmh": self.p50_kmh,
            "p85_kmh": self.p85_kmh,
            "over_limit": self.over_limit,
        }


#: line -> direction -> road-user class -> statistics (every class present, like the window counts).
SpeedWindow = dict[str, dict[str, dict[str, SpeedStats]]]


def speed_stats(speeds_kmh: Sequence[float], speed_limit_kmh: float, unmeasured: int = 0) -> SpeedStats:
    """Statistics of one sample of speeds (km/h)."""
    if not speeds_kmh:
        return SpeedStats(0, unmeasured, None, None, None, 0)
    v = np.asarray(speeds_kmh, dtype=np.float64)
    p50, p85 = np.percentile(v, [50.0, 85.0])
    return SpeedStats(
        count=len(v),
        unmeasured=unmeasured,
        mean_kmh=round(float(v.mean()), 1),
        p50_kmh=round(float(p50), 1),
        p85_kmh=round(float(p85), 1),
        over_limit=int(np.count_nonzero(v > speed_limit_kmh)),
    )


class SpeedAggregator:
    """Collects crossing speeds for one camera and window; :meth:`close` returns them and starts anew.

    ``lines`` lists each line's name and its two direction names, as the window aggregator takes them.
    """

    def __init__(self, lines: Iterable[tuple[str, tuple[str, str]]], speed_limit_kmh: float) -> None:
        self._lines = [(name, tuple(dirs)) for name, dirs in lines]
        self.speed_limit_kmh = speed_limit_kmh
        self._reset()

    def _reset(self) -> None:
        self._speeds: dict[tuple[str, str, str], list[float]] = {}
        self._unmeasured: dict[tuple[str, str, str], int] = {}

    def add(self, crossings: Iterable[Crossing], ground: GroundTracks | None) -> list[float | None]:
        """Record the speed of each crossing from the same frame's ground state; returns them (km/h or None)."""
        out: list[float | None] = []
        for c in crossings:
            speed_mps = ground.speed_of(c.tracker_id) if ground is not None else None
            speed_kmh = speed_mps * MPS_TO_KMH if speed_mps is not None else None
            self.add_speed(c.line, c.direction, c.class_id, speed_kmh)
            out.append(speed_kmh)
        return out

    def add_speed(self, line: str, direction: str, class_id: int, speed_kmh: float | None) -> None:
        """Record one crossing's speed (km/h), or an unmeasured crossing (None)."""
        key = (line, direction, ROAD_USER_CLASSES[class_id])
        if speed_kmh is None:
            self._unmeasured[key] = self._unmeasured.get(key, 0) + 1
        else:
            self._speeds.setdefault(key, []).append(float(speed_kmh))

    def close(self) -> SpeedWindow:
        """Statistics of the window so far, for every line, direction and class; then start a new window."""
        out: SpeedWindow = {}
        for name, dirs in self._lines:
            out[name] = {}
            for d in dirs:
                out[name][d] = {
                    cls: speed_stats(
                        self._speeds.get((name, d, cls), []),
                        self.speed_limit_kmh,
                        self._unmeasured.get((name, d, cls), 0),
                    )
                    for cls in ROAD_USER_CLASSES
                }
        self._reset()
        return out
