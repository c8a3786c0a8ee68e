"""Fixed, aligned time windows that turn crossings into one anonymous metrics record per window."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from edge.analytics.lines import Crossing
from edge.payloads import WindowHealth, WindowMetrics, iso_utc, window_msg_id
from edge.types import ROAD_USER_CLASSES

Counts = dict[str, dict[str, dict[str, int]]]


class WindowAggregator:
    """Aggregates one camera's crossings into windows of ``window_s`` aligned to ``origin``.

    Times given to ``add_frame`` are UTC seconds since the epoch (media time mapped onto the recording's
    start in replay, the wall clock live). A window closes when the first frame of a later window
    arrives; ``flush`` closes the last, partial one.
    """

    def __init__(self, device: str, camera: str, window_s: int, origin: datetime,
                 lines: list[tuple[str, tuple[str, str]]]) -> None:
        self.device, self.camera, self.window_s = device, camera, window_s
        self._origin_s = origin.astimezone(UTC).timestamp()
        self._lines = lines
        self._index: int | None = None
        self._reset()

    def _reset(self) -> None:
        self._counts: Counts = {
            name: {d: dict.fromkeys(ROAD_USER_CLASSES, 0) for d in dirs} for name, dirs in self._lines
        }
        self._frames = 0
        self._dropped = 0
        self._first_t = 0.0
        self._last_t = 0.0

    def window_index(self, t_utc_s: float) -> int:
        return math.floor((t_utc_s - self._origin_s) / self.window_s)

    def add_frame(self, t_utc_s: float, crossings: list[Crossing], dropped_before: int = 0) -> list[WindowMetrics]:
        """Account one processed frame and its crossings; return the windows this frame closed."""
        closed: list[WindowMetrics] = []
        idx = self.window_index(t_utc_s)
        if self._index is None:
            self._index = idx
        elif idx > self._index:
            closed.append(self._record(self._index, partial=False))
            self._index = idx
            self._reset()
        self._frames += 1
        self._dropped += dropped_before
        if self._frames == 1:
            self._first_t = t_utc_s
        self._last_t = t_utc_s
        for c in crossings:
            self._counts[c.line][c.direction][ROAD_USER_CLASSES[c.class_id]] += 1
        return closed

    def flush(self) -> WindowMetrics | None:
        """Close the current window as partial (end of stream or shutdown)."""
        if self._index is None or self._frames == 0:
            return None
        rec = self._record(self._index, partial=True)
        self._index = None
        self._reset()
        return rec

    def _record(self, index: int, partial: bool) -> WindowMetrics:
        start = datetime.fromtimestamp(self._origin_s, UTC) + timedelta(seconds=index * self.window_s)
        start_iso = iso_utc(start)
        span = self._last_t - self._first_t
        fps = (self._frames - 1) / span if span > 0 else 0.0
        return WindowMetrics(
            msg_id=window_msg_id(self.device, self.camera, start_iso),
            device=self.device,
            camera=self.camera,
            window_start=start_iso,
            window_s=self.window_s,
            partial=partial,
            counts=self._counts,
            health=WindowHealth(frames=self._frames, dropped_frames=self._dropped, fps=round(fps, 3)),
        )
