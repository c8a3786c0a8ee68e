"""The study's tables, from :class:`~edge.city.study.StudyData` of each period: volumes, speeds, conflicts and the
before/after comparison. Pure functions of the data (no I/O); the report formats and plots them.

Volumes are motor vehicles (car, bus, truck, motorcycle) unless a table says otherwise. The volume basis of a
site is its turning movements when it has zones, otherwise the vehicles entering its view (calibrated cameras),
otherwise its line crossings summed over lines. Profiles and peak hours are of the *average day*: per
15-minute bin of the day, the volume over the hours observed in that bin across the period, so gaps and
clips shorter than a bin never read as low traffic; a bin observed for less than half of its 15 minutes
on average is marked as such.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from edge.city.site import SiteGeometry
from edge.city.stats import (
    QUANTILES,
    Comparison,
    RateRatio,
    bootstrap_quantiles,
    compare_samples,
    mixture_cdf_by_group,
    quantiles_of_cdf,
    rate_ratio,
    ratio_of_ratios,
)
from edge.city.study import BIN_S, MOTOR, StudyData

BINS_PER_DAY: Final = 86_400 // BIN_S
CONFLICT_KINDS: Final = (("rear_end", "rear-end"), ("crossing", "crossing"), ("angled", "angled / lane change"))


# ------------------------------------------------------------------------------------------------ volumes
def movement_label(geometry: SiteGeometry | None, movement: str) -> tuple[str, str, str]:
    """(approach, exit, movement) of ``A->B``: the movement is its turn type when the geometry names it."""
    origin, _, dest = movement.partition("->")
    turn = geometry.turn(origin, dest) if geometry is not None else None
    return origin, dest, turn or movement


def movement_labels(geometry: SiteGeometry | None, data: StudyData) -> dict[str, tuple[str, str, str]]:
    """:func:`movement_label` of every movement in the data (once per movement, not per row)."""
    return {m: movement_label(geometry, m) for m in {row[1] for row in data.movements}}


def volume_basis(data: StudyData) -> tuple[str, dict[int, float]]:
    """(what the volumes are, bin -> motor volume)."""
    if data.movements:
        out: dict[int, float] = defaultdict(float)
        for b, _m, cls, n in data.movements:
            if cls in MOTOR:
                out[b] += n
        return "turning movements (motor vehicles)", dict(out)
    if any(data.entering.values()):
        return "motor vehicles entering the view", {b: float(n) for b, n in data.entering.items()}
    out = defaultdict(float)
    for b, _line, _d, cls, n in data.lines:
        if cls in MOTOR:
            out[b] += n
    return "line crossings of motor vehicles, all lines", dict(out)


@dataclass
class Profile:
    """The average day in 15-minute bins of local time: vehicles per hour, and the share of each bin observed."""

    rate_vph: np.ndarray  # (96,) NaN where never observed
    coverage: np.ndarray  # (96,) mean fraction of the bin observed on the days of the period


def average_day(data: StudyData, volume: dict[int, float]) -> Profile:
    vol, seconds = np.zeros(BINS_PER_DAY), np.zeros(BINS_PER_DAY)
    for b, s in data.bins.items():
        t = data.local(b)
        k = (t.hour * 3600 + t.minute * 60) // BIN_S
        vol[k] += volume.get(b, 0.0)
        seconds[k] += s
    days = max(1.0, round(data.period.days))
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(seconds > 0, vol / (seconds / 3600.0), np.nan)
    return Profile(rate, seconds / (days * BIN_S))


@dataclass(frozen=True)
class PeakHour:
    label: str  # "AM" / "PM"
    start: str  # local HH:MM
    volume: float  # vehicles in the hour (average day)
    max15: float
    phf: float  # V_hour / (4 x V_15max)
    covered: bool  # every bin of the hour observed for at least half of its time on average


def peak_hours(profile: Profile) -> list[PeakHour]:
    """The AM (starting 00:00-11:45) and PM (12:00-22:45) peak hours of the average day, with their peak hour
    factor PHF = V_hour / (4 x V_15max) (Highway Capacity Manual)."""
    v15 = np.nan_to_num(profile.rate_vph) / 4.0  # vehicles per 15 minutes
    out = []
    for label, first, last in (("AM", 0, 47), ("PM", 48, BINS_PER_DAY - 4)):
        sums = [float(v15[k:k + 4].sum()) for k in range(first, last + 1)]
        k = int(np.argmax(sums))
        start = first + k
        hour, m15 = sums[k], float(v15[start:start + 4].max())
        if hour <= 0:
            continue
        out.append(PeakHour(label, f"{start // 4:02d}:{start % 4 * 15:02d}", hour, m15,
                            hour / (4 * m15) if m15 > 0 else math.nan,
                            bool(np.all(profile.coverage[start:start + 4] >= 0.5))))
    return out


def movement_totals(data: StudyData, geometry: SiteGeometry | None) -> dict[tuple[str, str, str, str], int]:
    """(approach, movement, exit, class) -> volume over the period."""
    out: dict[tuple[str, str, str, str], int] = defaultdict(int)
    labels = movement_labels(geometry, data)
    for _b, movement, cls, n in data.movements:
        approach, dest, turn = labels[movement]
        out[(approach, turn, dest, cls)] += n
    return dict(out)


# ------------------------------------------------------------------------------------------------- speeds
@dataclass
class SpeedSummary:
    """One line and direction in one period (motor vehicles pooled)."""

    line: str
    direction: str
    measured: int  # crossings with a speed
    withheld: int  # of those, in windows whose statistics were withheld (below the minimum count)
    unmeasured: int
    quantiles: np.ndarray  # p15, p50, p85, p95 (NaN without data)
    boot: np.ndarray  # bootstrap replicates of the quantiles (boots, 4)
    over: int
    limit: float
    window_means: np.ndarray
    cdf: np.ndarray  # the mixture CDF on SPEED_GRID, normalised (zeros without data)
    daily_over: np.ndarray  # per day with crossings: over the limit ...
    daily_measured: np.ndarray  # ... and measured

    @property
    def share_over(self) -> float:
        return self.over / self.measured if self.measured else math.nan


def speed_summaries(data: StudyData, rng: np.random.Generator) -> dict[tuple[str, str], SpeedSummary]:
    s = data.speeds
    out: dict[tuple[str, str], SpeedSummary] = {}
    motor = np.isin(s.cls, list(MOTOR)) if len(s.cls) else np.zeros(0, dtype=bool)
    starts, inverse = np.unique(s.t0, return_inverse=True)  # one time-zone conversion per window, not per row
    days = np.array([data.local(t).date().toordinal() for t in starts], dtype=np.int64)[inverse]
    for line, direction in sorted({(str(a), str(b)) for a, b in zip(s.line[motor], s.direction[motor], strict=True)}):
        m = motor & (s.line == line) & (s.direction == direction)
        has = m & np.isfinite(s.mean)
        _labels, mass = mixture_cdf_by_group(days[has], s.count[has], s.mean[has], s.p50[has], s.p85[has])
        total = mass.sum(axis=0)
        day_labels, day_index = np.unique(days[m], return_inverse=True)
        over, measured = np.zeros(len(day_labels)), np.zeros(len(day_labels))
        np.add.at(over, day_index, s.over_limit[m])
        np.add.at(measured, day_index, s.count[m])
        out[(line, direction)] = SpeedSummary(
            line, direction, int(s.count[m].sum()), int(s.count[m & ~np.isfinite(s.mean)].sum()),
            int(s.unmeasured[m].sum()), quantiles_of_cdf(total)[0] if len(mass) else np.full(len(QUANTILES), np.nan),
            bootstrap_quantiles(mass, rng=rng), int(s.over_limit[m].sum()),
            float(np.nanmax(s.limit[m])) if m.any() else math.nan, s.mean[has],
            total / total[-1] if len(mass) and total[-1] > 0 else np.zeros_like(total), over, measured,
        )
    return out


# ---------------------------------------------------------------------------------------------- conflicts
def type_severity(data: StudyData) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = defaultdict(int)
    for _b, ctype, severity, n in data.conflicts:
        out[(ctype, severity)] += n
    return dict(out)


def _daily_arrays(data: StudyData, what: str, exposure: str) -> tuple[np.ndarray, np.ndarray]:
    d = data.daily
    counts = np.array(d.by_kind[what] if what in d.by_kind else getattr(d, what), dtype=np.float64)
    exp = np.array(d.entering, dtype=np.float64) / 1000.0 if exposure == "entering" else np.array(d.hours)
    return counts, exp


# ------------------------------------------------------------------------------------------- before/after
@dataclass
class ChangeRow:
    """One metric before and after, with its change, interval, test and verdict."""

    metric: str
    unit: str
    before: float
    after: float
    change: str  # e.g. "-31 %" or "-2.1 km/h"
    low: float
    high: float
    interval: str
    test: str
    p_value: float
    claims_change: bool
    n: str = ""  # sample sizes

    @property
    def verdict(self) -> str:
        if not math.isfinite(self.p_value):
            return "not enough data"
        if not self.claims_change:
            return "no evidence of a change"
        return "decrease" if self.after < self.before else "increase"


def _pct(x: float) -> str:
    return f"{100 * (x - 1):+.0f} %" if math.isfinite(x) else "-"


def rate_row(metric: str, unit: str, rr: RateRatio, scale: float = 1.0) -> ChangeRow:
    """A rate's row; ``scale`` multiplies the rates shown (100: a share in %)."""
    before = scale * rr.x0 / rr.e0 if rr.e0 > 0 else math.nan
    after = scale * rr.x1 / rr.e1 if rr.e1 > 0 else math.nan
    interval = f"ratio {rr.ratio:.2f} [{rr.low:.2f}, {rr.high:.2f}]" if math.isfinite(rr.ratio) else "-"
    p = rr.p_value if rr.x0 + rr.x1 > 0 else math.nan  # nothing counted in either period: nothing to compare
    return ChangeRow(metric, unit, before, after, _pct(rr.ratio), rr.low, rr.high, interval, rr.method, p,
                     rr.claims_change, f"{rr.x0:.0f} / {rr.x1:.0f}")


