"""``edge report``: the before/after safety study of one site, as a self-contained HTML file, CSV exports and
optionally a PDF (printed by a headless Chromium).

Outputs in the report folder:

=========================  =====================================================================================
``report.html``            the study: data coverage, before vs after, volumes, speeds, conflicts, method, caveats
``volumes_15min.csv``      turning movement counts: site, period, approach, movement, exit, class, bin_start,
                           observed_s, volume (zeros included for every movement and class seen in the period)
``line_counts_15min.csv``  line crossings: site, period, line, direction, class, bin_start, observed_s, volume
``observation_15min.csv``  site, period, bin_start, observed_s, windows: what was observed, so gaps show
``peak_hours.csv``         site, period, peak, start, volume, max_15min, phf, covered
``speeds.csv``             per period, line and direction: crossings, withheld, p15/p50/p85/p95, share over limit
``conflicts.csv``          per period, type and severity: count, per hour observed, per 1,000 entering vehicles
``events.csv``             the near-miss events of both periods (the anonymous fields of the event records)
``before_after.csv``       every compared metric: before, after, change, interval, test, p value, verdict
``report.pdf``             with ``--pdf``
=========================  =====================================================================================

Bin starts are local times with their UTC offset (ISO 8601), e.g. ``2024-04-01T07:15:00+02:00``.
"""

from __future__ import annotations

import csv
import math
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jinja2
import markupsafe
import numpy as np

from edge import __version__
from edge.city import analysis as an
from edge.city import browser, plots
from edge.city.site import SiteGeometry
from edge.city.store import Archive
from edge.city.study import MOTOR, Period, StudyData, load_study
from edge.city.template import TABLE, TEMPLATE
from edge.errors import EdgeError
from edge.types import ROAD_USER_CLASSES


@dataclass(frozen=True)
class SiteRef:
    name: str
    device: str
    camera: str
    geometry: SiteGeometry | None = None


@dataclass(frozen=True)
class ReportRequest:
    site: SiteRef
    before: Period
    after: Period
    tz: zoneinfo.ZoneInfo
    output: Path
    comparison: SiteRef | None = None
    pdf: bool = False
    seed: int = 0


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    title: str = ""
    note: str = ""
    left: int = 1  # leading columns aligned left
    claims: list[bool] | None = None


@dataclass(frozen=True)
class ReportResult:
    html: Path
    csvs: list[Path]
    pdf: Path | None
    change: list[an.ChangeRow]


def f(x: float, digits: int = 1) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:,.{digits}f}"


