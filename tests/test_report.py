"""`edge report` on generated weeks with a known truth: the statistics find what was put in, and claim nothing
when nothing changed; the CSV exports have the layout traffic count databases use."""

from __future__ import annotations

import csv
import math
import re
import zoneinfo
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from edge.city import analysis as an
from edge.city.report import ReportRequest, ReportResult, SiteRef, build_report
from edge.city.site import SiteGeometry, load_site_geometry
from edge.city.stats import rate_ratio
from edge.city.store import Archive
from edge.city.study import load_study, parse_period
from edge.city.synth import DEFAULT_START, SiteModel, Synthetic, fill, generate, site_config_yaml, study_phases

TZ = zoneinfo.ZoneInfo("Europe/Berlin")
DAYS = 28  # four weeks a side, as a study would take
BEFORE = "2024-04-01/2024-04-28"  # DEFAULT_START and 28 days; the after period starts a week later
AFTER = "2024-05-06/2024-06-02"


def _archive(tmp: Path, site: SiteModel, seed: int, conflict_factor: float = 1.0, volume_factor: float = 1.0,
             speed_shift_kmh: float = 0.0) -> tuple[Path, Synthetic]:
    phases = study_phases(DEFAULT_START, DAYS, conflict_factor=conflict_factor, volume_factor=volume_factor,
                          speed_shift_kmh=speed_shift_kmh)
    data = generate(site, phases, seed=seed)
    db = tmp / "archive.sqlite3"
    with Archive(db) as archive:
        fill(archive, data)
    return db, data


@pytest.fixture(scope="module")
def drop(tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportResult, Synthetic, Path]:
    """Two weeks before, two after: conflicts per exposure -30 %, volume +10 %, speeds -3 km/h."""
    tmp = tmp_path_factory.mktemp("drop")
    site = SiteModel(conflicts_per_1000=3.0, day_shape_k=30)  # day-to-day CV of the conflict rate: 18 %
    db, data = _archive(tmp, site, seed=7, conflict_factor=0.7, volume_factor=1.1, speed_shift_kmh=-3.0)
    (tmp / "site.yaml").write_text(site_config_yaml(site))
    ref = SiteRef("synth", site.device, site.camera, load_site_geometry(tmp / "site.yaml", site.camera))
    request = ReportRequest(ref, parse_period(BEFORE, "before", TZ), parse_period(AFTER, "after", TZ), TZ,
                            tmp / "report")
    with Archive(db, readonly=True) as archive:
        return build_report(archive, request), data, tmp / "report"


def _row(result: ReportResult, metric: str, unit: str) -> an.ChangeRow:
    return next(r for r in result.change if r.metric == metric and r.unit == unit)


def test_a_30_percent_drop_in_conflicts_per_exposure_is_found(drop: tuple[ReportResult, Synthetic, Path]) -> None:
    result, data, _ = drop
    row = _row(result, "conflicts", "per 1,000 entering vehicles")
    assert row.low <= 0.70 <= row.high, row.interval
    assert "negative binomial" in row.test
    assert row.claims_change and row.verdict == "decrease"  # its power is checked over many draws below
    # the point estimate is the realised ratio of this draw (the day-to-day variation moves it off 0.70)
    assert row.change == f"{100 * (row.after / row.before - 1):+.0f} %"
    # the exposure rose 10 %: the count ratio alone would understate the drop
    volume = _row(result, "motor vehicles entering", "per hour observed")
    assert volume.low <= 1.10 <= volume.high
    before, after = data.truth
    assert row.before == pytest.approx(1000 * before.conflicts / before.vehicles_entering, rel=0.02)
    assert row.after == pytest.approx(1000 * after.conflicts / after.vehicles_entering, rel=0.02)


def test_no_change_is_not_claimed(tmp_path: Path) -> None:
    site = SiteModel(with_speeds=False)
    db, _ = _archive(tmp_path, site, seed=8)
    with Archive(db, readonly=True) as archive:
        before, after = (load_study(archive, site.device, site.camera, parse_period(p, label, TZ), TZ)
                         for p, label in ((BEFORE, "before"), (AFTER, "after")))
    rows = {(m, u): an.rate_row(m, u, rr) for m, u, rr, _ in an.conflict_rates(before, after)}
    for key in (("conflicts", "per 1,000 entering vehicles"), ("conflicts", "per hour observed"),
                ("motor vehicles entering", "per hour observed")):
        row = rows[key]
        assert row.low <= 1.0 <= row.high and not row.claims_change, (key, row.interval)
        assert row.verdict == "no evidence of a change"