def conflict_rates(before: StudyData, after: StudyData) -> list[tuple[str, str, RateRatio, float]]:
    """(metric, unit, rate ratio, display scale) of every conflict and volume rate compared."""
    out = []
    specs = [("motor vehicles entering", "per hour observed", "entering", "hours", 1.0),
             ("conflicts", "per 1,000 entering vehicles", "conflicts", "entering", 1.0),
             ("conflicts", "per hour observed", "conflicts", "hours", 1.0),
             ("serious conflicts (severity high)", "per 1,000 entering vehicles", "high", "entering", 1.0),
             ("conflicts with a vulnerable road user", "per 1,000 entering vehicles", "vulnerable", "entering", 1.0)]
    specs += [(f"{label} conflicts", "per 1,000 entering vehicles", key, "entering", 1.0)
              for key, label in CONFLICT_KINDS]
    for metric, unit, what, exposure, scale in specs:
        if what == "entering":
            c0, e0 = np.array(before.daily.entering, dtype=np.float64), np.array(before.daily.hours)
            c1, e1 = np.array(after.daily.entering, dtype=np.float64), np.array(after.daily.hours)
        else:
            c0, e0 = _daily_arrays(before, what, exposure)
            c1, e1 = _daily_arrays(after, what, exposure)
        out.append((metric, unit, rate_ratio(c0, e0, c1, e1), scale))
    return out


