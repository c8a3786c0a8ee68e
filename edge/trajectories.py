"""Counts, turning movements and speeds on already-extracted ground trajectories (an offline tool).

Input is a CSV file of ground positions, one row per road user and time::

    track_id,class,t_s,x_m,y_m
    1,car,0.00,424117.46,5662227.31
    1,car,0.05,424117.32,5662227.27

``class`` is one of ``edge.types.ROAD_USER_CLASSES``; ``x_m, y_m`` are metres in any ground frame (a local
frame or UTM easting/northing); the short header ``id,class,t,x,y`` and ``;`` as the separator are accepted
too. Zones and lines are given in the same frame as the file. Internally everything is shifted by the
trajectories' centroid (float64) first, so UTM coordinates lose no precision.

The same analytics as the camera pipeline run on the trajectories, frame by frame in time order: the
list :func:`edge.analytics.registry.build_analytics` builds (line counts, speeds, turning movements with
zones in metres, near-misses), fed by :class:`~edge.analytics.lines.LineCounter` (``hysteresis`` in
metres) and :class:`~edge.analytics.kinematics.GroundKinematics` (positions filtered with
``measurement_noise_m``); the whole file is one window. A track ends after its last sample; pending
movements and encounters are flushed at the end of the file.

This is an engineering tool (``edge analyse-trajectories``): its result lists per-track movements and
speeds, which the device never publishes.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from edge.analytics.base import Analytic, AnalyticsFrame, find, flush_all, update_all
from edge.analytics.conflicts import NearMiss
from edge.analytics.kinematics import FOOTPRINT_LENGTHS_M, GroundKinematics
from edge.analytics.lines import Crossing, LineCounter
from edge.analytics.movements import Movement, MovementStats, MovementWindow, Zone
from edge.analytics.plugins import LineCounts, Movements, Speeds
from edge.analytics.registry import AnalyticsSetup, MovementSetup, build_analytics
from edge.analytics.speeds import MPS_TO_KMH, SpeedWindow
from edge.config import ConflictConfig, KinematicsConfig, LineConfig
from edge.errors import SourceError
from edge.types import F64, ROAD_USER_CLASSES, IntArray, Tracks

__all__ = [
    "AnalysisOptions",
    "Trajectories",
    "TrajectoryAnalysis",
    "analyse",
    "analyse_trajectories",
    "read_trajectories_csv",
]

Point = tuple[float, float]
A = TypeVar("A")

_COLUMNS = {
    "track_id": ("track_id", "id"),
    "class": ("class",),
    "t_s": ("t_s", "t"),
    "x_m": ("x_m", "x"),
    "y_m": ("y_m", "y"),
}


@dataclass(frozen=True, slots=True)
class Trajectories:
    """Ground samples as parallel arrays: ``track_id (N,)``, ``class_id (N,)``, ``t_s (N,)``, ``xy_m (N, 2)``.

    Sorted by time, then track id, on construction. A track id may appear at most once per time.
    """

    track_id: IntArray
    class_id: IntArray
    t_s: F64
    xy_m: F64

    def __post_init__(self) -> None:
        tid = np.asarray(self.track_id, dtype=np.int64).reshape(-1)
        n = len(tid)
        cls = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        t = np.asarray(self.t_s, dtype=np.float64).reshape(-1)
        xy = np.asarray(self.xy_m, dtype=np.float64)
        if cls.shape != (n,) or t.shape != (n,) or xy.shape != (n, 2):
            raise ValueError(f"track_id, class_id, t_s must have {n} rows and xy_m shape ({n}, 2); got "
                             f"{cls.shape}, {t.shape}, {xy.shape}")
        if not (np.isfinite(t).all() and np.isfinite(xy).all()):
            raise ValueError("t_s and xy_m must be finite")
        if n and (cls.min() < 0 or cls.max() >= len(ROAD_USER_CLASSES)):
            raise ValueError(f"class_id must index ROAD_USER_CLASSES (0-{len(ROAD_USER_CLASSES) - 1})")
        order = np.lexsort((tid, t))
        tid, cls, t, xy = tid[order], cls[order], t[order], xy[order]
        if n > 1 and ((np.diff(t) == 0) & (np.diff(tid) == 0)).any():
            raise ValueError("a track has two samples at the same time")
        for name, arr in (("track_id", tid), ("class_id", cls), ("t_s", t), ("xy_m", xy)):
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return len(self.track_id)

    @property
    def n_tracks(self) -> int:
        return len(np.unique(self.track_id))

    def frames(self) -> Iterator[tuple[float, npt.NDArray[np.intp]]]:
        """Each distinct time with the row indices observed at it, in time order."""
        if not len(self):
            return
        starts = np.flatnonzero(np.r_[True, np.diff(self.t_s) != 0])
        ends = np.r_[starts[1:], len(self)]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):
            yield float(self.t_s[s]), np.arange(s, e)


def read_trajectories_csv(path: Path) -> Trajectories:
    """Read the CSV format of the module docstring; raises ``SourceError`` naming the file, line and fix."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SourceError(f"cannot read trajectories {path}: {exc.strerror}; check the path") from None
    lines = text.splitlines()
    if not lines:
        raise SourceError(f"{path}: empty file; expected a header track_id,class,t_s,x_m,y_m")
    delimiter = ";" if lines[0].count(";") > lines[0].count(",") else ","
    reader = csv.reader(lines, delimiter=delimiter)
    header = [h.strip().lower() for h in next(reader)]
    cols: dict[str, int] = {}
    for key, names in _COLUMNS.items():
        found = [header.index(n) for n in names if n in header]
        if not found:
            raise SourceError(f"{path}: no column {' or '.join(names)} in header {header}; expected "
                              "track_id,class,t_s,x_m,y_m")
        cols[key] = found[0]
    ids: list[int] = []
    classes: list[int] = []
    rows: list[tuple[float, float, float]] = []
    for lineno, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
            continue
        try:
            name = row[cols["class"]].strip().lower()
            if name not in ROAD_USER_CLASSES:
                raise ValueError(f"class {name!r} is not one of {', '.join(ROAD_USER_CLASSES)}")
            ids.append(int(row[cols["track_id"]]))
            classes.append(ROAD_USER_CLASSES.index(name))
            rows.append((float(row[cols["t_s"]]), float(row[cols["x_m"]]), float(row[cols["y_m"]])))
        except (ValueError, IndexError) as exc:
            raise SourceError(f"{path}:{lineno}: {exc}") from None
    values = np.asarray(rows, dtype=np.float64).reshape(-1, 3)
    try:
        return Trajectories(np.asarray(ids, np.int64), np.asarray(classes, np.int64), values[:, 0], values[:, 1:])
    except ValueError as exc:
        raise SourceError(f"{path}: {exc}") from None


