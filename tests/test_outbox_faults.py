"""Outbox faults found by fault injection (issue 14): unusable paths, full disks, file modes.

The full-disk tests run on a real 2 MB tmpfs (``mount -t tmpfs``), which needs root: they skip with the
reason elsewhere and fail under CI (CI=true), where they run as root. Each mount is unmounted in teardown.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edge.config import parse_config
from edge.errors import ConfigError, PublishError
from edge.payloads import MessageKind
from edge.prepare import prepare
from edge.publish.outbox import DROP_ORDER, RESERVE_BYTES, Outbox, outbox_problem
from tests.conftest import REPO, missing, shared_path
from tests.test_outbox import accounted
from tests.test_outbox import body as outbox_body

TTL: dict[MessageKind, float] = {"event": 3600.0, "metrics": 3600.0, "health": 600.0, "status": 86_400.0}
DEFAULT_BUDGET = 64 * 2**20  # the config's default outbox_max_bytes: far more than the small file system
NOBODY = 65534


def body(n: int, size: int = 900) -> bytes:
    return outbox_body(n, size)


def rows_in(path: Path) -> int:
    """Rows of every kind in a closed outbox, read without writing anything (immutable: no -wal or -shm)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)) as conn:
        return sum(conn.execute(f"SELECT COUNT(*) FROM q_{k}").fetchone()[0]
                   for k in ("event", "metrics", "health", "status"))


def backlog(path: Path, n: int = 3) -> None:
    """An outbox holding ``n`` unsent metrics."""
    with Outbox(path, 2**20, TTL) as ob:
        for i in range(n):
            ob.put("metrics", "t", body(i, 300))


def put_checking_drop_order(ob: Outbox, kind: MessageKind, payload: bytes) -> int | None:
    """Put one message and check that every drop it caused followed DROP_ORDER (no row is leased here)."""
    before = ob.stats()
    rid = ob.put(kind, "t", payload)
    after = ob.stats()
    for k in DROP_ORDER:
        if after.kinds[k].dropped_full > before.kinds[k].dropped_full:
            for lower in DROP_ORDER[: DROP_ORDER.index(k)]:
                assert after.kinds[lower].depth == 0, f"dropped {k} while {lower} rows were stored"
    return rid


def ack_everything(ob: Outbox, batch: int = 20) -> int:
    """Take and acknowledge everything in batches, as the sender does; return how many were deleted."""
    acked = 0
    while rows := ob.take(batch):
        n = ob.ack([r.id for r in rows])
        assert n == len(rows), f"acknowledged rows could not be deleted ({n} of {len(rows)})"
        acked += n
    return acked


# --------------------------------------------------------------------------------- a real small tmpfs
def _mount(where: Path, options: str) -> None:
    if os.geteuid() != 0:
        missing("the full-disk tests mount a 2 MB tmpfs, which needs root (they run as root under CI)")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                          text=True, timeout=30, check=False)
    if proc.returncode != 0:
        missing(f"mount -t tmpfs is not permitted here: {proc.stderr.strip()}")