def comparison_row(treated: tuple[StudyData, StudyData], comparison: tuple[StudyData, StudyData]) -> ChangeRow | None:
    arrays = [(*_daily_arrays(a, "conflicts", "entering"), *_daily_arrays(b, "conflicts", "entering"))
              for a, b in (treated, comparison)]
    rr = ratio_of_ratios(arrays[0], arrays[1])
    if rr is None:
        return None
    row = rate_row("conflicts, relative to the comparison site", "per 1,000 entering vehicles", rr)
    row.metric = f"conflicts at {treated[0].site} relative to {comparison[0].site}"
    return row


def speed_rows(before: dict[tuple[str, str], SpeedSummary], after: dict[tuple[str, str], SpeedSummary],
               rng: np.random.Generator) -> list[ChangeRow]:
    rows = []
    for key in sorted(set(before) & set(after)):
        b, a = before[key], after[key]
        name = f"{key[0]} {key[1]}"
        diff = a.boot[:, 2] - b.boot[:, 2]
        lo, hi = (np.nanquantile(diff, [0.025, 0.975]) if np.isfinite(diff).sum() > 10 else (math.nan, math.nan))
        test = compare_samples(b.window_means, a.window_means, rng=rng)
        d85 = float(a.quantiles[2] - b.quantiles[2])
        rows.append(ChangeRow(
            f"p85 speed (estimated), {name}", "km/h", float(b.quantiles[2]),
            float(a.quantiles[2]), f"{d85:+.1f} km/h" if math.isfinite(d85) else "-", float(lo), float(hi),
            f"[{lo:+.1f}, {hi:+.1f}] km/h (bootstrap)" if math.isfinite(lo) else "-",
            "Mann-Whitney U, window means" + (f"; KS p = {test.ks_p:.3g}" if test else ""),
            test.mwu_p if test else math.nan,
            bool(test and test.mwu_p < 0.05 and math.isfinite(lo) and not (lo <= 0 <= hi)),
            f"{b.measured} / {a.measured} crossings"))
        rows.append(_share_row(name, b, a))
    return rows


