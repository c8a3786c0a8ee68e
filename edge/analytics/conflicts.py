"""Near-miss detection: TTC, DRAC and PET between nearby road users, one event per encounter.

Every frame, road users on the ground plane within ``max_pair_distance_m`` of each other are paired
(a k-d tree query, so a busy scene costs pairs that are close, not all pairs). For each pair the 2-D
time to collision of their oriented footprints under constant velocity (a disc for pedestrians) and the
deceleration rate to avoid the crash are computed (``edge.analytics.surrogate``). An *encounter* is one
pair over the frames it stays close; it keeps its minimum TTC, maximum DRAC and the moment of the
minimum. When it ends, the post-encroachment time of the two observed paths is computed, and the
encounter becomes a near-miss if its TTC or PET is at or below the threshold.

Definitions (DESIGN.md): TTC (Hayward 1972), PET (Allen et al. 1978), DRAC (Cooper & Ferguson 1976),
conflict types by heading angle as in FHWA SSAM v2 (Gettman et al. 2008): rear-end < 30 deg, crossing
> 85 deg, else angled (lane change). An overlap at t = 0 (TTC -1) is not counted: with footprints from
class sizes it comes from position error far more often than from a collision, and a real collision
is preceded by finite TTCs that are counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from edge.analytics.kinematics import GroundKinematics, GroundTracks
from edge.analytics.surrogate import (
    Disc,
    Footprint,
    Footprints,
    conflict_type,
    drac_batch,
    drac_mps2,
    pet_s,
    ttc_batch,
    ttc_s,
)
from edge.config import ConflictConfig
from edge.payloads import ConflictCounts
from edge.types import F64, ROAD_USER_CLASSES

PERSON = ROAD_USER_CLASSES.index("person")
VULNERABLE = frozenset(ROAD_USER_CLASSES.index(c) for c in ("person", "bicycle", "motorcycle"))


@dataclass(frozen=True, slots=True)
class NearMiss:
    """One near-miss encounter. ``tracker_ids`` are internal (clip triggering); they never leave the device."""

    t_s: float
    ttc_s: float | None
    pet_s: float | None
    drac_mps2: float | None
    conflict_type: str
    severity: str
    classes: tuple[str, str]
    speeds_mps: tuple[float, float]
    vulnerable: bool
    location_m: tuple[float, float]
    tracker_ids: tuple[int, int]


@dataclass(slots=True)
class _Encounter:
    a: int
    b: int
    classes: tuple[int, int]
    last_seen_t: float
    min_ttc: float = math.inf
    max_drac: float = 0.0
    t_min: float = 0.0
    speeds: tuple[float, float] = (0.0, 0.0)
    headings: tuple[tuple[float, float], tuple[float, float]] = ((1.0, 0.0), (1.0, 0.0))
    location: tuple[float, float] = (0.0, 0.0)
    sizes: tuple[tuple[float, float], tuple[float, float]] = ((1.0, 1.0), (1.0, 1.0))
    paths: list[F64] = field(default_factory=lambda: [np.zeros((0, 3)), np.zeros((0, 3))])


def severity(value_s: float, bounds: tuple[float, float]) -> str:
    return "high" if value_s <= bounds[0] else "medium" if value_s <= bounds[1] else "low"


class ConflictDetector:
    """One camera's encounters. ``update`` once per frame after the ground kinematics."""

    def __init__(self, config: ConflictConfig, kinematics: GroundKinematics) -> None:
        self.config = config
        self.kinematics = kinematics
        self._encounters: dict[tuple[int, int], _Encounter] = {}
        self.pairs_evaluated = 0

    @property
    def open_encounters(self) -> int:
        return len(self._encounters)

    def update(self, ground: GroundTracks, ended_ids: tuple[int, ...] = ()) -> list[NearMiss]:
        t = ground.t_s
        self._evaluate(ground)
        ended = set(ended_ids)
        events = []
        for key, enc in list(self._encounters.items()):
            if key[0] in ended or key[1] in ended or t - enc.last_seen_t > self.config.encounter_gap_s:
                del self._encounters[key]
                if (event := self._close(enc)) is not None:
                    events.append(event)
        return events

    def flush(self) -> list[NearMiss]:
        """Close every open encounter (end of stream)."""
        events = [e for enc in self._encounters.values() if (e := self._close(enc)) is not None]
        self._encounters.clear()
        return events

    # ----------------------------------------------------------------------------------------- per frame
    def _evaluate(self, g: GroundTracks) -> None:
        cfg = self.config
        person = g.class_id == PERSON
        usable = g.valid & (np.isfinite(g.heading).all(axis=1) | person)
        idx = np.flatnonzero(usable)
        if len(idx) < 2:
            return
        pairs = cKDTree(g.xy_m[idx]).query_pairs(cfg.max_pair_distance_m, output_type="ndarray")
        if len(pairs) == 0:
            return
        i, j = idx[pairs[:, 0]], idx[pairs[:, 1]]
        moving = (g.speed_mps[i] >= cfg.min_speed_mps) | (g.speed_mps[j] >= cfg.min_speed_mps)
        i, j = i[moving], j[moving]
        if len(i) == 0:
            return
        self.pairs_evaluated += len(i)
        ttc = np.full(len(i), math.inf)
        drac = np.zeros(len(i))
        rect = ~(person[i] | person[j])
        if rect.any():
            a, b = self._rects(g, i[rect]), self._rects(g, j[rect])
            ttc[rect] = ttc_batch(a, g.velocity_mps[i[rect]], b, g.velocity_mps[j[rect]], cfg.horizon_s)
            drac[rect] = drac_batch(a, g.velocity_mps[i[rect]], b, g.velocity_mps[j[rect]], cfg.horizon_s)
        for d in np.flatnonzero(~rect).tolist():
            sa, sb = self._shape(g, int(i[d])), self._shape(g, int(j[d]))
            va = (float(g.velocity_mps[i[d], 0]), float(g.velocity_mps[i[d], 1]))
            vb = (float(g.velocity_mps[j[d], 0]), float(g.velocity_mps[j[d], 1]))
            ttc[d] = ttc_s(sa, va, sb, vb, cfg.horizon_s)
            drac[d] = drac_mps2(sa, va, sb, vb, cfg.horizon_s)
        for k in range(len(i)):
            self._observe(g, int(i[k]), int(j[k]), float(ttc[k]), float(drac[k]))

    @staticmethod
    def _rects(g: GroundTracks, rows: npt.NDArray[np.int64]) -> Footprints:
        return Footprints(g.xy_m[rows], g.heading[rows], g.length_m[rows], g.width_m[rows])

    @staticmethod
    def _shape(g: GroundTracks, row: int) -> Footprint | Disc:
        x, y = float(g.xy_m[row, 0]), float(g.xy_m[row, 1])
        if g.class_id[row] == PERSON:
            return Disc(x, y, float(g.width_m[row]) / 2)
        hx, hy = float(g.heading[row, 0]), float(g.heading[row, 1])
        return Footprint(x, y, hx, hy, float(g.length_m[row]), float(g.width_m[row]))

    def _observe(self, g: GroundTracks, i: int, j: int, ttc: float, drac: float) -> None:
        a, b = int(g.tracker_id[i]), int(g.tracker_id[j])
        if a > b:
            a, b, i, j = b, a, j, i
        enc = self._encounters.get((a, b))
        if enc is None:
            enc = _Encounter(a, b, (int(g.class_id[i]), int(g.class_id[j])), g.t_s)
            self._encounters[(a, b)] = enc
        enc.last_seen_t = g.t_s
        enc.paths = [self.kinematics.history(a), self.kinematics.history(b)]
        enc.sizes = ((float(g.length_m[i]), float(g.width_m[i])), (float(g.length_m[j]), float(g.width_m[j])))
        if 0 <= ttc < enc.min_ttc:
            enc.min_ttc, enc.t_min = ttc, g.t_s
            enc.max_drac = max(enc.max_drac, drac)
            enc.speeds = (float(g.speed_mps[i]), float(g.speed_mps[j]))
            enc.headings = (_heading(g, i), _heading(g, j))
            mid = (g.xy_m[i] + g.xy_m[j]) / 2
            enc.location = (float(mid[0]), float(mid[1]))

    def _close(self, enc: _Encounter) -> NearMiss | None:
        cfg = self.config
        pet = None
        pa, pb = enc.paths
        if len(pa) >= 2 and len(pb) >= 2:
            pet = pet_s(pa, pb, size_a_m=_square_if_disc(enc.sizes[0], enc.classes[0]),
                        size_b_m=_square_if_disc(enc.sizes[1], enc.classes[1]))
        ttc_hit = enc.min_ttc <= cfg.ttc_threshold_s
        pet_hit = pet is not None and pet <= cfg.pet_threshold_s
        if not (ttc_hit or pet_hit):
            return None
        measure = min(enc.min_ttc if ttc_hit else math.inf, pet if pet_hit and pet is not None else math.inf)
        t = enc.t_min if ttc_hit else enc.last_seen_t
        if not ttc_hit:  # a PET-only conflict: take where and how the paths crossed from the last samples
            enc.speeds = (_path_speed(pa), _path_speed(pb))
            enc.headings = (_path_heading(pa), _path_heading(pb))
            enc.location = _path_meeting(pa, pb)
        return NearMiss(
            t_s=t,
            ttc_s=round(enc.min_ttc, 3) if math.isfinite(enc.min_ttc) else None,
            pet_s=round(pet, 3) if pet is not None else None,
            drac_mps2=round(enc.max_drac, 3) if ttc_hit and math.isfinite(enc.max_drac) else None,
            conflict_type=conflict_type(enc.headings[0], enc.headings[1]),
            severity=severity(measure, cfg.severity_ttc_s),
            classes=(ROAD_USER_CLASSES[enc.classes[0]], ROAD_USER_CLASSES[enc.classes[1]]),
            speeds_mps=(round(enc.speeds[0], 2), round(enc.speeds[1], 2)),
            vulnerable=bool(VULNERABLE & set(enc.classes)),
            location_m=(float(round(enc.location[0])), float(round(enc.location[1]))),
            tracker_ids=(enc.a, enc.b),
        )


