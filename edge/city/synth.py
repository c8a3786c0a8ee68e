"""Seeded weeks of window records with a known change: the truth the study's statistics are checked against.

Synthetic but honest: every record is a contract payload (``edge.payloads``, validated as the archive
validates a device's), built the way the device builds it, from road users drawn with known parameters:

* volumes: Poisson counts per window, movement and class around a two-peak daily profile (weekends lower);
  movements between four approaches (north, east, south, west; through 60 %, left 20 %, right 20 %); a
  movement ``A->B`` crosses line A inwards and line B outwards; ``vehicles_entering`` is the motor vehicles
  of the window's movements;
* conflicts: per window Poisson with mean ``rate / 1000 x vehicles_entering x g_day x conflict_factor``, where
  ``g_day ~ Gamma(k, 1/k)`` varies the rate from day to day (negative-binomial counts, as observed conflict
  counts are); each conflict is also an event record with TTC, PET, DRAC, classes and a location;
* speeds: each measured crossing's speed is drawn (normal per line and direction, shifted per phase) and the
  window's count, mean, p50, p85 and over-limit are computed from the draws as the device computes them
  (``edge.analytics.speeds.speed_stats``; :func:`window_speed_stats`), withheld below 3 crossings. The
  individual draws never leave the generator except as :class:`PhaseTruth` (the percentiles the report
  estimates from window statistics).

The site's geometry comes with it (:func:`site_config_yaml`): a calibrated edge config with the four lines and
zones, so the report can name turns and draw its map.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import yaml

from edge.city.records import RecordKind, Valid
from edge.city.store import Archive
from edge.payloads import NearMissEvent, WindowMetrics, WindowSpeeds, iso_utc, window_msg_id
from edge.types import ROAD_USER_CLASSES

APPROACHES: Final = ("north", "east", "south", "west")  # clockwise: from approach i, left is i+1, right i+3
MOTOR: Final = ("car", "bus", "truck", "motorcycle")
CONFLICT_TYPES: Final = ("rear_end", "crossing", "angled")
SEVERITIES: Final = ("high", "medium", "low")
_UNIT: Final = MappingProxyType({"north": (0.0, 1.0), "east": (1.0, 0.0), "south": (0.0, -1.0), "west": (-1.0, 0.0)})
_ARM_M: Final = 25.0  # zone centre distance from the junction centre


@dataclass(frozen=True)
class Phase:
    """A stretch of days with its own factors (before, after, a comparison site's)."""

    start: datetime
    days: float  # a fraction of a day for short tests (then the windows of that fraction)
    volume_factor: float = 1.0
    conflict_factor: float = 1.0  # multiplies conflicts per 1,000 entering vehicles
    speed_shift_kmh: float = 0.0
    ttc_factor: float = 1.0  # multiplies every TTC and PET


@dataclass(frozen=True)
class SiteModel:
    device: str = "synth-0001"
    camera: str = "main"
    window_s: int = 900
    vehicles_per_hour: float = 600.0  # entering motor vehicles, daily mean of a weekday
    weekend_factor: float = 0.7
    class_share: dict[str, float] = field(default_factory=lambda: {
        "car": 0.88, "truck": 0.06, "bus": 0.02, "motorcycle": 0.02, "bicycle": 0.02})
    conflicts_per_1000: float = 2.0
    day_shape_k: float = 20.0  # Gamma shape of the day-to-day conflict rate (CV = 1/sqrt(k)); 0 = none (Poisson)
    speed_mean_kmh: float = 42.0
    speed_sd_kmh: float = 7.0
    speed_limit_kmh: float = 50.0
    measured_share: float = 0.9
    ttc_median_s: float = 0.9
    fps: float = 10.0
    with_speeds: bool = True  # False: no speeds records (quicker, for tests of the counts alone)


@dataclass
class PhaseTruth:
    vehicles_entering: int = 0
    observed_s: float = 0.0
    conflicts: int = 0
    events: int = 0
    rate_per_1000: float = 0.0  # the generating rate (before the day-to-day noise)
    speeds_kmh: dict[tuple[str, str], list[np.ndarray]] = field(default_factory=dict)  # (line, dir) -> draws
    ttc_s: list[float] = field(default_factory=list)

    def speed_quantile(self, line: str, direction: str, q: float) -> float:
        return float(np.quantile(np.concatenate(self.speeds_kmh[(line, direction)]), q))


@dataclass
class Synthetic:
    metrics: list[WindowMetrics] = field(default_factory=list)
    speeds: list[WindowSpeeds] = field(default_factory=list)
    events: list[NearMissEvent] = field(default_factory=list)
    truth: list[PhaseTruth] = field(default_factory=list)

    def records(self) -> Iterator[WindowMetrics | WindowSpeeds | NearMissEvent]:
        yield from self.metrics
        yield from self.speeds
        yield from self.events

    def jsonl(self) -> dict[str, str]:
        """File name -> content, as ``edge replay`` writes them."""
        return {name: "".join(r.to_json() + "\n" for r in recs) for name, recs in
                (("metrics.jsonl", self.metrics), ("speeds.jsonl", self.speeds), ("events.jsonl", self.events))}


def movements() -> list[tuple[str, str, float]]:
    """(origin, destination, share of the origin's traffic): through 0.6, left 0.2, right 0.2."""
    out = []
    for i, a in enumerate(APPROACHES):
        for offset, share in ((2, 0.6), (1, 0.2), (3, 0.2)):
            out.append((a, APPROACHES[(i + offset) % 4], share))
    return out


def daily_profile(hours: np.ndarray) -> np.ndarray:
    """Relative volume at an hour of day (mean 1 over the day): a morning and an evening peak."""
    raw = 0.15 + 1.6 * np.exp(-0.5 * ((hours - 8.0) / 1.2) ** 2) + 1.9 * np.exp(-0.5 * ((hours - 17.0) / 1.6) ** 2)
    grid = np.arange(0, 24, 0.25)
    mean = float(np.mean(0.15 + 1.6 * np.exp(-0.5 * ((grid - 8.0) / 1.2) ** 2)
                         + 1.9 * np.exp(-0.5 * ((grid - 17.0) / 1.6) ** 2)))
    out: np.ndarray = raw / mean
    return out


def generate(site: SiteModel, phases: list[Phase], seed: int) -> Synthetic:
    """Records of every window of every phase, and each phase's truth."""
    rng = np.random.default_rng(seed)
    out = Synthetic()
    for phase in phases:
        truth = PhaseTruth(rate_per_1000=site.conflicts_per_1000 * phase.conflict_factor)
        day, g = -1, 1.0
        for k in range(round(phase.days * 86_400 / site.window_s)):
            start = phase.start + timedelta(seconds=k * site.window_s)
            if (start - phase.start).days != day:  # a new day: a new draw of its conflict rate
                day = (start - phase.start).days
                g = rng.gamma(site.day_shape_k, 1.0 / site.day_shape_k) if site.day_shape_k > 0 else 1.0
            _window(site, phase, start, g, rng, out, truth)
        out.truth.append(truth)
    return out


def _window(site: SiteModel, phase: Phase, start: datetime, g: float, rng: np.random.Generator, out: Synthetic,
            truth: PhaseTruth) -> None:
    hour = start.hour + start.minute / 60.0 + site.window_s / 7200.0
    weekend = site.weekend_factor if start.weekday() >= 5 else 1.0
    lam = site.vehicles_per_hour * site.window_s / 3600.0 * float(daily_profile(np.array([hour]))[0]) * weekend
    lam *= phase.volume_factor
    moves: dict[str, dict[str, int]] = {}
    for origin, dest, share in movements():
        drawn = {c: int(rng.poisson(lam / 4 * share * s)) for c, s in site.class_share.items()}
        moves[f"{origin}->{dest}"] = {c: n for c, n in drawn.items() if n}
    entering = sum(n for per in moves.values() for c, n in per.items() if c in MOTOR)
    n_conf = int(rng.poisson(site.conflicts_per_1000 * phase.conflict_factor * g * entering / 1000.0))
    iso = iso_utc(start)
    events = [_event(site, phase, start, rng) for _ in range(n_conf)]
    by_type = {t: dict.fromkeys(SEVERITIES, 0) for t in CONFLICT_TYPES}
    for e in events:
        by_type[e.conflict_type][e.severity] += 1
    counts = _line_counts(moves)
    out.metrics.append(WindowMetrics.model_validate({
        "msg_id": window_msg_id(site.device, site.camera, iso), "device": site.device, "camera": site.camera,
        "window_start": iso, "window_s": site.window_s, "partial": False, "counts": counts, "movements": moves,
        "conflicts": {"by_type": by_type, "vulnerable": sum(e.vulnerable for e in events),
                      "vehicles_entering": entering,
                      "per_1000_vehicles": round(1000.0 * n_conf / entering, 3) if entering else None},
        "health": {"frames": int(site.window_s * site.fps), "dropped_frames": 0, "fps": site.fps},
    }))
    if site.with_speeds:
        out.speeds += _speeds(site, phase, iso, counts, rng, truth)
    out.events += events
    truth.vehicles_entering += entering
    truth.observed_s += site.window_s
    truth.conflicts += n_conf
    truth.events += len(events)
    truth.ttc_s += [e.ttc_s for e in events if e.ttc_s is not None]


def _line_counts(moves: dict[str, dict[str, int]]) -> dict[str, dict[str, dict[str, int]]]:
    counts = {a: {d: dict.fromkeys(ROAD_USER_CLASSES, 0) for d in ("in", "out")} for a in APPROACHES}
    for name, per_class in moves.items():
        origin, dest = name.split("->")
        for c, n in per_class.items():
            counts[origin]["in"][c] += n
            counts[dest]["out"][c] += n
    return counts


def _speeds(site: SiteModel, phase: Phase, iso: str, counts: dict[str, dict[str, dict[str, int]]],
            rng: np.random.Generator, truth: PhaseTruth) -> list[WindowSpeeds]:
    records = []
    for line, per_dir in counts.items():
        speeds: dict[str, dict[str, Any]] = {}
        for direction, per_class in per_dir.items():
            speeds[direction] = {}
            for cls, n in per_class.items():
                if not n:
                    continue
                measured = int(rng.binomial(n, site.measured_share))
                mean = (18.0 if cls == "bicycle" else site.speed_mean_kmh + (-3.0 if direction == "out" else 0.0)
                        + phase.speed_shift_kmh)
                v = np.maximum(3.0, rng.normal(mean, site.speed_sd_kmh * (0.5 if cls == "bicycle" else 1.0),
                                               measured))
                if cls in MOTOR:
                    truth.speeds_kmh.setdefault((line, direction), []).append(v)
                speeds[direction][cls] = window_speed_stats(v, site.speed_limit_kmh, n - measured)
        records.append(WindowSpeeds.model_validate({
            "msg_id": window_msg_id(site.device, site.camera, iso, f"speeds/{line}"), "device": site.device,
            "camera": site.camera, "window_start": iso, "window_s": site.window_s, "partial": False, "line": line,
            "speed_limit_kmh": site.speed_limit_kmh, "speeds": speeds,
        }))
    return records


def _linear_quantile(s: np.ndarray, q: float) -> float:
    """numpy's default (linear) percentile of an already sorted sample; np.percentile is 20x slower on the
    small samples of a window, and tests check the two agree."""
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return float(s[lo] + (s[hi] - s[lo]) * (pos - lo))


def window_speed_stats(v: np.ndarray, limit_kmh: float, unmeasured: int, min_count: int = 3) -> dict[str, Any]:
    """A window's SpeedStats fields from its speeds, as the device computes them
    (:func:`edge.analytics.speeds.speed_stats`), the statistics withheld below ``min_count``."""
    out: dict[str, Any] = {"count": len(v), "unmeasured": unmeasured,
                           "over_limit": int(np.count_nonzero(v > limit_kmh))}
    if len(v) >= min_count:
        s = np.sort(v)
        out |= {"mean_kmh": round(float(v.mean()), 1), "p50_kmh": round(_linear_quantile(s, 0.5), 1),
                "p85_kmh": round(_linear_quantile(s, 0.85), 1)}
    return out


def _event(site: SiteModel, phase: Phase, start: datetime, rng: np.random.Generator) -> NearMissEvent:
    ctype = str(rng.choice(CONFLICT_TYPES, p=[0.5, 0.2, 0.3]))
    severity = str(rng.choice(SEVERITIES, p=[0.1, 0.3, 0.6]))
    vulnerable = bool(rng.random() < 0.15)
    classes = ("car", str(rng.choice(["bicycle", "person", "motorcycle"]))) if vulnerable else (
        "car", str(rng.choice(["car", "truck", "bus"], p=[0.85, 0.1, 0.05])))
    ttc = float(min(1.5, rng.lognormal(math.log(site.ttc_median_s), 0.35)) * phase.ttc_factor)
    pet = float(min(1.5, rng.lognormal(math.log(0.8), 0.45)) * phase.ttc_factor) if ctype != "rear_end" else None
    speeds = (float(rng.uniform(4, 14)), float(rng.uniform(1, 12)))
    if ctype == "rear_end":  # on an approach, a few metres before the stop line
        ux, uy = _UNIT[str(rng.choice(APPROACHES))]
        d = rng.uniform(8, 22)
        loc = (ux * d + rng.normal(0, 1.5), uy * d + rng.normal(0, 1.5))
    else:  # in the junction box
        loc = (rng.normal(0, 4.0), rng.normal(0, 4.0))
    t = start + timedelta(seconds=float(rng.uniform(0, site.window_s)))
    return NearMissEvent(
        msg_id=str(uuid.UUID(bytes=rng.bytes(16), version=4)), device=site.device, camera=site.camera,
        time=iso_utc(t.replace(microsecond=t.microsecond // 100_000 * 100_000)), conflict_type=ctype,
        severity=severity, road_users=classes, speeds_mps=speeds, vulnerable=vulnerable,
        ttc_s=round(ttc, 2), pet_s=round(pet, 2) if pet is not None else None,
        drac_mps2=round(speeds[0] / (2 * ttc), 2), time_exposed_s=round(float(rng.uniform(0.2, 1.5)), 2),
        location_m=(round(float(loc[0])), round(float(loc[1]))),
    )


def site_config_yaml(site: SiteModel) -> str:
    """An edge config for the synthetic site: an exact top-down calibration (10 px per metre, image centre
    at the junction centre), a line across each arm and a zone around it."""
    def px(x: float, y: float) -> list[float]:
        return [round(400 + 10 * x, 1), round(300 - 10 * y, 1)]

    refs = [(-30.0, -30.0), (30.0, -30.0), (30.0, 30.0), (-30.0, 30.0), (0.0, 12.0)]
    lines, zones = [], []
    for a in APPROACHES:
        ux, uy = _UNIT[a]
        px_, py_ = -uy, ux  # across the arm
        c = (ux * 12.0, uy * 12.0)
        lines.append({"name": a, "points_px": [px(c[0] - 7 * px_, c[1] - 7 * py_), px(c[0] + 7 * px_, c[1] + 7 * py_)],
                      "directions": ["in", "out"]})
        far, near = _ARM_M + 5.0, 13.0
        zones.append({"name": a, "points_px": [px(ux * near - 8 * px_, uy * near - 8 * py_),
                                               px(ux * far - 8 * px_, uy * far - 8 * py_),
                                               px(ux * far + 8 * px_, uy * far + 8 * py_),
                                               px(ux * near + 8 * px_, uy * near + 8 * py_)]})
    doc = {"device_id": site.device, "windows": {"window_s": site.window_s},
           "cameras": [{"name": site.camera, "lines": lines, "movements": {"zones": zones},
                        "speeds": {"speed_limit_kmh": site.speed_limit_kmh},
                        "calibration": {"points": [{"image_px": px(x, y), "ground_m": [x, y]} for x, y in refs]}}]}
    text: str = yaml.safe_dump(doc, sort_keys=False)
    return "# synthetic site of edge.city.synth: top-down, 10 px per metre\n" + text


def fill(archive: Archive, data: Synthetic, source: str = "synth") -> None:
    """Store generated records in an archive, in one transaction, by the path every record takes
    (:meth:`Archive.store`). They are typed contract models already, so the JSON Schema step of an import
    is skipped (tests check that generated records pass it)."""
    with archive.batch():
        for record in data.records():
            kind: RecordKind = ("metrics" if isinstance(record, WindowMetrics)
                                else "speeds" if isinstance(record, WindowSpeeds) else "event")
            archive.store(Valid(kind, record), source)


def study_phases(before_start: datetime, days: int, *, gap_days: int = 7, **after: float) -> list[Phase]:
    """A before phase and an after phase of ``days`` days each, ``gap_days`` apart (the works)."""
    after_start = before_start + timedelta(days=days + gap_days)
    return [Phase(before_start, days), Phase(after_start, days, **after)]


DEFAULT_START: Final = datetime(2024, 4, 1, tzinfo=UTC)