def _share_row(name: str, b: SpeedSummary, a: SpeedSummary) -> ChangeRow:
    """The share over the limit: a rate of over-limit crossings per measured crossing, compared like the conflict
    rates (NB2 over days), because crossings come in platoons and days differ: a test that took crossings as
    independent would claim changes that are not there."""
    rr = rate_ratio(b.daily_over, b.daily_measured, a.daily_over, a.daily_measured)
    return rate_row(f"share over {b.limit:g} km/h, {name}", "% of measured crossings", rr, 100.0)


def measure_rows(before: StudyData, after: StudyData, rng: np.random.Generator) -> list[ChangeRow]:
    rows = []
    for name, attr in (("TTC", "ttc"), ("PET", "pet")):
        test: Comparison | None = compare_samples(getattr(before.events, attr), getattr(after.events, attr), rng=rng)
        if test is None:
            rows.append(ChangeRow(f"median {name} of conflicts", "s", math.nan, math.nan, "-", math.nan, math.nan,
                                  "-", "Mann-Whitney U, Kolmogorov-Smirnov", math.nan, False,
                                  f"{int(np.isfinite(getattr(before.events, attr)).sum())} / "
                                  f"{int(np.isfinite(getattr(after.events, attr)).sum())} events"))
            continue
        rows.append(ChangeRow(
            f"median {name} of conflicts", "s", test.median0, test.median1, f"{test.diff:+.2f} s", test.low, test.high,
            f"[{test.low:+.2f}, {test.high:+.2f}] s (bootstrap)", f"Mann-Whitney U; KS p = {test.ks_p:.3g}",
            test.mwu_p, test.claims_change, f"{test.n0} / {test.n1} events"))
    return rows


@dataclass
class BeforeAfter:
    rows: list[ChangeRow] = field(default_factory=list)


def before_after(before: StudyData, after: StudyData, speeds: tuple[dict[tuple[str, str], SpeedSummary], ...],
                 rng: np.random.Generator, comparison: tuple[StudyData, StudyData] | None = None) -> BeforeAfter:
    out = BeforeAfter([rate_row(m, u, rr, s) for m, u, rr, s in conflict_rates(before, after)])
    if comparison is not None and (row := comparison_row((before, after), comparison)) is not None:
        out.rows.insert(2, row)
    out.rows += speed_rows(speeds[0], speeds[1], rng)
    out.rows += measure_rows(before, after, rng)
    return out
