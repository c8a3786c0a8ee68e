"""Store-and-forward outbox: every outgoing message waits here, on disk, until the broker acknowledges it.

SQLite in WAL mode with ``synchronous=FULL`` and one transaction per :meth:`Outbox.put`: a put that
returned survives a crash or power cut, and unacknowledged rows are sent again after a restart
(at-least-once; consumers upsert by ``msg_id``).

Layout
    One table per kind (``q_event``, ``q_metrics``, ``q_health``, ``q_status``), each row ``id, topic,
    payload, created_s`` (UTC epoch seconds) and ``size`` (payload plus topic bytes). Ids come from one
    persistent counter shared by all kinds and bumped in the put's transaction (what ``AUTOINCREMENT``
    does with ``sqlite_sequence``): an id is never reused, and the sender merges the tables in id order.
    A table per kind keeps every table first-in first-out: sends, acks, expiry and drops all remove rows
    from the oldest end, so deleting rows frees whole pages and a drop never has to pick rows scattered
    among other kinds' rows.

Bounds
    * Bytes on disk: pages in use by the database plus a fixed allowance for the write-ahead log, whose
      size is held down by a low ``wal_autocheckpoint`` and ``journal_size_limit``. The database file
      plus its WAL stay within ``max_bytes``.
    * Age: a per-kind TTL; expired rows are dropped unsent.

When a put would go over budget, rows are dropped in :data:`DROP_ORDER` (health, then metrics, events
last), oldest first within a kind. Rows out with the sender (taken, not yet acknowledged) are never
dropped, and neither is the status row (there is at most one: a new status supersedes the old).
Every message is accounted for, per kind, in counters kept in the same database and updated in the
same transaction as the change they count::

    produced == depth + acked + rejected + superseded + dropped_full + dropped_ttl + dropped_error

A put never raises for a runtime fault: a full disk (``database or disk is full``) or an I/O error
counts the message as dropped and logs. Counts that could not be written are kept in memory and
written with the next transaction that succeeds.

Threads: one connection guarded by a lock; camera threads put, the sender thread takes and acks. Every
call is one short transaction; no call does network I/O. The database is opened with
``locking_mode=EXCLUSIVE``, so a second process cannot use the same outbox (and no ``-shm`` file exists).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

from edge.errors import PublishError
from edge.payloads import MessageKind

log = logging.getLogger(__name__)

KINDS: Final[tuple[MessageKind, ...]] = get_args(MessageKind)
#: Drop order when the outbox is full: first kind first, oldest row first within a kind.
DROP_ORDER: Final[tuple[MessageKind, ...]] = ("health", "metrics", "event")
#: A payload larger than this is a bug (the contract keeps every payload under 4 KB; an image must never
#: travel over MQTT), so ``put`` raises instead of storing it.
MAX_PAYLOAD_BYTES: Final = 16 * 1024

Outcome = Literal["acked", "rejected", "superseded", "dropped_full", "dropped_ttl", "dropped_error"]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)

_PAGE_BYTES: Final = 4096
_WAL_FRAME_OVERHEAD: Final = 24  # bytes of frame header per page in the WAL
_WAL_TXN_PAGES: Final = 16  # pages one transaction may add past the checkpoint threshold
_SLACK_PAGES: Final = 4  # pages a put may hold before its drops free them
_COLS: Final = "id, topic, payload, created_s, size"


def _table(kind: MessageKind) -> str:
    return f"q_{kind}"  # kind is one of KINDS: never user text in SQL


_SCHEMA: Final = "".join(
    f"CREATE TABLE IF NOT EXISTS {_table(k)} (id INTEGER PRIMARY KEY, topic TEXT NOT NULL, payload BLOB NOT NULL, "
    "created_s REAL NOT NULL, size INTEGER NOT NULL);\n"
    for k in KINDS
) + (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;\n"
    "INSERT OR IGNORE INTO meta (name, value) VALUES ('last_id', 0);\n"
)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One stored message. ``created_s`` is UTC epoch seconds at ``put``; ``size`` is payload plus topic bytes."""

    id: int
    kind: MessageKind
    topic: str
    payload: bytes
    created_s: float
    size: int


