"""Where a camera's records go: JSONL files (replay), the MQTT outbox (device, ``--publish``), counters.

Every sink takes the three record types through their own method; :func:`send` is the one place that
routes the pipeline's window records (metrics or speeds) to ``window`` or ``speeds``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from edge.analytics.windows import WindowRecord
from edge.payloads import NearMissEvent, WindowMetrics, WindowSpeeds
from edge.publish.mqtt import MqttPublisher


class RecordSink(Protocol):
    """Takes a camera's window metrics, window speeds and near-miss events, in the order they occur."""

    def window(self, record: WindowMetrics) -> None: ...

    def speeds(self, record: WindowSpeeds) -> None: ...

    def event(self, event: NearMissEvent) -> None: ...

    def close(self) -> None:
        """The run ended normally: make what was written final."""
        ...


def send(sink: RecordSink, events: Iterable[NearMissEvent], records: Iterable[WindowRecord]) -> None:
    """Hand one step's output to ``sink``: the events first (a window counts the events that ended in
    it), then the window records, each to ``window`` or ``speeds`` by its type."""
    for e in events:
        sink.event(e)
    for rec in records:
        if isinstance(rec, WindowSpeeds):
            sink.speeds(rec)
        else:
            sink.window(rec)


class JsonlSink:
    """``metrics.jsonl``, ``events.jsonl`` and, with ``speeds``, ``speeds.jsonl`` in ``folder``: one
    JSON record per line, written to hidden ``.NAME.partial`` files that :meth:`close` renames into place,
    so a failed run never leaves a truncated file under the final name. :meth:`discard` removes them."""

    def __init__(self, folder: Path, *, speeds: bool) -> None:
        names = ["metrics", "events", *(["speeds"] if speeds else [])]
        self._final = {n: folder / f"{n}.jsonl" for n in names}
        self._partial = {n: folder / f".{n}.jsonl.partial" for n in names}
        try:
            with ExitStack() as stack:
                self._files: dict[str, IO[str]] = {
                    n: stack.enter_context(p.open("w", encoding="utf-8")) for n, p in self._partial.items()}
                self._open = stack.pop_all()
        except OSError:
            for partial in self._partial.values():
                partial.unlink(missing_ok=True)
            raise

    def _write(self, name: str, record: WindowMetrics | WindowSpeeds | NearMissEvent) -> None:
        out = self._files.get(name)
        if out is None:
            raise ValueError(f"this JsonlSink writes no {name}.jsonl: create it with speeds=True")
        out.write(record.to_json() + "\n")

    def window(self, record: WindowMetrics) -> None:
        self._write("metrics", record)

    def speeds(self, record: WindowSpeeds) -> None:
        self._write("speeds", record)

    def event(self, event: NearMissEvent) -> None:
        self._write("events", event)

    def close(self) -> None:
        """Close the files and rename them to their final names."""
        self._open.close()
        for name, partial in self._partial.items():
            os.replace(partial, self._final[name])

    def discard(self) -> None:
        """Close the files and remove what :meth:`close` did not rename; idempotent."""
        self._open.close()
        for partial in self._partial.values():
            partial.unlink(missing_ok=True)


class MqttSink:
    """The records into the publisher's outbox (a short disk write, never the network). ``close`` leaves
    the publisher running: its owner stops it, after every camera's last records."""

    def __init__(self, publisher: MqttPublisher) -> None:
        self.publisher = publisher

    def window(self, record: WindowMetrics) -> None:
        self.publisher.put("metrics", record, record.camera)

    def speeds(self, record: WindowSpeeds) -> None:
        self.publisher.put("metrics", record, record.camera, leaf="speeds")  # kept and dropped like metrics

    def event(self, event: NearMissEvent) -> None:
        self.publisher.put("event", event, event.camera)

    def close(self) -> None:
        pass


@dataclass(slots=True)
class RecordCounts:
    """A sink that counts: window metrics, window speeds, and events per ``conflict_type/severity``."""

    windows: int = 0
    speeds_records: int = 0
    events: Counter[str] = field(default_factory=Counter)
    #: Turning movements summed over the windows: (movement, class) -> count.
    movements: Counter[tuple[str, str]] = field(default_factory=Counter)

    def window(self, record: WindowMetrics) -> None:
        self.windows += 1
        for name, per_class in (record.movements or {}).items():
            for cls, n in per_class.items():
                self.movements[(name, cls)] += n

    def movements_total(self) -> dict[str, dict[str, int]]:
        """The summed movements as movement -> class -> count."""
        out: dict[str, dict[str, int]] = {}
        for (name, cls), n in self.movements.items():
            out.setdefault(name, {})[cls] = n
        return out

    def speeds(self, record: WindowSpeeds) -> None:
        self.speeds_records += 1

    def event(self, event: NearMissEvent) -> None:
        self.events[f"{event.conflict_type}/{event.severity}"] += 1

    def close(self) -> None:
        pass


class FanOutSink:
    """Every record to each of ``sinks``, in the order given."""

    def __init__(self, *sinks: RecordSink) -> None:
        self.sinks = sinks

    def window(self, record: WindowMetrics) -> None:
        for s in self.sinks:
            s.window(record)

    def speeds(self, record: WindowSpeeds) -> None:
        for s in self.sinks:
            s.speeds(record)

    def event(self, event: NearMissEvent) -> None:
        for s in self.sinks:
            s.event(event)

    def close(self) -> None:
        for s in self.sinks:
            s.close()