def _umount(where: Path) -> None:
    if subprocess.run(["umount", str(where)], capture_output=True, timeout=30, check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30, check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MB file system: ENOSPC comes from the kernel, as on a small partition."""
    where = tmp_path / "fs"
    where.mkdir()
    _mount(where, "size=2m,mode=0755")
    try:
        yield where
    finally:
        _umount(where)


# ------------------------------------------------------------------------ item 1: unusable outbox paths
def test_a_folder_at_the_outbox_path_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    folder = tmp_path / "outbox.sqlite3"
    folder.mkdir()
    (folder / "keep.txt").write_text("not the outbox's")
    with pytest.raises(PublishError, match="is a folder") as err:
        Outbox(folder, 2**20, TTL)
    assert str(folder) in str(err.value) and "mqtt.outbox_path" in str(err.value)
    assert (folder / "keep.txt").read_text() == "not the outbox's"
    assert not list(tmp_path.glob("*.corrupt-*"))


def test_an_outbox_another_user_owns_is_refused_with_its_backlog_intact() -> None:
    """chmod 000 does not stop root, so the open runs in a child that became ``nobody``."""
    if os.geteuid() != 0:
        missing("this test switches to the nobody user, which needs root")
    folder = Path(tempfile.mkdtemp(prefix="outbox-owner-", dir="/tmp"))
    try:
        os.chmod(folder, 0o777)  # the service user may write the folder, but not the root-owned file
        path = folder / "outbox.sqlite3"
        backlog(path)
        os.chmod(path, 0o000)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe
            os.close(read)
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                result = f"problem={outbox_problem(path)}\n"
                try:
                    Outbox(path, 2**20, TTL).close()
                    result += "opened"
                except PublishError as exc:
                    result += f"PublishError {exc}"
            except BaseException as exc:
                result = f"crashed {type(exc).__name__}: {exc}"
            os.write(write, result.encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as pipe:
            result = pipe.read()
        os.waitpid(pid, 0)
        assert rows_in(path) == 3 and not list(folder.glob("*.corrupt-*")), f"the backlog was moved aside: {result}"
        assert "PublishError" in result and "permission denied for uid 65534" in result, result
        assert "problem=None" not in result, result
    finally:
        shutil.rmtree(folder)


def test_an_outbox_on_a_read_only_file_system_is_refused_with_its_backlog_intact(tmp_path: Path) -> None:
    where = tmp_path / "ro"
    where.mkdir()
    _mount(where, "size=1m")
    try:
        path = where / "outbox.sqlite3"
        backlog(path)
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True, timeout=30)
        with pytest.raises(PublishError, match="read-only"):
            Outbox(path, 2**20, TTL)
        assert rows_in(path) == 3 and not list(where.glob("*.corrupt-*"))
        assert "read-only" in (outbox_problem(path) or "")
    finally:
        _umount(where)


def test_outbox_problem_names_each_fault_and_creates_nothing(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    (tmp_path / "folder").mkdir()
    (tmp_path / "garbage.sqlite3").write_bytes(b"not a database" * 50)
    assert "is a file, so the outbox folder" in (outbox_problem(tmp_path / "a-file" / "o.sqlite3") or "")
    assert "is a folder" in (outbox_problem(tmp_path / "folder") or "")
    assert outbox_problem(tmp_path / "new" / "deeper" / "o.sqlite3") is None  # creatable
    assert outbox_problem(tmp_path / "garbage.sqlite3") is None  # corrupt: set aside at open, not refused
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "folder", "garbage.sqlite3"]
    with pytest.raises(PublishError, match="is a file"):
        Outbox(tmp_path / "a-file" / "o.sqlite3", 2**20, TTL)


def test_a_malformed_database_is_still_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    backlog(path, 200)
    data = bytearray(path.read_bytes())
    data[4096 + 8: 3 * 4096] = os.urandom(3 * 4096 - 4096 - 8)  # damage the first table's pages
    path.write_bytes(bytes(data))
    with Outbox(path, 2**20, TTL) as ob:
        assert ob.put("metrics", "t", body(1)) is not None
    assert list(tmp_path.glob("outbox.sqlite3.corrupt-*"))


def _device_yaml(tmp_path: Path, outbox: Path) -> Path:
    data = {
        "device_id": "d",
        "detector": {"model_dir": str(shared_path("models"))},
        "mqtt": {"url": "mqtt://127.0.0.1:1", "outbox_path": str(outbox)},
        "cameras": [{"name": "north", "source": {"kind": "file", "path": str(tmp_path / "none.mp4")}}],
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_prepare_refuses_an_outbox_path_that_cannot_be_opened(tmp_path: Path) -> None:
    folder = tmp_path / "outbox.sqlite3"
    folder.mkdir()
    config = parse_config(yaml.safe_load(_device_yaml(tmp_path, folder).read_text()))
    with pytest.raises(ConfigError) as err:
        prepare(config, check_model=False)
    assert any(e.startswith("mqtt.outbox_path: ") and "is a folder" in e for e in err.value.errors), err.value.errors
    assert folder.is_dir() and not list(tmp_path.glob("*.corrupt-*"))


@pytest.mark.parametrize("command", ["validate-config", "attest"])
def test_validate_config_and_attest_refuse_an_outbox_path_that_cannot_be_opened(command: str, tmp_path: Path) -> None:
    parent_is_a_file = tmp_path / "spool"
    parent_is_a_file.write_text("a file where the outbox folder should be")
    config = _device_yaml(tmp_path, parent_is_a_file / "outbox.sqlite3")
    args = [sys.executable, "-m", "edge.cli", command, *(["-c"] if command == "attest" else []), str(config)]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "mqtt.outbox_path" in proc.stderr and str(parent_is_a_file) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert parent_is_a_file.read_text() == "a file where the outbox folder should be"


# --------------------------------------------------------------------------------- item 13: file modes
def test_outbox_files_are_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    path = tmp_path / "spool" / "outbox.sqlite3"
    old = os.umask(0o022)
    try:
        with Outbox(path, 2**20, TTL) as ob:
            ob.put("metrics", "t", body(1))
            files = [path, Path(f"{path}-wal"), Path(f"{path}-reserve")]
            assert all(p.exists() for p in files)
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
            assert modes == dict.fromkeys(modes, 0o600), modes
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        os.umask(old)


def test_an_existing_readable_outbox_is_tightened_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    backlog(path)
    os.chmod(path, 0o644)
    with Outbox(path, 2**20, TTL) as ob:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(Path(f"{path}-wal").stat().st_mode) == 0o600
        assert ob.depth == 3


# --------------------------------------------------------------------- items 3 and 4: a full disk
def test_an_outbox_alone_on_a_2_mb_file_system_fills_it_and_never_wedges(small_fs: Path) -> None:
    """Issue 14 item 3: with the default 64 MB budget on a 2 MB partition the WAL used to fill the disk,
    after which deletes failed too. Now the WAL and the budget are sized from the free space."""
    path = small_fs / "outbox.sqlite3"
    kinds: tuple[MessageKind, ...] = ("health", "metrics", "health", "event", "health", "metrics")
    with Outbox(path, DEFAULT_BUDGET, TTL) as ob:
        ids = [ob.put(kinds[i % 6], "t", body(i)) for i in range(3000)]  # ~2.7 MB: well past full
        s = ob.stats()
        accounted(s)
        assert ack_everything(ob) == s.depth  # the broker is back: every acknowledged row is deleted
        assert ob.depth == 0
        assert s.total("dropped_full") > 0  # the disk really was the limit ...
        assert s.depth > 1000  # ... and used: ~1.6 MB of messages (it wedged at 199 before)
        assert s.size_bytes <= shutil.disk_usage(small_fs).total - RESERVE_BYTES
        assert ids[-1] is not None  # it was still storing at the end ...
        assert all(ob.put("event", "t", body(i)) is not None for i in range(100))  # ... and after
        s = ob.stats()
        assert s.kinds["event"].dropped_full == 0  # 500 events fit: only health and metrics made room
        accounted(s)


def test_a_full_disk_drops_health_before_a_new_metric_window(small_fs: Path) -> None:
    """Issue 14 item 4: with the disk full of health rows, a new metric window used to be dropped."""
    path = small_fs / "outbox.sqlite3"
    with Outbox(path, DEFAULT_BUDGET, TTL) as ob:
        for i in range(2500):  # ~2.3 MB of health: more than the file system holds
            ob.put("health", "t/h", body(i))
        health = ob.stats().kinds["health"].depth
        assert ob.stats().kinds["health"].dropped_full > 0
        metrics = [put_checking_drop_order(ob, "metrics", body(i)) for i in range(300)]
        s = ob.stats()
        assert None not in metrics and s.kinds["metrics"].dropped_full == 0
        assert 0 < s.kinds["health"].depth < health
        accounted(s)


def test_acks_and_puts_go_on_when_another_program_fills_the_disk(small_fs: Path) -> None:
    """The last free byte taken by someone else: SQLITE_FULL. The reserve file lets the checkpoint finish,
    acknowledged rows are still deleted, and puts make room in drop order instead of failing."""
    path = small_fs / "outbox.sqlite3"
    with Outbox(path, DEFAULT_BUDGET, TTL) as ob:
        for i in range(300):
            ob.put(("health", "metrics")[i % 2], "t", body(i))
        fd = os.open(small_fs / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        assert shutil.disk_usage(small_fs).free == 0
        kinds: tuple[MessageKind, ...] = ("metrics", "event", "health")
        ids = [put_checking_drop_order(ob, kinds[i % 3], body(i)) for i in range(600)]
        s = ob.stats()
        assert s.kinds["event"].dropped_full == 0 and s.kinds["event"].depth == 200
        assert ids.count(None) <= s.kinds["health"].produced  # only health (the newest's own kind) went unsaved
        accounted(s)
        assert ack_everything(ob) == s.depth
        assert all(ob.put("event", "t", body(i)) is not None for i in range(50))
        accounted(ob.stats())


def test_a_put_refused_by_sqlite_full_makes_room_in_drop_order(tmp_path: Path) -> None:
    """SQLITE_FULL from the database itself (max_page_count), whatever the budget says: the new metric
    displaces the oldest health row rather than being dropped."""
    with Outbox(tmp_path / "o.sqlite3", DEFAULT_BUDGET, TTL) as ob:
        health = [ob.put("health", "t/h", body(i, 1000)) for i in range(40)]
        pages = ob._conn.execute("PRAGMA page_count").fetchone()[0]
        ob._conn.execute(f"PRAGMA max_page_count={pages}")
        metrics = [ob.put("metrics", "t/m", body(i, 1000)) for i in range(20)]
        s = ob.stats()
        assert None not in metrics and s.kinds["metrics"].dropped_full == 0
        assert s.kinds["health"].dropped_full >= 20
        kept = [r.id for r in ob.take(100) if r.kind == "health"]
        assert kept == health[-len(kept):]  # the oldest health went first
        accounted(s)


# -------------------------------------------------- item 9: rows too large for the broker are held, not deleted
def test_held_rows_stay_stored_are_not_offered_until_release_and_may_still_go_for_ttl(tmp_path: Path) -> None:
    clock_t = [1_714_550_400.0]
    with Outbox(tmp_path / "o.sqlite3", 2**20, TTL, lambda: clock_t[0]) as ob:
        big, small = ob.put("metrics", "t", body(1, 3000)), ob.put("metrics", "t", body(2, 300))
        assert big is not None and small is not None
        rows = ob.take(10)
        ob.hold([r.id for r in rows if r.id == big])
        ob.ack([r.id for r in rows if r.id == small])
        assert ob.take(10) == [] and ob.depth == 1  # held: stored, not offered on this connection
        ob.release()  # the next reconnect
        assert [r.id for r in ob.take(10)] == [big]
        ob.hold([big])
        clock_t[0] += TTL["metrics"] + 1
        assert ob.expire() == 1  # unlike a row out with the sender, a held row still expires
        s = ob.stats()
        assert s.kinds["metrics"].rejected == 0 and s.kinds["metrics"].dropped_ttl == 1
        accounted(s)
