"""The archive: every window, speeds and event record of every device, in one SQLite file.

Why SQLite (the standard library's ``sqlite3``) and not DuckDB: the archive is a service that writes one small
record at a time and must make each one durable before it acknowledges the message to the broker, while
``edge report`` (another process) reads the same file. SQLite in WAL mode gives exactly that: ACID upserts
(``synchronous=FULL``: a committed record survives a power cut), many readers beside one writer, no server,
no extra dependency, and the same engine as the device's outbox. DuckDB would be faster for large scans, but
a DuckDB file that one process has open for writing cannot be opened by another, so the report could not run
while the archive does. The report's queries aggregate to 15-minute bins inside SQLite, which keeps them fast
for years of one-minute windows.

Keys (the contract's, ``edge.payloads``): a metrics record by (device, camera, window_start); a speeds record
by (device, camera, window_start, line); an event by its msg_id. A record that arrives again with the same
content is a *duplicate* (counted, nothing changes); with other content it *replaces* the stored one (a
re-run replay with another config) and is counted as updated; a msg_id that another key already uses is
refused into the quarantine. Nothing is ever counted twice.

Zero counts are not stored (a window's row says it was observed; missing counts are zeros), the counts hang
off their window by an integer id, and payloads are kept zlib-compressed: a camera's month of one-minute
windows stays in the tens of megabytes.
"""

from __future__ import annotations

import hashlib
import sqlite3
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from edge.city.records import RecordKind, Valid
from edge.errors import EdgeError
from edge.payloads import NearMissEvent, WindowMetrics, WindowSpeeds
from edge.sqlite import immediate_transaction

Outcome = Literal["inserted", "updated", "duplicate", "quarantined"]
ARCHIVE_SCHEMA_VERSION: Final = 1
#: Bytes of a quarantined payload kept for inspection (its full size and sha256 are always kept).
QUARANTINE_KEEP_BYTES: Final = 8192

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS windows (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, camera TEXT NOT NULL, window_start TEXT NOT NULL,
    t0 REAL NOT NULL, window_s INTEGER NOT NULL, observed_s REAL NOT NULL, partial INTEGER NOT NULL,
    msg_id TEXT NOT NULL UNIQUE, vehicles_entering INTEGER, conflicts INTEGER, vulnerable INTEGER,
    payload BLOB NOT NULL, source TEXT NOT NULL, received_at TEXT NOT NULL,
    UNIQUE (device, camera, window_start));
