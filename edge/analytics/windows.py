"""Fixed, aligned time windows that turn crossings into one anonymous metrics record per window."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

from edge.analytics.base import Analytic, Fragment, merge
from edge.payloads import WindowHealth, WindowMetrics, WindowSpeeds, iso_utc, window_msg_id

#: What a closed window produces: the metrics record, and a speeds record per line of a calibrated camera.
WindowRecord = WindowMetrics | WindowSpeeds


class WindowAggregator:
    """Closes one camera's windows of ``window_s`` aligned to ``origin`` into records.

    Times given to ``advance`` are UTC seconds since the epoch (media time mapped onto the recording's
    start in replay, the wall clock live). A window closes when the first frame of a later window
    arrives; ``flush`` closes the last, partial one. The record header and ``health`` are the
    aggregator's; every other field comes from the ``analytics``' fragments (``edge.analytics.base``),
    closed together. ``advance`` must come before a frame is handed to the analytics, so that what they
    add lands in the frame's own window.
    """

    def __init__(self, device: str, camera: str, window_s: int, origin: datetime,
                 analytics: Sequence[Analytic] = ()) -> None:
        self.device, self.camera, self.window_s = device, camera, window_s
        self.analytics = tuple(analytics)
        merge(a.worst_case() for a in self.analytics)  # two owners of one record field: refuse at construction
        self._origin_s = origin.astimezone(UTC).timestamp()
        self._index: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._frames = 0
        self._dropped = 0
        self._first_t = 0.0
        self._last_t = 0.0

    def window_index(self, t_utc_s: float) -> int:
        return math.floor((t_utc_s - self._origin_s) / self.window_s)

    def advance(self, t_utc_s: float, dropped_before: int = 0) -> list[WindowRecord]:
        """Account one processed frame at ``t_utc_s``; return the records of the windows it closed."""
        closed: list[WindowRecord] = []
        idx = self.window_index(t_utc_s)
        if self._index is None:
            self._index = idx
        elif idx > self._index:
            closed += self._record(self._index, partial=False)
            self._index = idx
            self._reset()
        self._frames += 1
        self._dropped += dropped_before
        if self._frames == 1:
            self._first_t = t_utc_s
        self._last_t = t_utc_s
        return closed

    def flush(self) -> list[WindowRecord]:
        """Close the current window as partial (end of stream or shutdown)."""
        if self._index is None or self._frames == 0:
            return []
        records = self._record(self._index, partial=True)
        self._index = None
        self._reset()
        return records

    def _record(self, index: int, partial: bool) -> list[WindowRecord]:
        start = datetime.fromtimestamp(self._origin_s, UTC) + timedelta(seconds=index * self.window_s)
        span = self._last_t - self._first_t
        fps = (self._frames - 1) / span if span > 0 else 0.0
        health = WindowHealth(frames=self._frames, dropped_frames=self._dropped, fps=round(fps, 3))
        return compose(self.device, self.camera, self.window_s, iso_utc(start), partial, health,
                       [a.close() for a in self.analytics])


def compose(device: str, camera: str, window_s: int, window_start: str, partial: bool, health: WindowHealth,
            fragments: Sequence[Fragment]) -> list[WindowRecord]:
    """One window's records: the metrics record, then a speeds record per counting line when a fragment
    fills them."""
    fields = merge(fragments)
    header = {"device": device, "camera": camera, "window_start": window_start, "window_s": window_s,
              "partial": partial}
    metrics = WindowMetrics.model_validate({"msg_id": window_msg_id(device, camera, window_start), **header,
                                            **fields["metrics"], "health": health})
    if not fields["speeds"]:
        return [metrics]
    per_line = cast(Mapping[str, object], fields["speeds"]["speeds"])
    speeds: list[WindowRecord] = [
        WindowSpeeds.model_validate({"msg_id": window_msg_id(device, camera, window_start, f"speeds/{line}"),
                                     **header, "line": line, "speed_limit_kmh": fields["speeds"]["speed_limit_kmh"],
                                     "speeds": per_dir})
        for line, per_dir in per_line.items()
    ]
    return [metrics, *speeds]


def worst_case_bytes(analytics: Sequence[Analytic]) -> int:
    """Size in bytes of the largest record these analytics can produce: the longest device and camera
    ids, a day's window, every fragment at its worst case and the largest health figures. Start-up
    refuses a camera over ``edge.payloads.MAX_PAYLOAD_BYTES`` (``edge.prepare``)."""
    big = 99_999
    health = WindowHealth(frames=big * 100, dropped_frames=big * 100, fps=999.999, clips_started=big,
                          clips_dropped_budget=big * 100)
    records = compose("d" * 64, "c" * 64, 86_400, "2024-05-01T07:00:00Z", True, health,
                      [a.worst_case() for a in analytics])
    return max(len(r.to_json().encode()) for r in records)