def duration(seconds: float) -> str:
    """Observation time as a person reads it: 3.0 s, 12.5 min, 334.0 h."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:,.1f} h"


def _share(pct: float) -> str:
    return "< 0.1" if 0 < pct < 0.05 else f(pct, 1)


def _p(x: float) -> str:
    return "-" if not math.isfinite(x) else ("< 0.001" if x < 0.001 else f"{x:.3f}")


def _load(archive: Archive, ref: SiteRef, periods: tuple[Period, Period], tz: zoneinfo.ZoneInfo) -> list[StudyData]:
    out = []
    for period in periods:
        data = load_study(archive, ref.device, ref.camera, period, tz, ref.name)
        if data.windows == 0:
            held = "; ".join(f"{d}/{c}: {n} windows" for d, c, _a, _b, n in archive.cameras()) or "nothing"
            raise EdgeError(f"no windows of {ref.device}/{ref.camera} in the {period.label} period "
                            f"({period.text(tz)}); the archive holds {held}")
        out.append(data)
    return out


def build_report(archive: Archive, req: ReportRequest) -> ReportResult:
    """Compute, plot and write everything; returns where it went."""
    rng = np.random.default_rng(req.seed)  # bootstraps: the same archive gives the same report
    before, after = _load(archive, req.site, (req.before, req.after), req.tz)
    comparison = (tuple(_load(archive, req.comparison, (req.before, req.after), req.tz))
                  if req.comparison is not None else None)
    speeds = (an.speed_summaries(before, rng), an.speed_summaries(after, rng))
    change = an.before_after(before, after, speeds, rng, comparison)  # type: ignore[arg-type]
    req.output.mkdir(parents=True, exist_ok=True)
    csvs = write_csvs(req, (before, after), speeds, change.rows)
    context = _context(archive, req, (before, after), speeds, change.rows, csvs)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    table = env.from_string(TABLE)
    context["table"] = lambda t: markupsafe.Markup(table.render(t=t))
    html = req.output / "report.html"
    html.write_text(env.from_string(TEMPLATE).render(**context), encoding="utf-8")
    pdf = browser.print_pdf(html) if req.pdf else None
    return ReportResult(html, csvs, pdf, change.rows)


# ------------------------------------------------------------------------------------------------- context
def _context(archive: Archive, req: ReportRequest, periods: tuple[StudyData, StudyData],
             speeds: tuple[dict[tuple[str, str], an.SpeedSummary], ...], change: list[an.ChangeRow],
             csvs: list[Path]) -> dict[str, Any]:
    before = periods[0]
    geometry = req.site.geometry
    basis, _ = an.volume_basis(before)
    counts = archive.counts()
    return {
        "site": req.site.name, "device": req.site.device, "camera": req.site.camera, "tz": str(req.tz),
        "before_text": req.before.text(req.tz), "after_text": req.after.text(req.tz),
        "comparison": req.comparison.name if req.comparison else None,
        "coverage": _coverage_table(periods), "findings": _findings(change),
        "archive_note": (f"Archive: {counts.windows:,} windows, {counts.speeds:,} speeds records, {counts.events:,} "
                         f"events; {counts.quarantined:,} payload(s) quarantined as invalid (kept, not used)."),
        "change": _change_table(change), "caveats": caveats(req, periods),
        "peaks": _peak_table(periods), "movement_tables": _movement_tables(periods, geometry),
        "speed_table": _speed_table(speeds), "conflict_table": _conflict_table(periods),
        "plots": _plots(periods, speeds, geometry, basis), "method": list(METHOD),
        "csv_volumes": ["volumes_15min.csv", "line_counts_15min.csv", "observation_15min.csv"],
        "csv_all": [p.name for p in csvs], "version": __version__, "archive": archive.path.name,
    }


def _plots(periods: tuple[StudyData, StudyData], speeds: tuple[dict[tuple[str, str], an.SpeedSummary], ...],
           geometry: SiteGeometry | None, basis: str) -> dict[str, str]:
    named = {d.period.label: d for d in periods}
    movement_rates: dict[str, dict[tuple[str, str], float]] = {}
    for label, d in named.items():
        per: dict[tuple[str, str], float] = defaultdict(float)
        for (approach, turn, _dest, cls), n in an.movement_totals(d, geometry).items():
            if cls in MOTOR and d.observed_h > 0:
                per[(approach, turn)] += n / d.observed_h
        movement_rates[label] = dict(per)
    severity = {label: {k: 1000 * n / max(1, sum(d.daily.entering)) for k, n in an.type_severity(d).items()}
                for label, d in named.items()}
    return {
        "profile": plots.volume_profile({k: an.average_day(d, an.volume_basis(d)[1]) for k, d in named.items()}, basis),
        "movements": plots.movement_bars(movement_rates),
        "daily": plots.daily_conflict_rates({k: (d.daily.day, np.array(d.daily.conflicts, dtype=float),
                                                 np.array(d.daily.entering, dtype=float)) for k, d in named.items()}),
        "speeds": plots.speed_cdfs({d.period.label: s for d, s in zip(periods, speeds, strict=True)}),
        "measures": plots.measure_histograms({k: d.events for k, d in named.items()}),
        "map": plots.conflict_map(geometry, {k: d.events for k, d in named.items()}),
        "severity": plots.severity_chart(severity),
    }


def _coverage_table(periods: tuple[StudyData, ...]) -> Table:
    rows = []
    for d in periods:
        days = len(d.daily.day)
        rows.append([d.period.label, d.period.text(d.tz), str(days), f"{d.windows:,}", f"{d.partial_windows:,}",
                     duration(d.observed_s), _share(100 * d.observed_s / (d.period.days * 86_400)),
                     f"{sum(d.daily.entering):,}", f"{sum(d.daily.conflicts):,}", f"{len(d.events):,}"])
    return Table(["period", "dates", "days with data", "windows", "partial windows", "observed",
                  "coverage %", "motor vehicles entering", "conflicts", "event records"], rows, left=2,
                 note="Coverage: hours observed over the hours of the period. Rates below are per hour observed or "
                 "per 1,000 entering vehicles, so gaps lower precision, not the rates.")


def _findings(change: list[an.ChangeRow]) -> list[str]:
    out = []
    for r in change[:3]:
        if not math.isfinite(r.p_value):
            out.append(f"{r.metric} ({r.unit}): not enough data to compare ({r.n}).")
            continue
        out.append(f"{r.metric} ({r.unit}): {f(r.before, 2)} before, {f(r.after, 2)} after, {r.change} "
                   f"({r.interval}, p {_p(r.p_value)}): {r.verdict}.")
    return out


def _change_table(change: list[an.ChangeRow]) -> Table:
    rows = [[r.metric, r.unit, f(r.before, 2), f(r.after, 2), r.change, r.interval, r.n, r.test, _p(r.p_value),
             r.verdict] for r in change]
    return Table(["metric", "unit", "before", "after", "change", "95 % interval", "n (before / after)", "test",
                  "p", "verdict"], rows, left=2, claims=[r.claims_change for r in change],
                 note="A change is claimed only when p < 0.05 and the 95 % interval excludes no change; highlighted "
                 "rows claim one. Many rows are tested: about one in twenty shows p < 0.05 by chance alone.")


def _peak_table(periods: tuple[StudyData, ...]) -> Table:
    rows = []
    for d in periods:
        for p in an.peak_hours(an.average_day(d, an.volume_basis(d)[1])):
            if p.covered:
                rows.append([d.period.label, p.label, p.start, f(p.volume, 0), f(p.max15, 0), f(p.phf, 2), "yes"])
            else:  # a volume extrapolated from seconds of video is no peak hour
                rows.append([d.period.label, p.label, p.start, "-", "-", "-", "no: less than half of each "
                             "15 minutes observed"])
    return Table(["period", "peak", "start", "vehicles in the hour", "busiest 15 min", "PHF", "observed"], rows,
                 left=3, title="Peak hours of the average day",
                 note="PHF = V_hour / (4 x V_15max). From the average day's 15-minute volumes (per hour observed).")


def _movement_tables(periods: tuple[StudyData, ...], geometry: SiteGeometry | None) -> list[Table]:
    out = []
    classes = list(ROAD_USER_CLASSES)
    for d in periods:
        totals = an.movement_totals(d, geometry)
        if not totals:
            continue
        keys = sorted({(a, m, e) for a, m, e, _c in totals})
        rows = [[a, m, e, *[f"{totals.get((a, m, e, c), 0):,}" for c in classes],
                 f(sum(totals.get((a, m, e, c), 0) for c in MOTOR) / d.observed_h if d.observed_h else math.nan, 1)]
                for a, m, e in keys]
        out.append(Table(["approach", "movement", "exit", *classes, "motor veh/h"], rows, left=3,
                         title=f"Turning movement counts, {d.period.label} ({duration(d.observed_s)} observed)"))
    return out


def _speed_table(speeds: tuple[dict[tuple[str, str], an.SpeedSummary], ...]) -> Table:
    rows = []
    for label, per in zip(("before", "after"), speeds, strict=True):
        for (line, direction), s in sorted(per.items()):
            q = s.quantiles
            rows.append([label, line, direction, f"{s.measured:,}", f"{s.withheld:,}", f"{s.unmeasured:,}",
                         f(q[0]), f(q[1]), f(q[2]), f(q[3]), f(100 * s.share_over, 1), f(s.limit, 0)])
    return Table(["period", "line", "direction", "measured", "in withheld windows", "unmeasured", "p15", "p50", "p85",
                  "p95", "% over limit", "limit km/h"], rows, left=3, title="Speeds of motor vehicles (km/h)")


def _conflict_table(periods: tuple[StudyData, ...]) -> Table:
    rows = []
    for d in periods:
        entering = sum(d.daily.entering)
        ts = an.type_severity(d)
        for ctype, name in an.CONFLICT_KINDS:
            for severity in ("high", "medium", "low"):
                n = ts.get((ctype, severity), 0)
                rows.append([d.period.label, name, severity, f"{n:,}", f(n / d.observed_h if d.observed_h else math.nan,
                                                                         3),
                             f(1000 * n / entering if entering else math.nan, 3)])
        total = sum(ts.values())
        rows.append([d.period.label, "all", "all", f"{total:,}", f(total / d.observed_h if d.observed_h else math.nan,
                                                                    3),
                     f(1000 * total / entering if entering else math.nan, 3)])
    return Table(["period", "type", "severity", "conflicts", "per hour observed", "per 1,000 entering"], rows, left=3,
                 title="Conflicts by type and severity")


def caveats(req: ReportRequest, periods: tuple[StudyData, StudyData]) -> list[str]:
    before, after = periods
    out = [
        "Regression to the mean: a site is usually chosen for treatment after a bad spell, and a bad spell tends "
        "to be followed by a better one with or without a countermeasure. A simple before/after comparison "
        "therefore overstates the effect. " + (
            f"The comparison site {req.comparison.name} corrects for changes common to both sites (season, weather, "
            "traffic growth, a software update), assuming both would have changed alike without the countermeasure; "
            "it corrects regression to the mean only if it was chosen by the same criterion as the treated site."
            if req.comparison is not None else
            "No comparison site was given: the change below mixes the countermeasure with every other change "
            "between the periods. Give one with --comparison, or correct with an Empirical Bayes estimate from a "
            "safety performance function."),
        "Conflicts are surrogate safety measures (traffic conflicts from TTC and PET), not crashes; they are "
        "counted by the same camera, configuration and software in both periods only if nothing was changed: check "
        "the devices' attestation (software version, config and model hashes) for both periods.",
        "Exposure: rates are per 1,000 entering motor vehicles and per hour observed. Conflicts do not scale "
        "linearly with volume, so a large change of volume (see the first row) weakens any rate comparison.",
        "Periods should cover the same weekdays, season and hours; the before period covers "
        f"{len(before.daily.day)} day(s) with data, the after period {len(after.daily.day)}.",
    ]
    if min(before.observed_h, after.observed_h) < 24 * 7:
        out.append(f"Little observation: {duration(before.observed_s)} before and {duration(after.observed_s)} after. "
                   "Studies use weeks of data on each side (commonly two to four weeks of conflicts); with less, "
                   "intervals are wide and no change is claimed.")
    return out


METHOD: Final = (
    "Records: the anonymous window records the devices publish (schema_version 2, validated against the contract's "
    "JSON Schemas); windows of 60 s or more are summed into 15-minute bins of local time. Observation time is "
    "counted per bin (a window cut short by the end of a recording counts the frames it processed).",
    "Volumes: motor vehicles (car, bus, truck, motorcycle). Movement types (left, through, right, U-turn) come from "
    "the approach zones' positions on the calibrated ground plane; without them a movement keeps its zone names.",
    "Rates: the after/before ratio of conflicts per exposure is estimated by a negative-binomial (NB2) regression of "
    "daily counts with log exposure as offset (statsmodels), which allows day-to-day variation beyond Poisson; with "
    "fewer than 3 days per period the exact conditional Poisson test is used. With a comparison site the effect is "
    "the ratio of the two sites' ratios (the period x site interaction).",
    "Speed percentiles: estimated from each window's count, mean, p50 and p85 as a count-weighted mixture of normal "
    "distributions (sigma = (p85 - p50) / 1.036); windows below the device's minimum count publish no statistics "
    "and are left out. Intervals: bootstrap over days. Tests: Mann-Whitney U and Kolmogorov-Smirnov on window mean "
    "speeds (the unit the records allow), so they compare windows, not single vehicles.",
    "TTC and PET: from the near-miss event records (each conflict's minimum TTC and its PET), compared with "
    "Mann-Whitney U and Kolmogorov-Smirnov tests and a bootstrap interval of the change in the median.",
    "The conflict map is drawn on the ground plane from the calibration's lines and zones and the events' "
    "locations (rounded to the metre); no camera image is used or shown.",
)


# ---------------------------------------------------------------------------------------------------- CSV
def _write(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _bin_isos(d: StudyData) -> dict[int, str]:
    """Each observed bin's start as local ISO 8601 with its offset."""
    return {b: d.local(b).isoformat() for b in d.bins}