def test_rate_ratio_intervals_hold_their_level() -> None:
    """Over many studies of overdispersed daily counts: 95 % intervals cover the truth about 95 % of the time,
    and 'no change' is claimed wrongly about 5 % of the time."""
    rng = np.random.default_rng(2024)
    covered = found = claimed = 0
    runs = 80
    for _ in range(runs):  # the drop fixture's design: 2 x 28 days, 3 per 1,000, CV 18 %, volume +10 %
        e0 = rng.uniform(11, 15, DAYS)  # thousands of vehicles a day
        e1 = 1.1 * rng.uniform(11, 15, DAYS)
        g0, g1 = rng.gamma(30, 1 / 30, DAYS), rng.gamma(30, 1 / 30, DAYS)
        dropped = rate_ratio(rng.poisson(3 * e0 * g0), e0, rng.poisson(3 * 0.7 * e1 * g1), e1)
        covered += dropped.low <= 0.7 <= dropped.high
        found += dropped.claims_change and dropped.ratio < 1
        same = rate_ratio(rng.poisson(3 * e0 * g0), e0, rng.poisson(3 * e1 * rng.gamma(30, 1 / 30, DAYS)), e1)
        claimed += same.claims_change
    assert 0.86 <= covered / runs <= 1.0  # 95 % intervals
    assert found / runs >= 0.9  # power to find a 30 % drop
    assert claimed / runs <= 0.12  # false alarms (5 % expected)


def test_exact_poisson_fallback_for_short_studies() -> None:
    rr = rate_ratio(np.array([20.0]), np.array([10.0]), np.array([10.0]), np.array([10.0]))
    assert rr.method == "exact conditional Poisson" and rr.ratio == pytest.approx(0.5)
    assert rr.low < 0.5 < 1.0 < rr.high  # 10 against 20 events: not enough to claim the halving
    assert rr.p_value == pytest.approx(0.0987, abs=1e-3) and not rr.claims_change


