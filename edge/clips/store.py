"""The clip store: the only folder where images reach disk (P2), with an index and retention (P3).

Every clip is written atomically: a hidden partial name, fsync, a real probe, rename, fsync of the
folder, then the index row. At start-up partial files are swept and the index and the files are
reconciled, so a crash at any moment leaves either a complete, indexed clip or nothing. Files are 0600
and the folder 0700.

Several cameras may share one folder (``clips.store_dir``) and its index: a camera's store then sweeps
only its own files and rows (file names start with the clip id, ``clip_id``), never the partial clip
another camera is writing at that moment or a clip it has renamed but not indexed yet.

Retention deletes clips older than the limit and, past the byte budget, the oldest first.

The clip-seconds budget (P3, ``edge.clips.recorder``) is counted from this index, so that a restart
cannot reset it. It reads the ``kept`` table, not ``clips``: a clip's time range is entered there in the
same transaction as its ``clips`` row, but stays when retention, a full byte budget or a lost file
removes the clip. Otherwise a device with a small byte budget would delete its oldest clips and keep
recording, a recorder with a rolling window. ``kept`` rows are forgotten only when they are far older
(``KEPT_HISTORY_S``) than the camera's newest clip, beyond any rolling day the budget looks at.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from edge.errors import ClipError
from edge.sqlite import immediate_transaction

log = logging.getLogger(__name__)

PARTIAL_PREFIX = "."
PARTIAL_MARK = ".partial"
#: What follows ``{camera}_`` in a clip id: the UTC start to the millisecond (``clip_id``).
_CLIP_ID_TIME = r"_\d{8}T\d{6}_\d{3}Z"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS clips (
    id TEXT PRIMARY KEY,
    file TEXT NOT NULL,
    camera TEXT NOT NULL,
    start_utc_s REAL NOT NULL,
    end_utc_s REAL NOT NULL,
    event_ids TEXT NOT NULL,
    frames INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    encrypted INTEGER NOT NULL,
    created_s REAL NOT NULL
)
"""
_KEPT_SCHEMA = """
CREATE TABLE IF NOT EXISTS kept (
    id TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    start_utc_s REAL NOT NULL,
    end_utc_s REAL NOT NULL
)
"""
#: ``kept`` rows this much older than their camera's newest clip are forgotten: two rolling days.
KEPT_HISTORY_S = 2 * 86_400.0


@dataclass(frozen=True, slots=True)
class ClipRecord:
    id: str
    file: str
    camera: str
    start_utc_s: float
    end_utc_s: float
    event_ids: tuple[str, ...]
    frames: int
    bytes: int
    sha256: str
    encrypted: bool
    created_s: float


def clip_id(camera: str, start_utc_s: float) -> str:
    """The id of the clip of ``camera`` that starts at ``start_utc_s``: ``{camera}_YYYYmmddTHHMMSS_fffZ``."""
    return f"{camera}_{datetime.fromtimestamp(start_utc_s, UTC).strftime('%Y%m%dT%H%M%S_%f')[:-3]}Z"


def _own_file(camera: str | None) -> re.Pattern[str]:
    """File names of the clips of ``camera`` (any camera when None), partial or final (any suffix), and of
    no other camera: the time after the name makes ``cam`` and ``cam_2`` distinct."""
    partial = f"(?:{re.escape(PARTIAL_PREFIX)})?"
    name = re.escape(camera) if camera is not None else r"[A-Za-z0-9_-]{1,64}"
    return re.compile(rf"{partial}{name}{_CLIP_ID_TIME}(?:{re.escape(PARTIAL_MARK)})?\..+")


def foreign_files(root: Path) -> list[str]:
    """Names in ``root`` the clip store did not make (neither a clip, partial or final, nor its index): the
    store sweeps the clip names it cannot account for, so it needs a folder of its own (a password file or a
    CA certificate there would otherwise sit beside what the store deletes). Empty when ``root`` is missing."""
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ClipError(f"cannot list clips.store_dir {root}: {exc.strerror}") from None
    clip = _own_file(None)
    return sorted(n for n in names if not n.startswith(ClipStore.INDEX) and not clip.fullmatch(n))