def volume_rows(d: StudyData, geometry: SiteGeometry | None) -> list[list[Any]]:
    """The turning movement counts of one period, zeros included for every movement and class it saw."""
    combos = sorted({(m, c) for _b, m, c, _n in d.movements})
    counts = {(b, m, c): n for b, m, c, n in d.movements}
    labels = an.movement_labels(geometry, d)
    iso = _bin_isos(d)
    rows = []
    for b in sorted(d.bins):
        for m, c in combos:
            approach, dest, turn = labels[m]
            rows.append([d.site, d.period.label, approach, turn, dest, c, iso[b], round(d.bins[b], 1),
                         counts.get((b, m, c), 0)])
    return rows


def line_rows(d: StudyData) -> list[list[Any]]:
    combos = sorted({(ln, di, c) for _b, ln, di, c, _n in d.lines})
    counts = {(b, ln, di, c): n for b, ln, di, c, n in d.lines}
    iso = _bin_isos(d)
    return [[d.site, d.period.label, ln, di, c, iso[b], round(d.bins[b], 1), counts.get((b, ln, di, c), 0)]
            for b in sorted(d.bins) for ln, di, c in combos]


def write_csvs(req: ReportRequest, periods: tuple[StudyData, StudyData],
               speeds: tuple[dict[tuple[str, str], an.SpeedSummary], ...], change: list[an.ChangeRow]) -> list[Path]:
    out, geo = req.output, req.site.geometry
    files = [
        _write(out / "volumes_15min.csv", ["site", "period", "approach", "movement", "exit", "class", "bin_start",
                                           "observed_s", "volume"], [r for d in periods for r in volume_rows(d, geo)]),
        _write(out / "line_counts_15min.csv", ["site", "period", "line", "direction", "class", "bin_start",
                                               "observed_s", "volume"], [r for d in periods for r in line_rows(d)]),
        _write(out / "observation_15min.csv", ["site", "period", "bin_start", "observed_s"],
               [[d.site, d.period.label, iso, round(d.bins[b], 1)]
                for d in periods for b, iso in sorted(_bin_isos(d).items())]),
        _write(out / "peak_hours.csv", ["site", "period", "peak", "start", "volume", "max_15min", "phf", "covered"],
               [[d.site, d.period.label, p.label, p.start, round(p.volume, 1), round(p.max15, 1), round(p.phf, 3),
                 p.covered] for d in periods for p in an.peak_hours(an.average_day(d, an.volume_basis(d)[1]))]),
        _write(out / "speeds.csv", ["site", "period", "line", "direction", "measured", "withheld", "unmeasured",
                                    "p15_kmh", "p50_kmh", "p85_kmh", "p95_kmh", "over_limit", "share_over",
                                    "limit_kmh"],
               [[req.site.name, label, s.line, s.direction, s.measured, s.withheld, s.unmeasured,
                 *[round(float(q), 2) for q in s.quantiles], s.over, round(s.share_over, 4), s.limit]
                for label, per in zip(("before", "after"), speeds, strict=True) for s in per.values()]),
        _write(out / "conflicts.csv", ["site", "period", "conflict_type", "severity", "count", "hours_observed",
                                       "vehicles_entering", "per_hour", "per_1000_entering"], _conflict_rows(periods)),
        _write(out / "events.csv", ["site", "period", "time", "conflict_type", "severity", "ttc_s", "pet_s",
                                    "drac_mps2", "x_m", "y_m", "vulnerable"], _event_rows(periods)),
        _write(out / "before_after.csv", ["metric", "unit", "before", "after", "change", "low", "high", "test",
                                          "p_value", "verdict", "n"],
               [[r.metric, r.unit, r.before, r.after, r.change, r.low, r.high, r.test, r.p_value, r.verdict, r.n]
                for r in change]),
    ]
    return files


def _conflict_rows(periods: tuple[StudyData, ...]) -> list[list[Any]]:
    rows = []
    for d in periods:
        entering, hours, ts = sum(d.daily.entering), d.observed_h, an.type_severity(d)
        for ctype, _name in an.CONFLICT_KINDS:
            for severity in ("high", "medium", "low"):
                n = ts.get((ctype, severity), 0)
                rows.append([d.site, d.period.label, ctype, severity, n, round(hours, 3), entering,
                             round(n / hours, 5) if hours else "", round(1000 * n / entering, 5) if entering else ""])
    return rows


def _event_rows(periods: tuple[StudyData, ...]) -> list[list[Any]]:
    def num(x: float) -> Any:
        return "" if not math.isfinite(x) else round(float(x), 3)

    return [[d.site, d.period.label, d.local(float(e.t[i])).isoformat(timespec="milliseconds"),
             e.conflict_type[i], e.severity[i], num(e.ttc[i]), num(e.pet[i]), num(e.drac[i]), int(e.x[i]), int(e.y[i]),
             bool(e.vulnerable[i])] for d in periods for e in (d.events,) for i in range(len(e))]
