"""The rolling chart's history: the last hours of windows, read from an archive of metrics records.

The archive is either

* the city archive (a file: the SQLite database that ``edge archive`` fills, :mod:`edge.city.store`), read
  only, whose records were validated and upserted (one per key) when they were stored; or
* a folder, searched recursively, of ``*.jsonl`` files with one record a line: the ``metrics.jsonl`` that
  ``edge replay`` writes, or files of the records as they were received. A line that is not a
  window-metrics record (speeds, events, anything else) is skipped; a line that looks like one (``counts``
  and ``window_start``) but does not validate against the contract is counted as invalid and left out.
  Records are upserted by (device, camera, window_start), as a consumer must: a duplicate never counts
  twice, and a full window replaces a partial one of the same start.

Each window becomes one small point (its total crossings and near-misses), never a per-object detail:
there is none in the records.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from edge.payloads import WindowMetrics, iso_utc

#: More points than this are not sent to a browser (about 35 cameras x 48 h of one-minute windows).
MAX_POINTS: Final = 100_000


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    device: str
    camera: str
    t: float  # window start, seconds since the epoch (UTC)
    window_s: int
    partial: bool
    crossings: int  # over every line, direction and class
    near_misses: int | None  # None for a camera without conflicts (not calibrated)


def _point(m: WindowMetrics) -> HistoryPoint:
    start = datetime.fromisoformat(m.window_start.replace("Z", "+00:00"))
    crossings = sum(n for per_dir in m.counts.values() for per_class in per_dir.values() for n in per_class.values())
    near = None if m.conflicts is None else sum(sum(s.values()) for s in m.conflicts.by_type.values())
    return HistoryPoint(m.device, m.camera, start.timestamp(), m.window_s, m.partial, crossings, near)


def _records(path: Path) -> tuple[list[WindowMetrics], int]:
    """The window-metrics records of one file and the number of lines that looked like one but were invalid."""
    found: list[WindowMetrics] = []
    invalid = 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not (isinstance(data, dict) and "counts" in data and "window_start" in data):
                continue
            try:
                found.append(WindowMetrics.model_validate(data))
            except ValidationError:
                invalid += 1
    return found, invalid


def _city_points(path: Path, lo: float, hi: float) -> list[HistoryPoint]:
    """Windows of the city archive (SQLite, read only) that start within [lo, hi], from the records it stores
    (its ``windows`` rows: start time ``t0`` and the packed record), so the points are those of the files."""
    from edge.city.store import Archive, unpack

    with Archive(path, readonly=True) as db:
        rows = db.query("SELECT payload FROM windows WHERE t0 BETWEEN ? AND ? ORDER BY device, camera, t0", (lo, hi))
    return [_point(WindowMetrics.model_validate_json(unpack(blob))) for (blob,) in rows]


def load_history(archive: Path, hours: float, end: datetime | None = None) -> dict[str, Any]:
    """Windows that start within ``hours`` before ``end`` (default: now), as JSON-ready data:
    ``{"source", "from", "until", "points": [...], "invalid", "files", "truncated"}``."""
    until = (end or datetime.now(UTC)).astimezone(UTC)
    since = until - timedelta(hours=hours)
    lo, hi = since.timestamp(), until.timestamp()
    if archive.is_file():
        found = _city_points(archive, lo, hi)
        return {"source": str(archive), "from": iso_utc(since), "until": iso_utc(until), "files": 1, "invalid": 0,
                "truncated": len(found) > MAX_POINTS, "points": [asdict(p) for p in found[-MAX_POINTS:]]}
    points: dict[tuple[str, str, float], HistoryPoint] = {}
    invalid = files = 0
    for path in sorted(archive.rglob("*.jsonl")):
        files += 1
        records, bad = _records(path)
        invalid += bad
        for m in records:
            p = _point(m)
            if not lo <= p.t <= hi:
                continue
            key = (p.device, p.camera, p.t)
            old = points.get(key)
            if old is None or old.partial or not p.partial:  # a full window is never replaced by a partial one
                points[key] = p
    ordered = sorted(points.values(), key=lambda p: (p.device, p.camera, p.t))
    return {
        "source": str(archive), "from": iso_utc(since), "until": iso_utc(until), "files": files,
        "invalid": invalid, "truncated": len(ordered) > MAX_POINTS,
        "points": [asdict(p) for p in ordered[-MAX_POINTS:]],
    }
