"""SQLite helpers shared by the clip index, the batch ledger and the city archive (the outbox, which
counts its own failures per transaction, keeps its own)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def immediate_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` (the write lock at once, so a reader never has to be upgraded), ``COMMIT`` on
    success, ``ROLLBACK`` on any exception, which is raised on. ``db`` is in autocommit mode
    (``isolation_level=None``)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
