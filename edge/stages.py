"""Pipeline stages in threads joined by bounded queues, so decoding, detection and analytics overlap.

FFmpeg's decoder, OpenCV and onnxruntime release the GIL, so a decode thread, a detect thread and the
analytics in the caller's thread keep several cores busy. Every queue is bounded: a stage that runs ahead
waits (replay loses nothing), and memory stays fixed whatever the speed difference.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Iterator
from typing import Final, Generic, TypeVar

T = TypeVar("T")

_POLL_S: Final = 0.1

# Detection and analytics get a thread each only where cores allow: on 2 cores a third busy thread made
# replay 5-10 % slower (the analytics' Python and the detect thread's pre/postprocessing fight for the GIL
# and for the cores that decoding and inference already fill), so there one thread does both.
ANALYTICS_THREAD: Final = (os.cpu_count() or 1) > 2
DETECTED_AHEAD: Final = 4  # detected frames queued ahead of tracking and analytics


class _End:
    """Marks the end of a stage's items."""


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Prefetch(Generic[T]):
    """Runs ``items`` in a thread named ``name``, up to ``depth`` items ahead of the consumer.

    Iterate it to get the items in order; an exception raised by ``items`` is raised in the consumer.
    ``busy_s`` is the time the thread spent producing (waiting for a full queue excluded). ``close()``
    stops the thread; close chained stages upstream first (the source before the stages reading it).
    """

    def __init__(self, items: Iterator[T], depth: int, name: str) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self._items = items
        self._queue: queue.Queue[T | _End | _Failed] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.busy_s = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _put(self, item: T | _End | _Failed) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while True:
                t0 = time.perf_counter()
                item = next(self._items, _End())
                self.busy_s += time.perf_counter() - t0
                if not self._put(item) or isinstance(item, _End):
                    return
        except BaseException as exc:  # forwarded to the consumer, which raises it
            self._put(_Failed(exc))

    def __iter__(self) -> Iterator[T]:
        while not self._stop.is_set():
            try:
                item = self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                continue
            if isinstance(item, _End):
                return
            if isinstance(item, _Failed):
                raise item.exc
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
