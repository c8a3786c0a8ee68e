"""The threaded stages that overlap decoding, detection and analytics."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from edge.stages import Prefetch


def test_items_arrive_in_order_through_chained_stages() -> None:
    first = Prefetch(iter(range(200)), depth=3, name="first")
    second = Prefetch((x * 2 for x in first), depth=2, name="second")
    assert list(second) == [2 * x for x in range(200)]
    first.close()
    second.close()


def test_a_stage_runs_at_most_depth_items_ahead() -> None:
    produced = []

    def items() -> Iterator[int]:
        for i in range(100):
            produced.append(i)
            yield i

    stage = Prefetch(items(), depth=4, name="ahead")
    time.sleep(0.3)
    # depth items wait in the queue and one more is held by the blocked producer
    assert len(produced) == 5
    stage.close()


def test_an_error_in_a_stage_reaches_the_consumer() -> None:
    def items() -> Iterator[int]:
        yield 1
        raise OSError("decoder failed")

    stage = Prefetch(items(), depth=2, name="failing")
    with pytest.raises(OSError, match="decoder failed"):
        list(stage)
    stage.close()


def test_close_stops_blocked_stages_upstream_first() -> None:
    source = Prefetch(iter(range(10**9)), depth=2, name="endless")
    stage = Prefetch((x + 1 for x in source), depth=2, name="reader")
    assert next(iter(stage)) == 1  # both threads now block on full queues
    source.close()
    stage.close()
    names = {t.name for t in threading.enumerate()}
    assert "endless" not in names and "reader" not in names
