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
    * Free space: the file system may hold less than ``max_bytes`` (a small partition, or other files on
      it). The checkpoint threshold is sized at open from ``max_bytes`` or the room the file system has,
      whichever is smaller, and every put re-reads the free space (``statvfs``): the pages in use may
      grow only as far as the database file plus the free space, less the WAL's allowance and
      :data:`RESERVE_BYTES`. So the database never has to grow to absorb its WAL: a checkpoint, and with
      it every later write, can always complete, and acknowledged rows can always be deleted.
    * A reserve file, ``<name>-reserve`` (the WAL allowance, at most 1/16 of ``max_bytes``, at least 32 KiB;
      not counted in ``max_bytes``), holds real blocks for the moment another program takes the last free
      byte: the outbox deletes it to finish the checkpoint that would otherwise need the database to grow,
      and writes it again once the disk has the room.
    * Age: a per-kind TTL; expired rows are dropped unsent.

When a put would go over budget, rows are dropped in :data:`DROP_ORDER` (health, then metrics, events
last), oldest first within a kind. Rows out with the sender (taken, not yet acknowledged) are never
dropped, and neither is the status row (there is at most one: a new status supersedes the old).
If the disk is full anyway (``SQLITE_FULL``: another program took the space), the write is retried
after a ``wal_checkpoint(RESTART)``, which lets the next transaction reuse the WAL file from its start
without growing it, and if that is not enough, after freeing the reserve file; a put that still does
not fit makes room in the same drop order, and the new message is dropped only when nothing less
important than it (or older of its kind) is left. Deletes go in batches small enough for the WAL.
Every message is accounted for, per kind, in counters kept in the same database and updated in the
same transaction as the change they count::

    produced == depth + acked + rejected + superseded + dropped_full + dropped_ttl + dropped_error

A put never raises for a runtime fault: a full disk (``database or disk is full``) or an I/O error
counts the message as dropped and logs. Counts that could not be written are kept in memory and
written with the next transaction that succeeds.

Opening
    A file that SQLite reports as corrupt ("file is not a database", "database disk image is malformed",
    or a failed ``quick_check``) is moved aside to ``<name>.corrupt-<time>`` and a fresh outbox starts.
    Anything else that keeps the outbox from opening (a folder at the path, no permission, a read-only
    file system, a parent that is a file) raises :class:`~edge.errors.PublishError` naming the path and
    the fix, and touches nothing: such a file may hold unsent messages. :func:`outbox_problem` makes the
    same checks without opening anything, for ``edge validate-config`` and ``edge attest``. The database
    and its ``-wal``/``-shm``/``-journal`` files are created (or tightened to) mode 0600 whatever the
    umask; a folder the outbox creates is 0700.

Threads: one connection guarded by a lock; camera threads put, the sender thread takes and acks. Every
call is one short transaction; no call does network I/O. The database is opened with
``locking_mode=EXCLUSIVE``, so a second process cannot use the same outbox (and no ``-shm`` file exists).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import sqlite3
import stat
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
#: Bytes of the file system the outbox leaves free: a margin for SQLite (a checkpoint, the WAL growing
#: back after it was truncated at close) and for other writers, so a full partition never wedges it.
RESERVE_BYTES: Final = 16 * _PAGE_BYTES
_DELETE_BATCH: Final = 32  # rows per delete transaction: its WAL frames fit the per-transaction allowance
_MAX_DROP_BYTES: Final = 8 * _PAGE_BYTES  # a put drops at most this (plus its own size) when the room shrank
_ROOM_ROUNDS: Final = 5  # after SQLITE_FULL, rounds of making room (each frees twice the last) per put
_CORRUPT_CODES: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_SIDE_FILES: Final = ("-wal", "-shm", "-journal")
_FIX: Final = ("set mqtt.outbox_path to a file in a folder the service user may write, e.g. "
               "/var/lib/edge/spool/outbox.sqlite3")
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


class _Corrupt(sqlite3.DatabaseError):
    """``quick_check`` found damage: the file is a database, but not one to trust."""


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


def outbox_problem(path: Path) -> str | None:
    """Why an outbox at ``path`` could not be opened for writing, or None. Opens, creates and changes nothing.

    Checked: the path and its ``-wal``/``-shm``/``-journal`` files, where they exist, are regular files this
    user may read and write; the folder exists (or can be created) and this user may create files in it
    (SQLite creates the WAL beside the database). A file that is not a database is no problem here: the
    outbox moves it aside when it opens.
    """
    for p in (path, *(Path(f"{path}{suffix}") for suffix in _SIDE_FILES)):
        if problem := _file_problem(p):
            return problem
    return _folder_problem(path.parent)


