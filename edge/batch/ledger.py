"""The job ledger of a batch folder (``OUTDIR/ledger.sqlite``): what is done, what failed, with the input's and
the config's sha256.

Only the batch's driver writes it, one short transaction per change, so a batch killed at any moment leaves
a ledger that says which jobs finished: a job is ``done`` only after its output folder was renamed into
place (``edge.batch.outputs``), so ``done`` always has complete outputs behind it, and a job that was
``running`` when the batch died is simply run again. The job id is a hash of everything its records depend
on (input and config sha256, camera, start time, segment), so a changed input or config is a new job, never
mistaken for a finished one.

The sha256 of each input is cached by (path, size, mtime): a rerun over weeks of footage does not read it
all again before it can skip what is done.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge.batch.job import JobSpec
from edge.sqlite import immediate_transaction

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    video TEXT NOT NULL,
    camera TEXT NOT NULL,
    segment INTEGER NOT NULL,
    segments INTEGER NOT NULL,
    input_sha256 TEXT NOT NULL,
    config_sha256 TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    frames INTEGER,
    wall_s REAL,
    worker TEXT,
    run INTEGER NOT NULL,
    updated_s REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run INTEGER PRIMARY KEY AUTOINCREMENT,
    started_s REAL NOT NULL,
    backend TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
"""
_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class JobRow:
    job_id: str
    state: str
    attempts: int
    error: str | None
    frames: int | None
    wall_s: float | None
    run: int


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class Ledger:
    """The SQLite ledger at ``path`` (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def _transaction(self) -> AbstractContextManager[None]:
        return immediate_transaction(self._db)

    def begin_run(self, backend: str) -> int:
        """A new run of the batch; returns its number (1, 2, ...)."""
        with self._transaction():
            cur = self._db.execute("INSERT INTO runs (started_s, backend) VALUES (?, ?)", (time.time(), backend))
        return int(cur.lastrowid or 0)

    def sha256(self, path: Path) -> str:
        """The sha256 of ``path``, from the cache while its size and mtime are unchanged."""
        st = path.stat()
        key = str(path.resolve())
        row = self._db.execute("SELECT sha256 FROM hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
                               (key, st.st_size, st.st_mtime_ns)).fetchone()
        if row is not None:
            return str(row[0])
        digest = file_sha256(path)
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO hashes VALUES (?, ?, ?, ?)",
                             (key, st.st_size, st.st_mtime_ns, digest))
        return digest

    def get(self, job_id: str) -> JobRow | None:
        row = self._db.execute("SELECT job_id, state, attempts, error, frames, wall_s, run FROM jobs "
                               "WHERE job_id = ?", (job_id,)).fetchone()
        return JobRow(*row) if row is not None else None

    def started(self, job: JobSpec, input_sha256: str, config_sha256: str, run: int) -> None:
        with self._transaction():
            self._db.execute(
                "INSERT INTO jobs (job_id, video, camera, segment, segments, input_sha256, config_sha256, state, "
                "attempts, run, updated_s) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', 1, ?, ?) "
                "ON CONFLICT (job_id) DO UPDATE SET state = 'running', attempts = attempts + 1, error = NULL, "
                "run = excluded.run, updated_s = excluded.updated_s",
                (job.job_id, str(job.video), job.camera, job.segment, job.segments, input_sha256, config_sha256,
                 run, time.time()))

    def finished(self, job_id: str, *, frames: int, wall_s: float, worker: str) -> None:
        with self._transaction():
            self._db.execute("UPDATE jobs SET state = 'done', error = NULL, frames = ?, wall_s = ?, worker = ?, "
                             "updated_s = ? WHERE job_id = ?", (frames, wall_s, worker, time.time(), job_id))

    def failed(self, job_id: str, error: str) -> None:
        with self._transaction():
            self._db.execute("UPDATE jobs SET state = 'failed', error = ?, updated_s = ? WHERE job_id = ?",
                             (error, time.time(), job_id))

    def rows(self) -> list[JobRow]:
        return [JobRow(*r) for r in self._db.execute(
            "SELECT job_id, state, attempts, error, frames, wall_s, run FROM jobs ORDER BY job_id")]

    def close(self) -> None:
        self._db.close()