def refuse_foreign_files(root: Path) -> None:
    """``ClipError`` naming the foreign files of ``root`` (see :func:`foreign_files`), if any."""
    if found := foreign_files(root):
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise ClipError(f"clips.store_dir {root} holds files the clip store did not write ({shown}); it needs a "
                        "folder of its own: move them, or point clips.store_dir at an empty folder")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ClipStore:
    """One folder of clips and its SQLite index ``index.sqlite``. Used from one writer thread.

    With ``camera``, the start-up sweep (``recover``) touches only that camera's files and index rows, so
    cameras can share the folder; without, the store owns the whole folder. Retention and the byte
    budget always count every clip in the index.
    """

    INDEX = "index.sqlite"

    def __init__(self, root: Path, retention_days: float, max_bytes: int, camera: str | None = None) -> None:
        self.root = root
        self.camera = camera
        self.retention_s = retention_days * 86_400
        self.max_bytes = max_bytes
        refuse_foreign_files(root)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)
        self._db = sqlite3.connect(root / self.INDEX, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self._db.execute(_KEPT_SCHEMA)
        # an index written before the ``kept`` table existed: its clips count against the budget too
        self._db.execute("INSERT OR IGNORE INTO kept SELECT id, camera, start_utc_s, end_utc_s FROM clips")
        for name in os.listdir(root):
            if name.startswith(self.INDEX):
                os.chmod(root / name, 0o600)
        self.purged_age = 0
        self.purged_bytes = 0
        self.recover()

    # ------------------------------------------------------------------------------------------ paths
    def partial_path(self, clip_id: str, suffix: str) -> Path:
        return self.root / f"{PARTIAL_PREFIX}{clip_id}{PARTIAL_MARK}{suffix}"

    def final_path(self, clip_id: str, suffix: str) -> Path:
        return self.root / f"{clip_id}{suffix}"

    # --------------------------------------------------------------------------------------- recovery
    def recover(self) -> tuple[int, int, int]:
        """Sweep partial files, delete files the index does not know and rows whose file is gone: the
        store camera's only, when it has one."""
        partials = orphans = lost = 0
        files = {r[0] for r in self._db.execute("SELECT file FROM clips")}
        own = _own_file(self.camera)  # only names the store makes: never a file it did not write
        for entry in os.scandir(self.root):
            if entry.name.startswith(self.INDEX) or not own.fullmatch(entry.name):
                continue
            if entry.name.startswith(PARTIAL_PREFIX) and PARTIAL_MARK in entry.name:
                os.unlink(entry.path)
                partials += 1
            elif entry.name not in files:
                os.unlink(entry.path)
                orphans += 1
        rows = (self._db.execute("SELECT file FROM clips") if self.camera is None else
                self._db.execute("SELECT file FROM clips WHERE camera = ?", (self.camera,)))
        for (file,) in list(rows):
            if not (self.root / file).exists():
                self._db.execute("DELETE FROM clips WHERE file = ?", (file,))
                lost += 1
        if partials or orphans or lost:
            fsync_dir(self.root)
            log.warning("clip store %s: removed %d partial and %d unindexed files, %d rows without file",
                        self.root, partials, orphans, lost)
        return partials, orphans, lost

    # ------------------------------------------------------------------------------------------ write
    def commit(self, partial: Path, record: ClipRecord) -> Path:
        """Rename a verified, fsynced partial file to its final name and index it."""
        if self._db.execute("SELECT 1 FROM clips WHERE id = ? OR file = ?", (record.id, record.file)).fetchone():
            # a second replay of the same recording into the same folder: never overwrite a kept clip
            raise ClipError(f"clip {record.id} is already in the store {self.root}; replay into a fresh folder")
        final = self.root / record.file
        os.replace(partial, final)
        fsync_dir(self.root)
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT INTO clips VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (record.id, record.file, record.camera, record.start_utc_s, record.end_utc_s,
                     json.dumps(list(record.event_ids)), record.frames, record.bytes, record.sha256,
                     int(record.encrypted), record.created_s),
                )
                self._db.execute("INSERT OR REPLACE INTO kept VALUES (?,?,?,?)",
                                 (record.id, record.camera, record.start_utc_s, record.end_utc_s))
        except sqlite3.Error as exc:
            # not indexed, so not kept: the file goes now, not at the next start-up's sweep
            with contextlib.suppress(FileNotFoundError):
                final.unlink()
            fsync_dir(self.root)
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise OSError(errno.ENOSPC, f"clip index {self.root / self.INDEX}: {exc}") from exc
            raise
        return final

    def _transaction(self) -> contextlib.AbstractContextManager[None]:
        return immediate_transaction(self._db)

    def discard(self, partial: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()

    # -------------------------------------------------------------------------------------- retention
    def enforce_retention(self, now_s: float | None = None) -> int:
        """Delete clips past the age limit, then the oldest while over the byte budget; return the count."""
        now_s = time.time() if now_s is None else now_s
        deleted = 0
        for clip_id, file in list(self._db.execute(
                "SELECT id, file FROM clips WHERE created_s < ? ORDER BY created_s", (now_s - self.retention_s,))):
            self._delete(clip_id, file)
            self.purged_age += 1
            deleted += 1
        total = self.usage_bytes()
        for clip_id, file, size in list(self._db.execute("SELECT id, file, bytes FROM clips ORDER BY created_s")):
            if total <= self.max_bytes:
                break
            self._delete(clip_id, file)
            total -= size
            self.purged_bytes += 1
            deleted += 1
        if deleted:
            fsync_dir(self.root)
        self._db.execute(
            "DELETE FROM kept WHERE end_utc_s < (SELECT MAX(k.end_utc_s) FROM kept AS k WHERE k.camera = kept.camera)"
            " - ?", (KEPT_HISTORY_S,))
        return deleted

    def _delete(self, clip_id: str, file: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / file).unlink()
        self._db.execute("DELETE FROM clips WHERE id = ?", (clip_id,))

    # ----------------------------------------------------------------------------------------- query
    def usage_bytes(self) -> int:
        (total,) = self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM clips").fetchone()
        return int(total)

    def kept_spans(self, camera: str) -> list[tuple[str, float, float]]:
        """``(clip id, start UTC s, end UTC s)`` of the clips of ``camera`` this store has kept lately, the
        ones retention deleted since included: what the clip-seconds budget counts after a restart."""
        rows = self._db.execute("SELECT id, start_utc_s, end_utc_s FROM kept WHERE camera = ? ORDER BY start_utc_s",
                                (camera,)).fetchall()
        return [(str(i), float(a), float(b)) for i, a, b in rows]

    def records(self) -> list[ClipRecord]:
        rows = self._db.execute("SELECT * FROM clips ORDER BY created_s, id").fetchall()
        return [ClipRecord(r[0], r[1], r[2], r[3], r[4], tuple(json.loads(r[5])), r[6], r[7], r[8], bool(r[9]),
                           r[10]) for r in rows]

    def close(self) -> None:
        self._db.close()