def _why_not_writable(p: Path) -> str:
    with contextlib.suppress(OSError):
        if os.statvfs(p).f_flag & os.ST_RDONLY:
            return "its file system is mounted read-only"
    return f"permission denied for uid {os.getuid()}"


def _file_problem(p: Path) -> str | None:
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            return None  # a parent is a file: the folder check says so
        return f"cannot look up {p}: {exc.strerror}; {_FIX}"
    if stat.S_ISDIR(st.st_mode):
        return f"{p} is a folder, not an outbox file; {_FIX}"
    if not stat.S_ISREG(st.st_mode):
        return f"{p} is not a regular file; {_FIX}"
    if not os.access(p, os.R_OK | os.W_OK):
        return (f"{p} cannot be opened for reading and writing ({_why_not_writable(p)}); it may hold unsent "
                "messages, so it is left as it is: give the service user read and write access to it (chown it "
                "to that user, chmod 600) and make its file system writable")
    return None


def _folder_problem(folder: Path) -> str | None:
    existing = folder
    while True:
        try:
            st = existing.stat()
            break
        except FileNotFoundError:
            existing = existing.parent
        except OSError as exc:
            if exc.errno != errno.ENOTDIR:
                return f"cannot look up the folder {folder}: {exc.strerror}; {_FIX}"
            existing = existing.parent
    if not stat.S_ISDIR(st.st_mode):
        return f"{existing} is a file, so the outbox folder {folder} cannot be created; {_FIX}"
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "create files in the folder" if existing == folder else f"create the folder {folder} in"
        return f"cannot {what} {existing} ({_why_not_writable(existing)}); {_FIX}"
    return None