def _heading(g: GroundTracks, row: int) -> tuple[float, float]:
    h = g.heading[row]
    if np.isfinite(h).all():
        return float(h[0]), float(h[1])
    v = g.velocity_mps[row]
    n = math.hypot(float(v[0]), float(v[1]))
    return (float(v[0]) / n, float(v[1]) / n) if n > 0 else (1.0, 0.0)


def _square_if_disc(size: tuple[float, float], class_id: int) -> tuple[float, float]:
    return (size[1], size[1]) if class_id == PERSON else size


def _path_speed(path: F64) -> float:
    if len(path) < 2:
        return 0.0
    d = path[-1] - path[max(0, len(path) - 5)]
    return float(math.hypot(d[1], d[2]) / d[0]) if d[0] > 0 else 0.0


def _path_heading(path: F64) -> tuple[float, float]:
    if len(path) < 2:
        return (1.0, 0.0)
    d = path[-1, 1:] - path[0, 1:]
    n = math.hypot(float(d[0]), float(d[1]))
    return (float(d[0]) / n, float(d[1]) / n) if n > 0 else (1.0, 0.0)


def _path_meeting(pa: F64, pb: F64) -> tuple[float, float]:
    """The closest pair of observed points of the two paths (where they crossed, within sampling)."""
    d = np.hypot(pa[:, None, 1] - pb[None, :, 1], pa[:, None, 2] - pb[None, :, 2])
    flat = int(np.argmin(d))
    ia, ib = divmod(flat, d.shape[1])
    return (float(pa[ia, 1] + pb[ib, 1]) / 2, float(pa[ia, 2] + pb[ib, 2]) / 2)


class ConflictAggregator:
    """Near-misses per window by type and severity, against the motor vehicles that entered."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._by_type: dict[str, dict[str, int]] = {
            t: {"high": 0, "medium": 0, "low": 0} for t in ("rear_end", "crossing", "angled")
        }
        self._vulnerable = 0
        self._entering = 0

    def add(self, events: list[NearMiss], vehicles_entering: int) -> None:
        self._entering += vehicles_entering
        for e in events:
            self._by_type[e.conflict_type][e.severity] += 1
            self._vulnerable += int(e.vulnerable)

    def close(self) -> ConflictCounts:
        total = sum(sum(v.values()) for v in self._by_type.values())
        out = ConflictCounts(
            by_type=self._by_type,
            vulnerable=self._vulnerable,
            vehicles_entering=self._entering,
            per_1000_vehicles=round(1000 * total / self._entering, 2) if self._entering else None,
        )
        self._reset()
        return out