def test_speed_percentiles_from_window_statistics_match_the_drawn_speeds(
        drop: tuple[ReportResult, Synthetic, Path]) -> None:
    _, data, folder = drop
    with (folder / "speeds.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 8  # 2 periods x 4 lines x 2 directions
    for row in rows:
        truth = data.truth[0 if row["period"] == "before" else 1]
        for q, col, tol in ((0.15, "p15_kmh", 1.0), (0.5, "p50_kmh", 0.5), (0.85, "p85_kmh", 1.0),
                            (0.95, "p95_kmh", 1.0)):
            true = truth.speed_quantile(row["line"], row["direction"], q)
            assert abs(float(row[col]) - true) < tol, (row["line"], row["direction"], col, row[col], true)


def test_the_speed_drop_is_found(drop: tuple[ReportResult, Synthetic, Path]) -> None:
    result, _, _ = drop
    rows = [r for r in result.change if r.metric.startswith("p85 speed")]
    assert len(rows) == 8
    for r in rows:
        assert r.claims_change and r.verdict == "decrease"
        assert r.low <= -3.0 + 0.5 and r.high >= -3.0 - 0.5  # the interval is around the -3 km/h put in


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def test_turning_movement_counts_csv(drop: tuple[ReportResult, Synthetic, Path]) -> None:
    _, data, folder = drop
    header, rows = _read(folder / "volumes_15min.csv")
    assert header == ["site", "period", "approach", "movement", "exit", "class", "bin_start", "observed_s", "volume"]
    assert {r["movement"] for r in rows} == {"left", "through", "right"}
    by_key = Counter((r["approach"], r["exit"]) for r in rows)
    assert len(by_key) == 12
    starts = sorted({r["bin_start"] for r in rows if r["period"] == "before"})
    first = datetime.fromisoformat(starts[0])
    assert starts[0] == "2024-04-01T02:00:00+02:00" and first.utcoffset() == timedelta(hours=2)
    assert all(datetime.fromisoformat(s).minute % 15 == 0 for s in starts)
    # every observed bin has a row for each movement and class seen (zeros included), and the totals are the records'
    combos = {(r["approach"], r["exit"], r["class"]) for r in rows if r["period"] == "before"}
    assert sum(r["period"] == "before" for r in rows) == len(starts) * len(combos)
    totals: dict[str, int] = defaultdict(int)
    for r in rows:
        totals[r["period"]] += int(r["volume"])
    in_period = [m for m in data.metrics if m.window_start < "2024-04-28T22:00:00Z"]  # 00:00 Berlin on the 29th
    assert totals["before"] == sum(n for m in in_period for per in (m.movements or {}).values() for n in per.values())
    assert all(float(r["observed_s"]) == 900.0 for r in rows)


def test_the_other_csv_exports(drop: tuple[ReportResult, Synthetic, Path]) -> None:
    result, data, folder = drop
    header, lines = _read(folder / "line_counts_15min.csv")
    assert header == ["site", "period", "line", "direction", "class", "bin_start", "observed_s", "volume"]
    assert {(r["line"], r["direction"]) for r in lines} == {(a, d) for a in ("north", "east", "south", "west")
                                                            for d in ("in", "out")}
    header, peaks = _read(folder / "peak_hours.csv")
    assert header == ["site", "period", "peak", "start", "volume", "max_15min", "phf", "covered"]
    assert len(peaks) == 4
    for p in peaks:
        assert 0.25 <= float(p["phf"]) <= 1.0
        assert float(p["volume"]) <= 4 * float(p["max_15min"]) + 1e-6
    am = next(p for p in peaks if p["peak"] == "AM" and p["period"] == "before")
    assert re.fullmatch(r"(09|10):\d\d", am["start"])  # the generator's morning peak is 08:00 UTC = 10:00 CEST
    _, events = _read(folder / "events.csv")
    assert len(events) == sum(t.events for t in data.truth) - _outside(data)
    _, rows = _read(folder / "before_after.csv")
    assert [r["metric"] for r in rows] == [r.metric for r in result.change]
    assert all(r["verdict"] in {"decrease", "increase", "no evidence of a change", "not enough data"} for r in rows)


def _outside(data: Synthetic) -> int:
    """Events of the phases that fall outside the local-time periods (the first two UTC hours of the phases
    fall on the day before in Berlin; the last two hours of each phase's last day are included)."""
    before, after = (parse_period(p, label, TZ) for p, label in ((BEFORE, "before"), (AFTER, "after")))
    return sum(not (before.start <= datetime.fromisoformat(e.time.replace("Z", "+00:00")) < before.end
                    or after.start <= datetime.fromisoformat(e.time.replace("Z", "+00:00")) < after.end)
               for e in data.events)


def test_the_html_is_self_contained(drop: tuple[ReportResult, Synthetic, Path]) -> None:
    result, _, _ = drop
    html = result.html.read_text()
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert "<script" not in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == 7 and all(s.startswith("data:image/png;base64,") for s in sources)
    links = re.findall(r'href="([^"]*)"', html)
    assert all(link.startswith("#") or re.fullmatch(r"[a-z_0-9]+\.csv", link) for link in links), links
    assert not re.search(r"https?://", html)
    for section in ("overview", "before-after", "volumes", "speeds", "conflicts", "method"):
        assert f'<section id="{section}">' in html
    assert "Regression to the mean" in html and not math.isnan(result.change[1].p_value)


def test_turn_types_from_the_calibrated_zones(tmp_path: Path) -> None:
    from tests.conftest import REPO

    otc = load_site_geometry(REPO / "config" / "otc-intersection.yaml", "junction")
    turns = {(a, b): otc.turn(a, b) for a in otc.zones for b in otc.zones if a != b}
    assert turns[("Sued", "Nord")] == turns[("West", "Ost")] == "through"
    assert turns[("Sued", "West")] == turns[("Nord", "Ost")] == "left"  # seen from the south, west is left
    assert turns[("Sued", "Ost")] == turns[("Ost", "Nord")] == "right"
    assert otc.turn("Nord", "Nord") == "u_turn" and otc.turn("Nord", "Mars") is None
    assert len(otc.lines) == 4 and all(len(p) >= 2 for p in otc.lines.values())
    (tmp_path / "s.yaml").write_text(site_config_yaml(SiteModel()))
    synth = load_site_geometry(tmp_path / "s.yaml", "main")
    assert (synth.turn("north", "east"), synth.turn("north", "south"), synth.turn("north", "west")) == (
        "left", "through", "right")
    tee = SiteGeometry(zones={k: v for k, v in synth.zones.items() if k != "north"})  # a T junction: angles
    assert (tee.turn("south", "west"), tee.turn("south", "east"), tee.turn("east", "west")) == (
        "left", "right", "through")