@dataclass(frozen=True, slots=True)
class TrajectoryAnalysis:
    """Result of :func:`analyse` (offline only: it has per-track rows).

    ``movements``: one per counted track; ``movement_counts``: movement -> class -> count;
    ``counts``: line -> direction -> class -> crossings; ``speeds``: crossing speeds per line, direction and
    class over the whole file; ``track_speeds_kmh``: each track's median filtered speed while valid
    (tracks never valid are absent).
    """

    n_tracks: int
    duration_s: float
    movements: list[Movement]
    movement_counts: MovementWindow
    movement_stats: MovementStats
    crossings: list[Crossing]
    counts: dict[str, dict[str, dict[str, int]]]
    speeds: SpeedWindow
    track_speeds_kmh: dict[int, float]
    near_misses: list[NearMiss]


def _zones(zones_m: Mapping[str, npt.ArrayLike] | Sequence[Zone], origin: F64) -> list[Zone]:
    items = list(zones_m.items()) if isinstance(zones_m, Mapping) else [(z.name, z.polygon) for z in zones_m]
    return [Zone(name, np.asarray(poly, dtype=np.float64).reshape(-1, 2) - origin) for name, poly in items]


def _line(line: LineConfig, origin: F64) -> LineConfig:
    if line.directions is None:
        raise ValueError(f"line {line.name!r}: give `directions` explicitly for a ground line (the default names "
                         "up/down/left/right assume image axes, y down)")
    points = line.points_m if line.points_m is not None else line.pixel_points  # both are metres in a study
    shifted = tuple((x - float(origin[0]), y - float(origin[1])) for x, y in points)
    return line.model_copy(update={"points_px": shifted, "points_m": None})


