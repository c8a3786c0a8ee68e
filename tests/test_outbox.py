"""The on-disk outbox: order, durability, byte and age bounds, drop policy, exact accounting, threads."""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from edge.errors import PublishError
from edge.payloads import MessageKind
from edge.publish.outbox import DROP_ORDER, KINDS, MAX_PAYLOAD_BYTES, Outbox, OutboxRow, OutboxStats

TTL: dict[MessageKind, float] = {"event": 3600.0, "metrics": 3600.0, "health": 600.0, "status": 86_400.0}
SMALL = 256 * 1024  # the smallest budget the config allows


class FakeClock:
    def __init__(self) -> None:
        self.t = 1_714_550_400.0

    def __call__(self) -> float:
        return self.t


def body(n: int, size: int = 300) -> bytes:
    head = f'{{"n":{n},"pad":"'.encode()
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


def accounted(s: OutboxStats) -> None:
    """Every message produced is in exactly one place: still stored, acknowledged, or dropped for a reason."""
    for kind, k in s.kinds.items():
        assert k.produced == (k.depth + k.acked + k.rejected + k.superseded + k.dropped_full + k.dropped_ttl
                              + k.dropped_error), kind


def rows_on_disk(path: Path) -> dict[str, int]:
    """Rows per kind read with a separate connection (the outbox must be closed: it locks the file)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        counts = {kind: conn.execute(f"SELECT COUNT(*) FROM q_{kind}").fetchone()[0] for kind in KINDS}
    return {kind: n for kind, n in counts.items() if n}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "spool" / "outbox.sqlite3"


def test_rows_come_out_in_id_order_and_leave_only_when_acked(path: Path, clock: FakeClock) -> None:
    with Outbox(path, 2**20, TTL, clock) as ob:
        ids = [ob.put("metrics" if i % 3 else "event", f"t/{i}", body(i)) for i in range(7)]
        assert all(i is not None for i in ids) and ids == sorted(ids)  # type: ignore[type-var]
        first = ob.take(4)
        assert [r.id for r in first] == ids[:4]
        assert [r.payload for r in first] == [body(i) for i in range(4)]
        assert [r.id for r in ob.take(10)] == ids[4:]  # taken rows are not offered twice
        assert ob.take(10) == []
        assert ob.ack([r.id for r in first]) == 4
        assert ob.depth == 3
        ob.release()  # e.g. a disconnect: unacknowledged rows are offered again, in order
        assert [r.id for r in ob.take(10)] == ids[4:]
        s = ob.stats()
        assert s.kinds["metrics"].acked + s.kinds["event"].acked == 4
        accounted(s)


def test_unacknowledged_rows_and_counters_survive_a_restart(path: Path, clock: FakeClock) -> None:
    ob = Outbox(path, 2**20, TTL, clock)
    ids = [ob.put("metrics", "t", body(i)) for i in range(5)]
    ob.ack([r.id for r in ob.take(2)])
    ob.take(3)  # sent, never acknowledged: the process dies here
    ob.close()
    assert rows_on_disk(path) == {"metrics": 3}
    with Outbox(path, 2**20, TTL, clock) as again:
        assert [r.id for r in again.take(10)] == ids[2:]
        s = again.stats()
        assert (s.kinds["metrics"].produced, s.kinds["metrics"].acked, s.depth) == (5, 2, 3)
        again.ack(ids[2:])  # type: ignore[arg-type]
        new = again.put("metrics", "t", body(9))
        assert new is not None and new > max(i for i in ids if i is not None)  # AUTOINCREMENT: never reused


def test_a_second_outbox_on_the_same_file_is_refused(path: Path, clock: FakeClock) -> None:
    with Outbox(path, 2**20, TTL, clock) as ob:
        ob.put("metrics", "t", body(1))
        with pytest.raises(PublishError, match="in use by another process"):
            Outbox(path, 2**20, TTL, clock)


def test_status_goes_first_and_a_new_status_supersedes_the_old(path: Path, clock: FakeClock) -> None:
    with Outbox(path, 2**20, TTL, clock) as ob:
        m = ob.put("metrics", "t/m", body(1))
        ob.put("status", "t/s", b'{"state":"online","n":1}')
        newest = ob.put("status", "t/s", b'{"state":"online","n":2}')
        assert [r.id for r in ob.take(2)] == [newest, m]
        assert ob.stats().kinds["status"].superseded == 1
        accounted(ob.stats())


def test_full_outbox_drops_health_then_metrics_then_events_oldest_first(path: Path, clock: FakeClock) -> None:
    with Outbox(path, SMALL, TTL, clock) as ob:
        events = [ob.put("event", "t/e", body(i, 1000)) for i in range(40)]  # ~40 KB: always fits
        health = [ob.put("health", "t/h", body(i, 1000)) for i in range(20)]
        assert ob.stats().total("dropped_full") == 0
        metrics: list[int | None] = []
        for i in range(400):
            metrics.append(ob.put("metrics", "t/m", body(i, 1000)))
            s = ob.stats()
            assert s.size_bytes <= SMALL
            if s.kinds["metrics"].dropped_full:  # metrics go only once no health is left
                assert s.kinds["health"].depth == 0
            assert s.kinds["event"].dropped_full == 0
        s = ob.stats()
        assert s.kinds["health"].dropped_full == len(health) and s.kinds["metrics"].dropped_full > 0
        kept = ob.take(1000)
        kept_metrics = [r.id for r in kept if r.kind == "metrics"]
        assert kept_metrics == metrics[-len(kept_metrics):]  # the newest metrics survive
        assert [r.id for r in kept if r.kind == "event"] == events
        accounted(s)
        ob.release()
        # Now only events arrive: metrics go first, then the oldest events.
        more = [ob.put("event", "t/e", body(i, 1000)) for i in range(400)]
        s = ob.stats()
        assert s.kinds["metrics"].depth == 0 and s.kinds["event"].dropped_full > 0
        kept_events = [r.id for r in ob.take(1000) if r.kind == "event"]
        assert kept_events == (events + more)[-len(kept_events):]
        accounted(s)


def test_rows_out_with_the_sender_are_never_dropped(path: Path, clock: FakeClock) -> None:
    with Outbox(path, SMALL, TTL, clock) as ob:
        for i in range(10):
            ob.put("health", "t/h", body(i, 1000))
        leased = [r.id for r in ob.take(10)]
        for i in range(500):
            ob.put("metrics", "t/m", body(i, 1000))
        assert ob.stats().kinds["metrics"].dropped_full > 0
        assert ob.stats().kinds["health"].dropped_full == 0
        assert ob.ack(leased) == 10  # still there to be acknowledged


def test_size_on_disk_counting_the_wal_stays_within_budget(path: Path, clock: FakeClock) -> None:
    with Outbox(path, SMALL, TTL, clock) as ob:
        peak = 0
        for i in range(1500):
            ob.put(("event", "metrics", "metrics", "health")[i % 4], "t", body(i, 200 + (i * 37) % 1800))
            if i % 7 == 0:
                ob.ack([r.id for r in ob.take(3)])
            wal = Path(f"{path}-wal")
            peak = max(peak, path.stat().st_size + (wal.stat().st_size if wal.exists() else 0))
        assert peak <= SMALL
        assert ob.stats().total("dropped_full") > 0  # the budget was really exercised
        accounted(ob.stats())


def test_ttl_expiry_is_counted_and_expired_rows_are_never_offered(path: Path, clock: FakeClock) -> None:
    with Outbox(path, 2**20, TTL, clock) as ob:
        for i in range(3):
            ob.put("metrics", "t", body(i))
        clock.t += 3000
        new = [ob.put("metrics", "t", body(i)) for i in range(2)]
        ob.put("health", "t/h", body(9))
        clock.t += 700  # old metrics are 3700 s old (TTL 3600); health 700 s old (TTL 600)
        rows = ob.take(10)
        assert [r.id for r in rows] == new
        assert ob.ttl_remaining_s(rows[0]) == pytest.approx(3600 - 700)
        s = ob.stats()
        assert (s.kinds["metrics"].dropped_ttl, s.kinds["health"].dropped_ttl) == (3, 1)
        clock.t += 3000
        assert ob.expire() == 0  # the two left are out with the sender
        ob.release()
        assert ob.expire() == 2
        assert ob.depth == 0 and ob.stats().oldest_age_s == 0.0
        accounted(ob.stats())


def test_oldest_age_is_reported(path: Path, clock: FakeClock) -> None:
    with Outbox(path, 2**20, TTL, clock) as ob:
        ob.put("event", "t", body(1))
        clock.t += 42.5
        ob.put("metrics", "t", body(2))
        assert ob.oldest_age_s() == pytest.approx(42.5)


def test_full_disk_drops_are_counted_and_put_does_not_raise(path: Path, clock: FakeClock) -> None:
    ob = Outbox(path, 64 * 2**20, TTL, clock)
    ob.put("event", "t", body(0))
    # SQLite reports a full database exactly as it reports a full disk (SQLITE_FULL).
    pages = ob._conn.execute("PRAGMA page_count").fetchone()[0]
    ob._conn.execute(f"PRAGMA max_page_count={pages}")
    # Health that needs pages of its own (overflow pages), and only an event it may not displace: dropped.
    results = [ob.put("health", "t", body(i, 10_000)) for i in range(20)]
    assert results == [None] * 20
    s = ob.stats()
    assert s.kinds["health"].dropped_full == 20 and s.kinds["health"].produced == 20
    assert s.kinds["event"].depth == 1
    accounted(s)
    ob._conn.execute("PRAGMA max_page_count=1073741823")
    assert ob.put("event", "t", body(99)) is not None
    ob.close()
    with Outbox(path, 64 * 2**20, TTL, clock) as again:  # the counts written after the disk had room
        assert again.stats().kinds["health"].dropped_full == 20
        accounted(again.stats())


def test_corrupt_file_is_set_aside_and_a_fresh_outbox_starts(path: Path, clock: FakeClock) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database" * 100)
    with Outbox(path, 2**20, TTL, clock) as ob:
        assert ob.put("metrics", "t", body(1)) is not None
    assert list(path.parent.glob("outbox.sqlite3.corrupt-*"))


def test_programmer_errors_raise(path: Path, clock: FakeClock) -> None:
    ob = Outbox(path, 2**20, TTL, clock)
    with pytest.raises(ValueError, match="kind must be"):
        ob.put("image", "t", b"{}")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="never images"):
        ob.put("event", "t", b"x" * (MAX_PAYLOAD_BYTES + 1))
    with pytest.raises(ValueError, match="at least 256 KiB"):
        Outbox(path.with_name("tiny.sqlite3"), 64 * 1024, TTL, clock)
    ob.close()
    with pytest.raises(PublishError, match="closed"):
        ob.put("event", "t", b"{}")


def test_camera_threads_and_the_sender_thread_share_it_safely(path: Path) -> None:
    ob = Outbox(path, 4 * 2**20, TTL)
    writers_done = threading.Event()
    errors: list[BaseException] = []

    def camera(n: int) -> None:
        try:
            for i in range(150):
                ob.put("metrics" if i % 5 else "event", f"t/{n}", body(n * 1000 + i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def sender() -> None:
        try:
            while not (writers_done.is_set() and ob.depth == 0):
                rows = ob.take(20)
                ob.ack([r.id for r in rows])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    cams = [threading.Thread(target=camera, args=(n,)) for n in range(4)]
    send = threading.Thread(target=sender)
    send.start()
    for t in cams:
        t.start()
    for t in cams:
        t.join(60)
    writers_done.set()
    send.join(60)
    assert not errors and not send.is_alive()
    s = ob.stats()
    assert s.total("produced") == s.total("acked") == 600
    ob.close()
    assert rows_on_disk(path) == {}


_put = st.tuples(st.just("put"), st.sampled_from(KINDS), st.integers(500, 8000))
_ops = st.lists(
    st.one_of(
        _put, _put, _put,
        st.tuples(st.just("burst"), st.sampled_from(DROP_ORDER), st.integers(10, 60)),
        st.tuples(st.just("take"), st.integers(1, 30), st.just(0)),
        st.tuples(st.just("ack"), st.integers(0, 30), st.just(0)),
        st.tuples(st.just("release"), st.just(0), st.just(0)),
        st.tuples(st.just("tick"), st.integers(1, 900), st.just(0)),
    ),
    min_size=30,
    max_size=150,
)


@settings(max_examples=20, deadline=None)
@given(ops=_ops)
def test_any_sequence_keeps_the_books_the_budget_and_the_drop_order(ops: list[tuple[str, object, int]]) -> None:
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as d:
        ob = Outbox(Path(d) / "o.sqlite3", SMALL, TTL, clock)
        taken: list[OutboxRow] = []
        for op, arg, size in ops:
            if op in ("put", "burst"):
                kind: MessageKind = arg  # type: ignore[assignment]
                for _ in range(size if op == "burst" else 1):
                    before = ob.stats()
                    ob.put(kind, "t", body(0, 3000 if op == "burst" else size))
                    after = ob.stats()
                    for k in DROP_ORDER:
                        if after.kinds[k].dropped_full == before.kinds[k].dropped_full:
                            continue
                        for lower in DROP_ORDER[: DROP_ORDER.index(k)]:  # none left but rows out with the sender
                            assert after.kinds[lower].depth == sum(r.kind == lower for r in taken)
            elif op == "take":
                taken += ob.take(int(arg))  # type: ignore[call-overload]
            elif op == "ack":
                n = int(arg)  # type: ignore[call-overload]
                ob.ack([r.id for r in taken[:n]])
                taken = taken[n:]
            elif op == "release":
                ob.release()
                taken = []
            else:
                clock.t += int(arg)  # type: ignore[call-overload]
                ob.expire()
            assert ob.size_bytes() <= SMALL
            accounted(ob.stats())
        event(f"dropped for space: {ob.stats().total('dropped_full') > 0}")
        ob.close()
