"""One site and one period out of the archive, aggregated the way a traffic study reads it.

Windows are at least 60 s long (P4); the study's unit is the 15-minute bin that traffic count databases use.
The archive sums every window into the UTC 15-minute bin its ``window_start`` falls in (SQL ``GROUP BY``, so
years of one-minute windows stay fast); a bin is then labelled in the site's time zone, which is exact because
every time zone's offset is a whole number of quarter hours. A window longer than 15 minutes counts entirely
in the bin it starts in. Observation time is counted too (``observed_s``: a window's length, or for a window
cut short by the end of a recording the frames it processed over its frame rate), so that rates are per hour
*observed*, and gaps (a camera down, a recording missing) never read as zero traffic.
"""

from __future__ import annotations

import re
import zoneinfo
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Final

import numpy as np

from edge.city.store import Archive
from edge.errors import EdgeError

BIN_S: Final = 900
MOTOR: Final = frozenset({"car", "bus", "truck", "motorcycle"})
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in UTC; ``label`` is how the report names it (before, after)."""

    label: str
    start: datetime
    end: datetime

    @property
    def days(self) -> float:
        return (self.end - self.start).total_seconds() / 86_400

    def text(self, tz: zoneinfo.ZoneInfo) -> str:
        a, b = self.start.astimezone(tz), self.end.astimezone(tz)
        if a.time() == b.time() == datetime.min.time():
            return f"{a.date().isoformat()} to {(b - timedelta(days=1)).date().isoformat()}"
        return f"{a.isoformat(timespec='minutes')} to {b.isoformat(timespec='minutes')}"


def _bound(text: str, tz: zoneinfo.ZoneInfo, *, end: bool) -> datetime:
    if _DATE.match(text):  # a date: the whole local day, an end date included
        d = date.fromisoformat(text) + timedelta(days=1 if end else 0)
        return datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC)
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return (t if t.tzinfo is not None else t.replace(tzinfo=tz)).astimezone(UTC)


def parse_period(text: str, label: str, tz: zoneinfo.ZoneInfo) -> Period:
    """``START/END``: dates (``2024-04-01/2024-04-14``, both days included, local time) or ISO 8601 instants
    (``2024-04-01T06:00/2024-04-01T10:00``, end excluded; without an offset they are local time)."""
    parts = text.split("/")
    if len(parts) != 2:
        raise EdgeError(f"--{label} {text!r}: give START/END, e.g. 2024-04-01/2024-04-14 (dates included)")
    try:
        start, end = _bound(parts[0], tz, end=False), _bound(parts[1], tz, end=True)
    except ValueError as exc:
        raise EdgeError(f"--{label} {text!r}: {exc}; give dates (2024-04-01) or ISO 8601 instants") from None
    if end <= start:
        raise EdgeError(f"--{label} {text!r}: the end is not after the start")
    return Period(label, start, end)


@dataclass
class DailyTotals:
    """Per local day with observations: hours observed, motor vehicles entering, conflicts (and by type)."""

    day: list[date] = field(default_factory=list)
    hours: list[float] = field(default_factory=list)
    entering: list[int] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # "rear_end", "high", "vulnerable" -> per day


@dataclass
class SpeedRows:
    """Speed statistics of the windows (one row per window, line, direction and class)."""

    t0: np.ndarray
    line: np.ndarray
    direction: np.ndarray
    cls: np.ndarray
    count: np.ndarray
    unmeasured: np.ndarray
    mean: np.ndarray  # NaN where withheld (below the device's minimum count)
    p50: np.ndarray
    p85: np.ndarray
    over_limit: np.ndarray
    limit: np.ndarray


@dataclass
class Events:
    t: np.ndarray
    conflict_type: np.ndarray
    severity: np.ndarray
    ttc: np.ndarray  # NaN where absent
    pet: np.ndarray
    drac: np.ndarray
    x: np.ndarray
    y: np.ndarray
    vulnerable: np.ndarray

    def __len__(self) -> int:
        return len(self.t)


@dataclass
class StudyData:
    site: str
    period: Period
    tz: zoneinfo.ZoneInfo
    windows: int
    partial_windows: int
    observed_s: float
    bins: dict[int, float]  # UTC bin start (epoch s) -> seconds observed in it
    movements: list[tuple[int, str, str, int]]  # (bin, movement, class, volume)
    lines: list[tuple[int, str, str, str, int]]  # (bin, line, direction, class, volume)
    conflicts: list[tuple[int, str, str, int]]  # (bin, type, severity, count)
    entering: dict[int, int]  # bin -> motor vehicles entering
    daily: DailyTotals
    speeds: SpeedRows
    events: Events

    def local(self, epoch: float) -> datetime:
        return datetime.fromtimestamp(epoch, UTC).astimezone(self.tz)

    @property
    def observed_h(self) -> float:
        return self.observed_s / 3600.0


def _where(alias: str, time_col: str = "t0") -> str:
    return f"{alias}.device = ? AND {alias}.camera = ? AND {alias}.{time_col} >= ? AND {alias}.{time_col} < ?"


def load_study(archive: Archive, device: str, camera: str, period: Period, tz: zoneinfo.ZoneInfo,
               site: str | None = None) -> StudyData:
    """Everything the report needs of one camera and period."""
    key = (device, camera, period.start.timestamp(), period.end.timestamp())
    b = f"CAST(w.t0 / {BIN_S} AS INTEGER) * {BIN_S}"
    per_bin = archive.query(f"SELECT {b} AS bin, SUM(w.observed_s), SUM(COALESCE(w.vehicles_entering, 0)), "
                            f"COUNT(*), SUM(w.partial) FROM windows w WHERE {_where('w')} GROUP BY bin", key)
    movements = archive.query(
        f"SELECT {b} AS bin, m.movement, m.class, SUM(m.count) FROM movement_counts m JOIN windows w "
        f"ON w.id = m.window_id WHERE {_where('w')} GROUP BY bin, m.movement, m.class ORDER BY bin", key)
    lines = archive.query(
        f"SELECT {b} AS bin, c.line, c.direction, c.class, SUM(c.count) FROM line_counts c JOIN windows w "
        f"ON w.id = c.window_id WHERE {_where('w')} GROUP BY bin, c.line, c.direction, c.class ORDER BY bin", key)
    conflicts = archive.query(
        f"SELECT {b} AS bin, c.conflict_type, c.severity, SUM(c.count) FROM conflict_counts c JOIN windows w "
        f"ON w.id = c.window_id WHERE {_where('w')} GROUP BY bin, c.conflict_type, c.severity ORDER BY bin", key)
    vulnerable = dict(archive.query(
        f"SELECT {b} AS bin, SUM(COALESCE(w.vulnerable, 0)) FROM windows w WHERE {_where('w')} GROUP BY bin", key))
    data = StudyData(
        site=site or f"{device}/{camera}", period=period, tz=tz,
        windows=sum(int(r[3]) for r in per_bin), partial_windows=sum(int(r[4]) for r in per_bin),
        observed_s=sum(float(r[1]) for r in per_bin), bins={int(r[0]): float(r[1]) for r in per_bin},
        movements=[(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in movements],
        lines=[(int(r[0]), str(r[1]), str(r[2]), str(r[3]), int(r[4])) for r in lines],
        conflicts=[(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in conflicts],
        entering={int(r[0]): int(r[2]) for r in per_bin},
        daily=DailyTotals(), speeds=_speeds(archive, key), events=_events(archive, key),
    )
    data.daily = _daily(data, {int(k): int(v) for k, v in vulnerable.items()})
    return data


def _daily(data: StudyData, vulnerable: dict[int, int]) -> DailyTotals:
    days: dict[date, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for bin_start, seconds in data.bins.items():
        d = days[data.local(bin_start).date()]
        d["hours"] += seconds / 3600.0
        d["entering"] += data.entering.get(bin_start, 0)
        d["vulnerable"] += vulnerable.get(bin_start, 0)
    for bin_start, ctype, severity, n in data.conflicts:
        d = days[data.local(bin_start).date()]
        d["conflicts"] += n
        d[ctype] += n
        d[severity] += n
    out = DailyTotals()
    kinds = ("rear_end", "crossing", "angled", "high", "medium", "low", "vulnerable")
    out.by_kind = {k: [] for k in kinds}
    for day in sorted(days):
        d = days[day]
        out.day.append(day)
        out.hours.append(d["hours"])
        out.entering.append(int(d["entering"]))
        out.conflicts.append(int(d["conflicts"]))
        for k in kinds:
            out.by_kind[k].append(int(d[k]))
    return out


def _speeds(archive: Archive, key: tuple[str, str, float, float]) -> SpeedRows:
    rows = archive.query(
        "SELECT s.t0, s.line, st.direction, st.class, st.count, st.unmeasured, st.mean_kmh, st.p50_kmh, st.p85_kmh, "
        "st.over_limit, s.speed_limit_kmh FROM speed_stats st JOIN speeds s ON s.id = st.speeds_id "
        f"WHERE {_where('s')}", key)
    cols = list(zip(*rows, strict=True)) if rows else [()] * 11

    def num(i: int) -> np.ndarray:
        return np.array([np.nan if v is None else float(v) for v in cols[i]], dtype=np.float64)

    def text(i: int) -> np.ndarray:
        return np.array([str(v) for v in cols[i]], dtype=object)

    return SpeedRows(num(0), text(1), text(2), text(3), num(4), num(5), num(6), num(7), num(8), num(9), num(10))


def _events(archive: Archive, key: tuple[str, str, float, float]) -> Events:
    rows = archive.query(
        "SELECT e.t, e.conflict_type, e.severity, e.ttc_s, e.pet_s, e.drac_mps2, e.x_m, e.y_m, e.vulnerable "
        f"FROM events e WHERE {_where('e', 't')} ORDER BY e.t", key)
    cols = list(zip(*rows, strict=True)) if rows else [()] * 9

    def num(i: int) -> np.ndarray:
        return np.array([np.nan if v is None else float(v) for v in cols[i]], dtype=np.float64)

    text = [np.array([str(v) for v in cols[i]], dtype=object) for i in (1, 2)]
    return Events(num(0), text[0], text[1], num(3), num(4), num(5), num(6), num(7), num(8).astype(bool))