@dataclass(frozen=True, slots=True)
class AnalysisOptions:
    """Knobs of :func:`analyse`; units in the names, lengths in the trajectories' metres.

    ``handover_radius_m`` defaults to 0 (off): extracted trajectories are usually already linked.
    ``kinematics`` None: the defaults without a position history.
    """

    speed_limit_kmh: float = 50.0
    kinematics: KinematicsConfig | None = None
    measurement_noise_m: float = 0.1
    #: Systematic position error of the trajectories (m), at least: a tracker's positions come from boxes,
    #: and a bias does not average out. The Radeberg tracker output has cars passing side by side with
    #: their centres 1.0-1.2 m apart (physically impossible for 1.8 m wide cars), so 0.5 m is no
    #: overstatement. Another tool's reference point is not the footprint centre either (OpenTrafficCam's
    #: is a box's bottom-centre, up to half a length away), so a long vehicle's is an eighth of its length
    #: when that is more (a bus: 1.5 m).
    position_uncertainty_m: float = 0.5
    line_hysteresis_m: float = 0.5
    exit_dwell_s: float = 0.5
    handover_radius_m: float = 0.0
    handover_max_gap_s: float = 1.0
    conflicts: ConflictConfig | None = field(default_factory=ConflictConfig)


def analyse(
    trajectories: Trajectories,
    zones_m: Mapping[str, npt.ArrayLike] | Sequence[Zone],
    lines_m: Sequence[LineConfig] = (),
    options: AnalysisOptions | None = None,
) -> TrajectoryAnalysis:
    """Run line counts, movements and speeds over trajectories (module docstring).

    ``zones_m``: approach name -> polygon ``(K, 2)`` (or :class:`Zone` objects), in the trajectories' frame.
    ``lines_m``: counting lines whose ``points_px`` (or ``points_m``) are read as metres in that frame, with
    explicit ``directions`` (the first is the crossing towards the left of the line, seen from its first point
    towards its last *in a y-down view*; in a y-up frame such as UTM, that is towards the right).
    """
    opt = options or AnalysisOptions()
    origin = trajectories.xy_m.mean(axis=0) if len(trajectories) else np.zeros(2)
    xy = trajectories.xy_m - origin
    counter = LineCounter(tuple(_line(line, origin) for line in lines_m), opt.line_hysteresis_m)
    default_kin = KinematicsConfig(history_samples=100 if opt.conflicts is not None else 0)  # history: PET
    kin = GroundKinematics(opt.kinematics or default_kin, measurement_noise_m=opt.measurement_noise_m)
    analytics = build_analytics(_setup(counter, kin, _zones(zones_m, origin), opt))
    movements = _one(analytics, Movements)
    near_misses: list[NearMiss] = []
    per_track: dict[int, list[float]] = {}
    found: list[Movement] = []
    crossings: list[Crossing] = []

    t_prev = -math.inf
    for t, rows, ended in _frames(trajectories):
        ids, cls, pts = trajectories.track_id[rows], trajectories.class_id[rows], xy[rows]
        box = np.concatenate([pts, pts], axis=1).astype(np.float32)  # a zero-size box: its anchor is the point
        tracks = Tracks(box, np.ones(len(rows), np.float32), cls, ids, ended)
        systematic = np.maximum(opt.position_uncertainty_m, FOOTPRINT_LENGTHS_M[cls] / 8)
        ground = kin.update_ground(ids, cls, pts, t, ended, systematic_m=systematic)
        for i in np.flatnonzero(ground.valid):
            per_track.setdefault(int(ground.tracker_id[i]), []).append(float(ground.speed_mps[i]) * MPS_TO_KMH)
        crossed = counter.update(tracks, t)
        crossings.extend(crossed)
        near_misses.extend(update_all(analytics, AnalyticsFrame(t, tracks, crossed, ground, points=pts)))
        found.extend(movements.counted)
        t_prev = t
    near_misses.extend(flush_all(analytics, t_prev))
    found.extend(movements.counted)
    duration = float(trajectories.t_s[-1] - trajectories.t_s[0]) if len(trajectories) else 0.0
    return TrajectoryAnalysis(
        n_tracks=trajectories.n_tracks,
        duration_s=duration,
        movements=found,
        movement_counts=movements.close_window(),
        movement_stats=movements.counter.stats,
        crossings=crossings,
        counts=_one(analytics, LineCounts).close_window(),
        speeds=_one(analytics, Speeds).close_window(),
        track_speeds_kmh={tid: float(np.median(v)) for tid, v in sorted(per_track.items())},
        near_misses=[replace(nm, location_m=(nm.location_m[0] + round(float(origin[0])),
                                              nm.location_m[1] + round(float(origin[1]))))
                     for nm in near_misses],
    )