@dataclass(frozen=True, slots=True)
class KindStats:
    depth: int
    produced: int
    acked: int
    rejected: int
    superseded: int
    dropped_full: int
    dropped_ttl: int
    dropped_error: int


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """A consistent snapshot: ``size_bytes`` is the database file plus its WAL on disk."""

    depth: int
    size_bytes: int
    max_bytes: int
    oldest_age_s: float
    kinds: Mapping[MessageKind, KindStats]

    def total(self, outcome: Outcome | Literal["produced", "depth"]) -> int:
        return sum(getattr(k, outcome) for k in self.kinds.values())


def wal_budget(max_bytes: int) -> tuple[int, int]:
    """``(wal_autocheckpoint_pages, wal_allowance_bytes)`` for a budget: about 1/16 of it, 4 to 1000 pages."""
    pages = max(4, min(1000, max_bytes // 16 // _PAGE_BYTES))
    return pages, (pages + _WAL_TXN_PAGES) * (_PAGE_BYTES + _WAL_FRAME_OVERHEAD) + 32


class Outbox:
    """Bounded on-disk queue of outgoing messages. See the module docstring for the guarantees.

    ``ttl_s`` maps each kind to its time to live in seconds (kinds left out never expire). ``clock``
    returns UTC epoch seconds; tests pass a fake one.
    """

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        ttl_s: Mapping[MessageKind, float],
        clock: Callable[[], float] = time.time,
    ) -> None:
        ckpt_pages, wal_allowance = wal_budget(max_bytes)
        data_budget = max_bytes - wal_allowance - _SLACK_PAGES * _PAGE_BYTES
        if data_budget < 16 * _PAGE_BYTES:
            raise ValueError(
                f"max_bytes={max_bytes} leaves {data_budget} bytes for messages after the write-ahead log "
                f"allowance of {wal_allowance}; give the outbox at least 256 KiB"
            )
        if unknown := set(ttl_s) - set(KINDS):
            raise ValueError(f"ttl_s has unknown kinds {sorted(unknown)}; kinds are {KINDS}")
        self.path = path
        self.max_bytes = max_bytes
        self._data_budget = data_budget
        self._ttl_s = dict(ttl_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._closed = False
        self._leased: dict[int, MessageKind] = {}  # taken by the sender, awaiting its ack
        self._ack_retry: dict[int, MessageKind] = {}  # acknowledged, but the delete failed (full disk)
        self._cursor = 0  # take() continues after this id until release()
        self._counts: Counter[str] = Counter()  # "<outcome or produced>.<kind>" totals, saved or not
        self._unsaved: Counter[str] = Counter()  # part of _counts not yet written to the database
        self._depth: Counter[str] = Counter()  # rows per kind
        self._last_log_s = -math.inf
        self._conn = self._open(ckpt_pages, wal_allowance)

    # ------------------------------------------------------------------------------------------- open
    def _open(self, ckpt_pages: int, wal_allowance: int) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PublishError(f"cannot create the outbox folder {self.path.parent}: {exc.strerror}") from None
        try:
            conn = self._connect(ckpt_pages, wal_allowance)
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
                raise PublishError(
                    f"outbox {self.path} is in use by another process; run one edge service per outbox"
                ) from None
            # Not a database, or damaged beyond use: keep it for inspection and start a fresh one.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.error("outbox %s is unreadable (%s); moved it to %s and started empty", self.path, exc, aside)
            for suffix in ("", "-wal", "-journal"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    src.replace(Path(f"{aside}{suffix}"))
            conn = self._connect(ckpt_pages, wal_allowance)
        for kind in KINDS:
            self._depth[kind] = conn.execute(f"SELECT COUNT(*) FROM {_table(kind)}").fetchone()[0]
        for name, value in conn.execute("SELECT name, value FROM meta WHERE name != 'last_id'"):
            self._counts[name] = value
        return conn

    def _connect(self, ckpt_pages: int, wal_allowance: int) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0.2)
        try:
            # EXCLUSIVE before WAL: no shared-memory index file, and one process per outbox.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute(f"PRAGMA page_size={_PAGE_BYTES}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise sqlite3.DatabaseError(f"journal_mode is {mode}, not wal")
            conn.execute("PRAGMA synchronous=FULL")
            # Debian builds SQLite with secure_delete on: every freed page is zeroed through the WAL, so
            # deleting a batch would write the whole batch again. FAST still clears deleted cells in the
            # pages a delete writes anyway (payloads are anonymous aggregates; nothing needs shredding).
            conn.execute("PRAGMA secure_delete=FAST")
            conn.execute(f"PRAGMA wal_autocheckpoint={ckpt_pages}")
            conn.execute(f"PRAGMA journal_size_limit={wal_allowance}")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {check}")
            conn.executescript(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        """Write any unsaved counts, checkpoint and close. Idempotent."""
        with self._lock:
            if self._closed:
                return
            if self._unsaved:
                self._transaction(lambda cur, delta: None, "counter update at close")
            try:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("outbox checkpoint at close failed: %s", exc)
            self._conn.close()
            self._closed = True

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------ transactions
    def _transaction(self, body: Callable[[sqlite3.Cursor, Counter[str]], None], what: str) -> int | None:
        """Run ``body`` in one IMMEDIATE transaction with the counter update; apply counts only on commit.

        ``body`` records what it did in ``delta`` ("<outcome>.<kind>" and "depth.<kind>" keys). Returns
        None on success, else the SQLite error code (after a rollback and a log line), e.g. SQLITE_FULL.
        """
        delta: Counter[str] = Counter()
        cur = self._conn.cursor()
        try:
            cur.execute("BEGIN IMMEDIATE")
            body(cur, delta)
            save = self._unsaved + Counter({k: v for k, v in delta.items() if not k.startswith("depth.")})
            cur.executemany(
                "INSERT INTO meta (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                sorted(save.items()),
            )
            cur.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already (full disk)
                cur.execute("ROLLBACK")
            self._log_fault(f"outbox {what} failed: {exc}")
            return getattr(exc, "sqlite_errorcode", -1)
        finally:
            cur.close()  # a failed statement left active would keep the file locked after close()
        for key, n in delta.items():
            if key.startswith("depth."):
                self._depth[key.removeprefix("depth.")] += n
            else:
                self._counts[key] += n
        self._unsaved.clear()
        return None

    def _count_unsaved(self, key: str) -> None:
        self._counts[key] += 1
        self._unsaved[key] += 1

    def _log_fault(self, message: str) -> None:
        """Log at most one warning a minute: a full disk must not flood the log."""
        now = time.monotonic()
        if now - self._last_log_s >= 60:
            self._last_log_s = now
            drops = {k: v for k, v in self._counts.items() if k.startswith("dropped_")}
            log.warning("%s; drop counts so far %s", message, dict(sorted(drops.items())))

    def _check_open(self) -> None:
        if self._closed:
            raise PublishError(f"outbox {self.path} is closed")

    # ---------------------------------------------------------------------------------------------- put
    def put(self, kind: MessageKind, topic: str, payload: bytes) -> int | None:
        """Store one message; return its id, or None when it was dropped (counted and logged).

        One short transaction and no network I/O, so camera threads may call it. A status message
        supersedes older unsent ones. Raises ``ValueError`` only for programmer errors (unknown kind, a
        payload over :data:`MAX_PAYLOAD_BYTES`) and ``PublishError`` after :meth:`close`.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError(
                f"{kind} payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}: payloads are small "
                "anonymous JSON records, never images"
            )
        size = len(payload) + len(topic.encode())
        kept: list[int] = []

        def body(cur: sqlite3.Cursor, delta: Counter[str]) -> None:
            delta[f"produced.{kind}"] += 1
            if kind == "status":
                for (old,) in cur.execute("SELECT id FROM q_status").fetchall():
                    if old not in self._leased and cur.execute("DELETE FROM q_status WHERE id = ?", (old,)).rowcount:
                        delta["superseded.status"] += 1
                        delta["depth.status"] -= 1
            (rid,) = cur.execute("UPDATE meta SET value = value + 1 WHERE name = 'last_id' RETURNING value").fetchone()
            cur.execute(
                f"INSERT INTO {_table(kind)} (id, topic, payload, created_s, size) VALUES (?, ?, ?, ?, ?)",
                (rid, topic, payload, self._clock(), size),
            )
            delta[f"depth.{kind}"] += 1
            if rid not in self._enforce_budget(cur, delta):
                kept.append(rid)  # else it was the lowest-priority row, and made room for nothing

        with self._lock:
            self._check_open()
            error = self._transaction(body, f"put of a {kind} message")
            if error is None:
                return kept[0] if kept else None
            # Nothing was stored: count it, as a full disk or as another write error.
            full = error == sqlite3.SQLITE_FULL
            self._count_unsaved(f"produced.{kind}")
            self._count_unsaved(f"{'dropped_full' if full else 'dropped_error'}.{kind}")
            return None

    def _used_bytes(self, cur: sqlite3.Cursor) -> int:
        pages = cur.execute("PRAGMA page_count").fetchone()[0] - cur.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages) * _PAGE_BYTES

    def _enforce_budget(self, cur: sqlite3.Cursor, delta: Counter[str]) -> set[int]:
        """Drop rows in DROP_ORDER, oldest first, until the pages in use fit the budget; return their ids."""
        dropped: set[int] = set()
        while self._used_bytes(cur) > self._data_budget:
            victim = self._next_victim(cur)
            if victim is None:
                self._log_fault("outbox over budget with only unacknowledged or status rows left")
                break
            rid, kind = victim
            cur.execute(f"DELETE FROM {_table(kind)} WHERE id = ?", (rid,))
            delta[f"dropped_full.{kind}"] += 1
            delta[f"depth.{kind}"] -= 1
            dropped.add(rid)
        return dropped

    def _next_victim(self, cur: sqlite3.Cursor) -> tuple[int, MessageKind] | None:
        busy = len(self._leased) + len(self._ack_retry)
        for kind in DROP_ORDER:
            for (rid,) in cur.execute(f"SELECT id FROM {_table(kind)} ORDER BY id LIMIT ?", (busy + 1,)).fetchall():
                if rid not in self._leased and rid not in self._ack_retry:
                    return rid, kind
        return None

    # -------------------------------------------------------------------------------- sender interface
    def take(self, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` rows for the sender, status first, then in id order; each is leased until
        :meth:`ack`, :meth:`reject` or :meth:`release`. Expired rows met on the way are dropped."""
        if limit <= 0:
            return []
        with self._lock:
            self._check_open()
            now = self._clock()
            out: list[OutboxRow] = []
            expired: list[OutboxRow] = []
            for r in self._conn.execute(f"SELECT {_COLS} FROM q_status ORDER BY id").fetchall():
                row = OutboxRow(r[0], "status", *r[1:])
                if row.id not in self._leased:
                    (expired if self._expired(row, now) else out).append(row)
            merged = " UNION ALL ".join(
                f"SELECT {_COLS}, '{k}' FROM {_table(k)} WHERE id > :after" for k in KINDS if k != "status"
            )
            while len(out) < limit:
                batch = self._conn.execute(
                    f"{merged} ORDER BY id LIMIT :n", {"after": self._cursor, "n": limit}
                ).fetchall()
                if not batch:
                    break
                for r in batch:
                    row = OutboxRow(r[0], r[5], r[1], r[2], r[3], r[4])
                    self._cursor = row.id
                    if row.id in self._leased or row.id in self._ack_retry:
                        continue
                    (expired if self._expired(row, now) else out).append(row)
                    if len(out) == limit:
                        break
            if expired:
                self._delete({r.id: r.kind for r in expired}, "dropped_ttl")
            self._leased.update((row.id, row.kind) for row in out)
            return out

    def _expired(self, row: OutboxRow, now: float) -> bool:
        ttl = self._ttl_s.get(row.kind)
        return ttl is not None and now - row.created_s >= ttl

    def ttl_remaining_s(self, row: OutboxRow) -> float:
        """Seconds ``row`` may still wait (``inf`` for a kind without TTL); for MQTT v5 message expiry."""
        ttl = self._ttl_s.get(row.kind)
        return math.inf if ttl is None else ttl - (self._clock() - row.created_s)

    def ack(self, ids: Iterable[int]) -> int:
        """Delete taken rows the broker acknowledged; return how many were deleted.

        If the delete fails (full disk) the rows stay leased, so they are not sent again by this process,
        and the delete is retried by the next ``ack`` or ``expire``.
        """
        with self._lock:
            self._check_open()
            todo = {rid: self._leased[rid] for rid in ids if rid in self._leased} | self._ack_retry
            if not todo:
                return 0
            n = self._delete(todo, "acked")
            if n is None:
                self._ack_retry |= todo
                return 0
            self._ack_retry.clear()
            for rid in todo:
                self._leased.pop(rid, None)
            return n

    def reject(self, ids: Iterable[int]) -> int:
        """Delete taken rows the broker refused for good (a PUBACK failure such as Not authorized)."""
        with self._lock:
            self._check_open()
            todo = {rid: self._leased.pop(rid) for rid in ids if rid in self._leased}
            n = self._delete(todo, "rejected")
            if n is None:
                self._cursor = 0  # still stored: they will be offered again
                return 0
            return n

    def release(self, ids: Iterable[int] | None = None) -> None:
        """Un-lease taken rows so that they are sent again (all of them, e.g. after a disconnect, when None)."""
        with self._lock:
            if ids is None:
                self._leased.clear()
            else:
                for rid in ids:
                    self._leased.pop(rid, None)
            self._cursor = 0

    def expire(self) -> int:
        """Drop rows older than their kind's TTL (leased rows excepted); return how many were dropped."""
        with self._lock:
            self._check_open()
            if self._ack_retry and self._delete(dict(self._ack_retry), "acked") is not None:
                for rid in self._ack_retry:
                    self._leased.pop(rid, None)
                self._ack_retry.clear()
            now = self._clock()
            expired: dict[int, MessageKind] = {}
            for kind, ttl in self._ttl_s.items():
                after = 0
                while True:  # a table is in created order but for clock steps: stop at the first live row
                    batch = self._conn.execute(
                        f"SELECT id, created_s FROM {_table(kind)} WHERE id > ? ORDER BY id LIMIT 256", (after,)
                    ).fetchall()
                    live = next((i for i, (_, created) in enumerate(batch) if now - created < ttl), len(batch))
                    expired |= {rid: kind for rid, _ in batch[:live]
                                if rid not in self._leased and rid not in self._ack_retry}
                    if live < len(batch) or len(batch) < 256:
                        break
                    after = batch[-1][0]
            if not expired:
                return 0
            return self._delete(expired, "dropped_ttl") or 0

    def _delete(self, rows: Mapping[int, MessageKind], outcome: Outcome) -> int | None:
        """Delete rows (id -> kind) in one transaction, counting each deleted row as ``outcome``; None on failure."""
        deleted = 0

        def body(cur: sqlite3.Cursor, delta: Counter[str]) -> None:
            nonlocal deleted
            for rid, kind in sorted(rows.items()):
                if cur.execute(f"DELETE FROM {_table(kind)} WHERE id = ?", (rid,)).rowcount:
                    delta[f"{outcome}.{kind}"] += 1
                    delta[f"depth.{kind}"] -= 1
                    deleted += 1

        return None if self._transaction(body, f"delete ({outcome})") else deleted

    # -------------------------------------------------------------------------------------------- stats
    @property
    def depth(self) -> int:
        """Messages stored and not yet acknowledged (leased ones included)."""
        with self._lock:
            return sum(self._depth.values())

    def size_bytes(self) -> int:
        """Bytes on disk: the database file plus its write-ahead log."""
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def oldest_age_s(self) -> float:
        """Age of the oldest stored message in seconds; 0 when empty."""
        with self._lock:
            self._check_open()
            return self._oldest_age_s()

    def _oldest_age_s(self) -> float:
        oldest = math.inf
        for kind in KINDS:
            row = self._conn.execute(f"SELECT created_s FROM {_table(kind)} ORDER BY id LIMIT 1").fetchone()
            if row is not None:
                oldest = min(oldest, row[0])
        return 0.0 if oldest == math.inf else max(0.0, self._clock() - oldest)

    def stats(self) -> OutboxStats:
        with self._lock:
            self._check_open()
            kinds = {
                kind: KindStats(
                    depth=self._depth[kind],
                    produced=self._counts[f"produced.{kind}"],
                    **{o: self._counts[f"{o}.{kind}"] for o in OUTCOMES},
                )
                for kind in KINDS
            }
            return OutboxStats(
                depth=sum(self._depth.values()),
                size_bytes=self.size_bytes(),
                max_bytes=self.max_bytes,
                oldest_age_s=self._oldest_age_s(),
                kinds=kinds,
            )