CREATE INDEX IF NOT EXISTS windows_t0 ON windows (device, camera, t0);
CREATE TABLE IF NOT EXISTS line_counts (
    window_id INTEGER NOT NULL, line TEXT NOT NULL, direction TEXT NOT NULL, class TEXT NOT NULL,
    count INTEGER NOT NULL, PRIMARY KEY (window_id, line, direction, class)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS movement_counts (
    window_id INTEGER NOT NULL, movement TEXT NOT NULL, class TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (window_id, movement, class)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conflict_counts (
    window_id INTEGER NOT NULL, conflict_type TEXT NOT NULL, severity TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (window_id, conflict_type, severity)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS speeds (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, camera TEXT NOT NULL, window_start TEXT NOT NULL,
    line TEXT NOT NULL, t0 REAL NOT NULL, msg_id TEXT NOT NULL UNIQUE, speed_limit_kmh REAL NOT NULL,
    payload BLOB NOT NULL, source TEXT NOT NULL, received_at TEXT NOT NULL,
    UNIQUE (device, camera, window_start, line));
CREATE INDEX IF NOT EXISTS speeds_t0 ON speeds (device, camera, t0);
CREATE TABLE IF NOT EXISTS speed_stats (
    speeds_id INTEGER NOT NULL, direction TEXT NOT NULL, class TEXT NOT NULL, count INTEGER NOT NULL,
    unmeasured INTEGER NOT NULL, mean_kmh REAL, p50_kmh REAL, p85_kmh REAL, over_limit INTEGER NOT NULL,
    PRIMARY KEY (speeds_id, direction, class)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    msg_id TEXT PRIMARY KEY, device TEXT NOT NULL, camera TEXT NOT NULL, time TEXT NOT NULL, t REAL NOT NULL,
    conflict_type TEXT NOT NULL, severity TEXT NOT NULL, ttc_s REAL, pet_s REAL, drac_mps2 REAL,
    x_m REAL NOT NULL, y_m REAL NOT NULL, vulnerable INTEGER NOT NULL, collision INTEGER NOT NULL,
    class_a TEXT NOT NULL, class_b TEXT NOT NULL,
    payload BLOB NOT NULL, source TEXT NOT NULL, received_at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_t ON events (device, camera, t);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY, received_at TEXT NOT NULL, source TEXT NOT NULL, topic TEXT, kind TEXT,
    reason TEXT NOT NULL, size_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS counters (kind TEXT NOT NULL, outcome TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (kind, outcome));
"""
_WINDOW_CHILDREN: Final = ("line_counts", "movement_counts", "conflict_counts")


def epoch_s(iso: str) -> float:
    """ISO 8601 UTC (``2024-05-01T07:00:00Z``) -> seconds since 1970."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).astimezone(UTC).timestamp()


def observed_s(m: WindowMetrics) -> float:
    """Seconds of stream a window covers: its length, or for a window cut short by the end of a recording
    (``partial``) the frames it processed over its frame rate."""
    if not m.partial:
        return float(m.window_s)
    fps = m.health.fps
    return min(float(m.window_s), m.health.frames / fps) if fps > 0 else 0.0


@dataclass(frozen=True, slots=True)
class ArchiveCounts:
    windows: int
    speeds: int
    events: int
    quarantined: int
    outcomes: dict[str, dict[str, int]]  # kind -> outcome -> n, since the archive was created


class Archive:
    """One SQLite archive file. Not thread-safe: one ``Archive`` per thread (open another for reading)."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        try:
            if readonly:
                if not path.exists():
                    raise EdgeError(f"archive {path} does not exist; fill it with `edge archive` first")
                self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")  # durable before the broker gets its PUBACK
                self._db.executescript(_SCHEMA)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('archive_schema', ?)",
                                 (str(ARCHIVE_SCHEMA_VERSION),))
        except sqlite3.Error as exc:
            raise EdgeError(f"archive {path}: cannot open it: {exc}") from None
        self._db.execute("PRAGMA busy_timeout=30000")
        self._in_batch = False

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------- writes
    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction around many :meth:`store` calls (an import); rolled back whole on an error."""
        self._in_batch = True
        try:
            with immediate_transaction(self._db):
                yield
        finally:
            self._in_batch = False

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        if self._in_batch:
            yield
        else:
            with self.batch():
                yield

    def store(self, valid: Valid, source: str) -> Outcome:
        """Upsert one valid record; returns what happened (see the module docstring)."""
        with self._transaction():
            record = valid.record
            if isinstance(record, WindowMetrics):
                outcome = self._store_metrics(record, source)
            elif isinstance(record, WindowSpeeds):
                outcome = self._store_speeds(record, source)
            else:
                outcome = self._store_event(record, source)
            if outcome != "quarantined":  # the quarantine counted itself
                self._count(valid.kind, outcome)
            return outcome

    def quarantine(self, payload: bytes | str, reason: str, *, kind: RecordKind | None, source: str,
                   topic: str | None = None) -> None:
        """Keep a payload that failed validation (or a key check), with why; counted, never dropped silently."""
        data = payload.encode() if isinstance(payload, str) else payload
        with self._transaction():
            self._db.execute(
                "INSERT INTO quarantine (received_at, source, topic, kind, reason, size_bytes, sha256, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (_now(), source, topic, kind, reason[:1000], len(data), hashlib.sha256(data).hexdigest(),
                 data[:QUARANTINE_KEEP_BYTES]),
            )
            self._count(kind or "unknown", "quarantined")

    def _count(self, kind: str, outcome: str) -> None:
        self._db.execute("INSERT INTO counters VALUES (?, ?, 1) ON CONFLICT (kind, outcome) DO UPDATE SET n = n + 1",
                         (kind, outcome))

    def _existing(self, table: str, key_sql: str, key: tuple[Any, ...], msg_id: str) -> tuple[int | None, bytes | None,
                                                                                          bool]:
        """(row id and packed payload stored under the key, or None; whether another key uses msg_id)."""
        row = self._db.execute(f"SELECT id, payload, msg_id FROM {table} WHERE {key_sql}", key).fetchone()
        if row is not None and row[2] == msg_id:
            return int(row[0]), bytes(row[1]), False
        other = self._db.execute(f"SELECT 1 FROM {table} WHERE msg_id = ?", (msg_id,)).fetchone()
        if row is None:
            return None, None, other is not None
        return int(row[0]), bytes(row[1]), other is not None

    def _refuse_reused_id(self, kind: RecordKind, payload: str, source: str, msg_id: str) -> Outcome:
        self.quarantine(payload, f"msg_id {msg_id} is already stored for another key", kind=kind, source=source)
        return "quarantined"

    def _store_metrics(self, m: WindowMetrics, source: str) -> Outcome:
        payload = m.to_json()
        packed = pack(payload)
        key = (m.device, m.camera, m.window_start)
        old_id, stored, reused = self._existing("windows", "device = ? AND camera = ? AND window_start = ?", key,
                                                m.msg_id)
        if reused:
            return self._refuse_reused_id("metrics", payload, source, m.msg_id)
        if stored == packed:
            return "duplicate"
        if old_id is not None:
            for table in _WINDOW_CHILDREN:
                self._db.execute(f"DELETE FROM {table} WHERE window_id = ?", (old_id,))
            self._db.execute("DELETE FROM windows WHERE id = ?", (old_id,))
        c = m.conflicts
        conflicts = sum(n for per in c.by_type.values() for n in per.values()) if c is not None else None
        cur = self._db.execute(
            "INSERT INTO windows (device, camera, window_start, t0, window_s, observed_s, partial, msg_id, "
            "vehicles_entering, conflicts, vulnerable, payload, source, received_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*key, epoch_s(m.window_start), m.window_s, observed_s(m), int(m.partial), m.msg_id,
             c.vehicles_entering if c is not None else None, conflicts, c.vulnerable if c is not None else None,
             packed, source, _now()),
        )
        wid = cur.lastrowid
        self._db.executemany("INSERT INTO line_counts VALUES (?, ?, ?, ?, ?)", [
            (wid, line, direction, cls, n) for line, per_dir in m.counts.items()
            for direction, per_cls in per_dir.items() for cls, n in per_cls.items() if n
        ])
        self._db.executemany("INSERT INTO movement_counts VALUES (?, ?, ?, ?)", [
            (wid, movement, cls, n) for movement, per_cls in (m.movements or {}).items()
            for cls, n in per_cls.items() if n
        ])
        self._db.executemany("INSERT INTO conflict_counts VALUES (?, ?, ?, ?)", [
            (wid, ctype, severity, n) for ctype, per_sev in (c.by_type.items() if c is not None else ())
            for severity, n in per_sev.items() if n
        ])
        return "updated" if old_id is not None else "inserted"

    def _store_speeds(self, s: WindowSpeeds, source: str) -> Outcome:
        payload = s.to_json()
        packed = pack(payload)
        key = (s.device, s.camera, s.window_start, s.line)
        old_id, stored, reused = self._existing(
            "speeds", "device = ? AND camera = ? AND window_start = ? AND line = ?", key, s.msg_id)
        if reused:
            return self._refuse_reused_id("speeds", payload, source, s.msg_id)
        if stored == packed:
            return "duplicate"
        if old_id is not None:
            self._db.execute("DELETE FROM speed_stats WHERE speeds_id = ?", (old_id,))
            self._db.execute("DELETE FROM speeds WHERE id = ?", (old_id,))
        cur = self._db.execute(
            "INSERT INTO speeds (device, camera, window_start, line, t0, msg_id, speed_limit_kmh, payload, source, "
            "received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*key, epoch_s(s.window_start), s.msg_id, s.speed_limit_kmh, packed, source, _now()))
        sid = cur.lastrowid
        self._db.executemany("INSERT INTO speed_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
            (sid, direction, cls, st.count, st.unmeasured, st.mean_kmh, st.p50_kmh, st.p85_kmh, st.over_limit)
            for direction, per_cls in s.speeds.items() for cls, st in per_cls.items()
        ])
        return "updated" if old_id is not None else "inserted"

    def _store_event(self, e: NearMissEvent, source: str) -> Outcome:
        packed = pack(e.to_json())
        row = self._db.execute("SELECT payload FROM events WHERE msg_id = ?", (e.msg_id,)).fetchone()
        if row is not None and bytes(row[0]) == packed:
            return "duplicate"
        self._db.execute(
            "INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (e.msg_id, e.device, e.camera, e.time, epoch_s(e.time), e.conflict_type, e.severity, e.ttc_s, e.pet_s,
             e.drac_mps2, float(e.location_m[0]), float(e.location_m[1]), int(e.vulnerable), int(e.collision),
             e.road_users[0], e.road_users[1], packed, source, _now()),
        )
        return "updated" if row is not None else "inserted"

    # -------------------------------------------------------------------------------------------- reads
    def counts(self) -> ArchiveCounts:
        def n(table: str) -> int:
            return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

        outcomes: dict[str, dict[str, int]] = {}
        for kind, outcome, value in self._db.execute("SELECT kind, outcome, n FROM counters ORDER BY kind, outcome"):
            outcomes.setdefault(kind, {})[outcome] = int(value)
        return ArchiveCounts(n("windows"), n("speeds"), n("events"), n("quarantine"), outcomes)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query (the study's aggregations, tests)."""
        return list(self._db.execute(sql, params).fetchall())

    def cameras(self) -> list[tuple[str, str, float, float, int]]:
        """(device, camera, first window t0, last window t0, windows) of every camera in the archive."""
        return [(str(d), str(c), float(a), float(b), int(n)) for d, c, a, b, n in self._db.execute(
            "SELECT device, camera, MIN(t0), MAX(t0), COUNT(*) FROM windows GROUP BY device, camera ORDER BY 1, 2")]


def pack(payload: str) -> bytes:
    """A stored payload: its canonical JSON (``Payload.to_json``), zlib-compressed (about a fifth of the size)."""
    return zlib.compress(payload.encode(), 6)


def unpack(blob: bytes) -> str:
    return zlib.decompress(blob).decode()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