def _setup(counter: LineCounter, kinematics: GroundKinematics, zones: list[Zone], opt: AnalysisOptions
           ) -> AnalyticsSetup:
    """The camera pipeline's analytics, with this study's lines and zones (metres) and options."""
    return AnalyticsSetup(
        lines=tuple((c.name, c.directions) for c in counter.lines),
        kinematics=kinematics,
        speed_limit_kmh=opt.speed_limit_kmh,
        movements=MovementSetup(tuple(zones), opt.exit_dwell_s, opt.handover_radius_m, opt.handover_max_gap_s),
        conflicts=opt.conflicts,
    )


def _frames(trajectories: Trajectories) -> Iterator[tuple[float, npt.NDArray[np.intp], tuple[int, ...]]]:
    """Each distinct time with its rows and the tracks that ended since the previous one (a track ends on
    the first frame after its last sample)."""
    last_t: dict[int, float] = {}
    for tid, t in zip(trajectories.track_id.tolist(), trajectories.t_s.tolist(), strict=True):
        last_t[tid] = t  # rows are in time order, so the last write is the last sample
    ending = sorted(last_t.items(), key=lambda kv: (kv[1], kv[0]))
    k = 0
    t_prev = -math.inf
    for t, rows in trajectories.frames():
        ended: list[int] = []
        while k < len(ending) and ending[k][1] <= t_prev:
            ended.append(ending[k][0])
            k += 1
        yield t, rows, tuple(ended)
        t_prev = t


def _one(analytics: list[Analytic], kind: type[A]) -> A:
    """The analytic of type ``kind`` the registry built (every study gets line counts, speeds, movements)."""
    found = find(analytics, kind)
    if found is None:
        raise LookupError(f"the analytics registry built no {kind.__name__} for a trajectory study")
    return found


def analyse_trajectories(
    csv_path: Path,
    zones_m: Mapping[str, npt.ArrayLike] | Sequence[Zone],
    lines_m: Sequence[LineConfig] = (),
    options: AnalysisOptions | None = None,
) -> TrajectoryAnalysis:
    """:func:`read_trajectories_csv` then :func:`analyse`, for ``edge analyse-trajectories``."""
    return analyse(read_trajectories_csv(csv_path), zones_m, lines_m, options)