def _code(exc: sqlite3.Error) -> int:
    """SQLite's primary result code of an error (-1 for one SQLite did not raise)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return -1 if code is None else int(code) & 0xFF  # extended codes carry the primary one in the low byte


def _rank(kind: MessageKind) -> int:
    """Place of ``kind`` in :data:`DROP_ORDER` (status, never dropped for room, ranks above all)."""
    return DROP_ORDER.index(kind) if kind in DROP_ORDER else len(DROP_ORDER)


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
        _, wal_allowance = wal_budget(max_bytes)
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
        self._held: set[int] = set()  # given back by the sender unsent; not offered again until release()
        self._cursor = 0  # take() continues after this id until release()
        self._counts: Counter[str] = Counter()  # "<outcome or produced>.<kind>" totals, saved or not
        self._unsaved: Counter[str] = Counter()  # part of _counts not yet written to the database
        self._depth: Counter[str] = Counter()  # rows per kind
        self._last_log_s = -math.inf
        self._wal_allowance = wal_allowance
        self._reserve = Path(f"{path}-reserve")
        self._reserve_bytes = 0  # sized in _open, from the WAL allowance
        self._reserve_held = False
        self._conn = self._open()

    # ------------------------------------------------------------------------------------------- open
    def _open(self) -> sqlite3.Connection:
        if problem := outbox_problem(self.path):
            raise PublishError(f"the outbox cannot be opened: {problem}")
        try:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise PublishError(f"cannot create the outbox folder {self.path.parent}: {exc.strerror}") from None
        # Size the WAL for the room the file system has, when that is less than the budget (a small partition).
        ckpt_pages, self._wal_allowance = wal_budget(max(0, min(self.max_bytes, self._disk_room())))
        try:
            conn = self._connect(ckpt_pages)
        except sqlite3.DatabaseError as exc:
            if _code(exc) not in _CORRUPT_CODES and not isinstance(exc, _Corrupt):
                raise self._open_error(exc) from None
            self._set_aside(exc)
            conn = self._connect(ckpt_pages)
        for kind in KINDS:
            self._depth[kind] = conn.execute(f"SELECT COUNT(*) FROM {_table(kind)}").fetchone()[0]
        for name, value in conn.execute("SELECT name, value FROM meta WHERE name != 'last_id'"):
            self._counts[name] = value
        self._reserve_bytes = min(self._wal_allowance, max(8 * _PAGE_BYTES, self.max_bytes // 16))
        self._hold_reserve()
        return conn

    def _hold_reserve(self) -> None:
        """Write the reserve file (real blocks, not a sparse file) when it is missing or the wrong size and
        the disk has room for it. Never raises: without room it is tried again by the next put."""
        try:
            have = self._reserve.stat().st_size
        except FileNotFoundError:
            have = 0
        except OSError:
            return
        if have == self._reserve_bytes:
            self._reserve_held = True
            return
        try:
            fs = os.statvfs(self.path.parent)
            if fs.f_bavail * fs.f_frsize < self._reserve_bytes - have:
                return
            fd = os.open(self._reserve, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                left = self._reserve_bytes
                while left > 0:
                    left -= os.write(fd, b"\xa5" * min(left, 64 * 1024))
                os.fsync(fd)
            finally:
                os.close(fd)
            self._reserve_held = True
        except OSError as exc:
            self._log_fault(f"outbox reserve file {self._reserve} could not be written: {exc.strerror}")
            with contextlib.suppress(OSError):
                self._reserve.unlink()

    def _use_reserve(self) -> bool:
        """On a full disk: free the reserve file and checkpoint into the room it leaves. True if it was held."""
        if not self._reserve_held:
            return False
        self._reserve_held = False
        with contextlib.suppress(FileNotFoundError):
            self._reserve.unlink()
        log.warning("outbox %s: the disk is full; freed its %d-byte reserve to finish a checkpoint", self.path,
                    self._reserve_bytes)
        self._checkpoint()
        return True

    def _open_error(self, exc: sqlite3.DatabaseError) -> PublishError:
        """The start-up error for an outbox that SQLite could not open but did not call corrupt."""
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            return PublishError(f"outbox {self.path} is in use by another process; run one edge service per outbox")
        return PublishError(
            f"the outbox {self.path} cannot be opened: {exc} ({getattr(exc, 'sqlite_errorname', 'error')}); it was "
            "not moved aside, as it may hold unsent messages: check that the service user may read and write it "
            f"and its folder, that the file system is writable and has room, or {_FIX}"
        )

    def _set_aside(self, exc: sqlite3.DatabaseError) -> None:
        """Move a corrupt database (and its side files) aside for inspection, so that a fresh one starts."""
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        log.error("outbox %s is corrupt (%s); moved it to %s and started empty", self.path, exc, aside)
        for suffix in ("", *_SIDE_FILES):
            src = Path(f"{self.path}{suffix}")
            try:
                if src.is_file():
                    src.replace(Path(f"{aside}{suffix}"))
            except OSError as err:
                raise PublishError(
                    f"the outbox {self.path} is corrupt ({exc}) and cannot be moved aside: {err.strerror}; move or "
                    "delete it by hand"
                ) from None

    def _create_private(self) -> None:
        """Create the database file 0600 whatever the umask (SQLite gives its -wal/-shm/-journal files the
        database file's mode), and tighten an existing one and its side files to 0600."""
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise PublishError(f"the outbox {self.path} cannot be created: {exc.strerror}; {_FIX}") from None
        for suffix in ("", *_SIDE_FILES):
            with contextlib.suppress(OSError):  # absent, or not ours to change (then SQLite reports it)
                name = f"{self.path}{suffix}"
                if os.stat(name).st_mode & 0o177:
                    os.chmod(name, 0o600)

    def _connect(self, ckpt_pages: int) -> sqlite3.Connection:
        self._create_private()
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0.2)
        try:
            # EXCLUSIVE before WAL: no shared-memory index file, and one process per outbox.
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute(f"PRAGMA page_size={_PAGE_BYTES}")
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise sqlite3.OperationalError(f"journal_mode is {mode}, not wal")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA temp_store=MEMORY")  # no temporary files, on a full disk or elsewhere
            # Debian builds SQLite with secure_delete on: every freed page is zeroed through the WAL, so
            # deleting a batch would write the whole batch again. FAST still clears deleted cells in the
            # pages a delete writes anyway (payloads are anonymous aggregates; nothing needs shredding).
            conn.execute("PRAGMA secure_delete=FAST")
            conn.execute(f"PRAGMA wal_autocheckpoint={ckpt_pages}")
            conn.execute(f"PRAGMA journal_size_limit={self._wal_allowance}")
            check = conn.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise _Corrupt(f"quick_check: {check}")
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

        ``body`` records what it did in ``delta`` ("<outcome>.<kind>" and "depth.<kind>" keys). A full disk
        (SQLITE_FULL) is retried after a checkpoint that lets the WAL be reused from its start, then after
        freeing the reserve file (:meth:`_use_reserve`). Returns
        None on success, else the SQLite error code (after a rollback and a log line), e.g. SQLITE_FULL.
        """
        error = self._try_transaction(body)
        for recover in (self._checkpoint, self._use_reserve):
            if error is None or _code(error) != sqlite3.SQLITE_FULL:
                break
            if recover():
                error = self._try_transaction(body)
        if error is None:
            return None
        self._log_fault(f"outbox {what} failed: {error}")
        return _code(error)

    def _try_transaction(self, body: Callable[[sqlite3.Cursor, Counter[str]], None]) -> sqlite3.Error | None:
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
            return exc
        finally:
            cur.close()  # a failed statement left active would keep the file locked after close()
        for key, n in delta.items():
            if key.startswith("depth."):
                self._depth[key.removeprefix("depth.")] += n
            else:
                self._counts[key] += n
        self._unsaved.clear()
        return None

    def _checkpoint(self) -> bool:
        """Copy the whole WAL into the database so that the next transaction writes the WAL from its start,
        reusing its file instead of growing it (RESTART, not TRUNCATE: the space stays ours). True if done."""
        try:
            busy, frames, done = self._conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        except sqlite3.Error as exc:
            self._log_fault(f"outbox checkpoint on a full disk failed: {exc}")
            return False
        return bool(busy == 0 and frames == done)

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
        kept: list[int | None] = []

        def body(cur: sqlite3.Cursor, delta: Counter[str]) -> None:
            kept[:] = [self._insert(cur, delta, (kind, topic, payload, size), budget)]

        with self._lock:
            self._check_open()
            if not self._reserve_held:
                self._hold_reserve()
            budget = self._budget()
            error = self._transaction(body, f"put of a {kind} message")
            need = size + 2 * _PAGE_BYTES
            for _ in range(_ROOM_ROUNDS):  # a full disk: make room in drop order, then try again
                if error != sqlite3.SQLITE_FULL or not self._make_room(kind, need):
                    break
                error = self._transaction(body, f"put of a {kind} message")
                need *= 2
            if error is None:
                return kept[0]
            # Nothing was stored: count it, as a full disk or as another write error.
            full = error == sqlite3.SQLITE_FULL
            self._count_unsaved(f"produced.{kind}")
            self._count_unsaved(f"{'dropped_full' if full else 'dropped_error'}.{kind}")
            return None

    def _insert(self, cur: sqlite3.Cursor, delta: Counter[str], msg: tuple[MessageKind, str, bytes, int],
                budget: int) -> int | None:
        """The body of a put: supersede an old status, insert, drop for the budget; the id if it was kept."""
        kind, topic, payload, size = msg
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
        # else it was the lowest-priority row, and made room for nothing
        return None if rid in self._enforce_budget(cur, delta, budget, size) else int(rid)

    def _used_bytes(self, cur: sqlite3.Cursor) -> int:
        pages = cur.execute("PRAGMA page_count").fetchone()[0] - cur.execute("PRAGMA freelist_count").fetchone()[0]
        return int(pages) * _PAGE_BYTES

    def _file_sizes(self) -> tuple[int, int]:
        sizes = []
        for suffix in ("", "-wal"):
            try:
                sizes.append(os.stat(f"{self.path}{suffix}").st_size)
            except FileNotFoundError:
                sizes.append(0)
        return sizes[0], sizes[1]

    def _disk_room(self) -> int:
        """Bytes the outbox's files may take on their file system: what they take now plus its free space
        (as an unprivileged user sees it), less :data:`RESERVE_BYTES`."""
        try:
            fs = os.statvfs(self.path.parent)
        except OSError:
            return self.max_bytes
        return sum(self._file_sizes()) + fs.f_bavail * fs.f_frsize - RESERVE_BYTES

    def _budget(self) -> int:
        """Bytes of pages in use allowed now: the configured budget, or less where the file system is short.

        The database file may grow into the free space that the reserve and the WAL's growth up to its
        allowance leave, so that a checkpoint never needs room the disk does not have."""
        db, wal = self._file_sizes()
        try:
            fs = os.statvfs(self.path.parent)
        except OSError:
            return self._data_budget
        free = fs.f_bavail * fs.f_frsize - RESERVE_BYTES - max(0, self._wal_allowance - wal)
        if not self._reserve_held:
            free -= self._reserve_bytes  # keep the room to write it again
        # No room means no growth: pages freed inside the file are reused, but dropping more rows than that
        # would not give the file system a byte back.
        return min(self._data_budget, db + max(0, free) - _SLACK_PAGES * _PAGE_BYTES)

    def _enforce_budget(self, cur: sqlite3.Cursor, delta: Counter[str], budget: int, size: int) -> set[int]:
        """Drop rows in DROP_ORDER, oldest first, until the pages in use fit ``budget``; return their ids.

        At most ``size`` (the new row's) plus :data:`_MAX_DROP_BYTES` go per put: where the room shrank at
        once (another program filled the disk) the next puts drop the rest, each in a transaction small
        enough for the WAL."""
        dropped: set[int] = set()
        freed = 0
        while self._used_bytes(cur) > budget and freed < size + _MAX_DROP_BYTES:
            victim = self._next_victim(cur, DROP_ORDER)
            if victim is None:
                self._log_fault("outbox over budget with only unacknowledged or status rows left")
                break
            rid, kind, victim_size = victim
            self._drop(cur, delta, rid, kind)
            dropped.add(rid)
            freed += victim_size
        return dropped

    def _drop(self, cur: sqlite3.Cursor, delta: Counter[str], rid: int, kind: MessageKind) -> None:
        cur.execute(f"DELETE FROM {_table(kind)} WHERE id = ?", (rid,))
        delta[f"dropped_full.{kind}"] += 1
        delta[f"depth.{kind}"] -= 1

    def _next_victim(self, cur: sqlite3.Cursor, kinds: Iterable[MessageKind]) -> tuple[int, MessageKind, int] | None:
        """The oldest row of the first of ``kinds`` that has one not out with the sender: (id, kind, size)."""
        busy = len(self._leased) + len(self._ack_retry)
        for kind in kinds:
            for rid, size in cur.execute(
                f"SELECT id, size FROM {_table(kind)} ORDER BY id LIMIT ?", (busy + 1,)
            ).fetchall():
                if rid not in self._leased and rid not in self._ack_retry:
                    return rid, kind, size
        return None

    def _make_room(self, kind: MessageKind, need_bytes: int) -> bool:
        """After a full disk refused a put of ``kind``: drop rows in DROP_ORDER, of kinds dropped before
        ``kind`` or of ``kind`` itself (oldest first), until about ``need_bytes`` are freed, in one transaction.
        False when nothing could be dropped: then the new message is the one to go."""
        kinds = DROP_ORDER[: _rank(kind) + 1]
        with contextlib.closing(self._conn.cursor()) as cur:
            if self._next_victim(cur, kinds) is None:
                return False

        def body(cur: sqlite3.Cursor, delta: Counter[str]) -> None:
            freed = 0
            while freed < need_bytes and (victim := self._next_victim(cur, kinds)) is not None:
                rid, victim_kind, size = victim
                self._drop(cur, delta, rid, victim_kind)
                freed += size

        return self._transaction(body, f"making room for a {kind} message") is None

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
                if row.id not in self._leased and row.id not in self._held:
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
                    if row.id in self._leased or row.id in self._ack_retry or row.id in self._held:
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
        """Un-lease taken rows so that they are sent again (all of them, e.g. after a disconnect, when None;
        held rows too)."""
        with self._lock:
            if ids is None:
                self._leased.clear()
                self._held.clear()
            else:
                for rid in ids:
                    self._leased.pop(rid, None)
                    self._held.discard(rid)
            self._cursor = 0

    def hold(self, ids: Iterable[int]) -> None:
        """Give back taken rows the sender cannot send now (too large for this broker): they stay stored and
        are not offered again until :meth:`release` of all rows (the next reconnect). Unlike rows out with
        the sender, held rows may be dropped for space or TTL like any other."""
        with self._lock:
            for rid in ids:
                if self._leased.pop(rid, None) is not None:
                    self._held.add(rid)

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
        """Delete rows (id -> kind), counting each deleted row as ``outcome``; None if a transaction failed.

        In transactions of at most :data:`_DELETE_BATCH` rows: each stays within the WAL's per-transaction
        allowance, so that a large acknowledgement still goes through on a full disk. Rows deleted by an
        earlier batch stay deleted when a later one fails (a retry finds them gone and counts nothing)."""
        items = sorted(rows.items())
        deleted = 0
        for start in range(0, len(items), _DELETE_BATCH):
            n = self._delete_batch(items[start:start + _DELETE_BATCH], outcome)
            if n is None:
                return None
            deleted += n
        return deleted

    def _delete_batch(self, rows: list[tuple[int, MessageKind]], outcome: Outcome) -> int | None:
        deleted = 0

        def body(cur: sqlite3.Cursor, delta: Counter[str]) -> None:
            nonlocal deleted
            deleted = 0
            for rid, kind in rows:
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
