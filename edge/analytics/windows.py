"""Fixed, aligned time windows that turn crossings into one anonymous metrics record per window."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from edge.analytics.conflicts import ConflictAggregator
from edge.analytics.lines import Crossing
from edge.analytics.movements import MovementAggregator
from edge.analytics.speeds import SpeedAggregator
from edge.payloads import SpeedStats, WindowHealth, WindowMetrics, WindowSpeeds, iso_utc, window_msg_id
from edge.types import ROAD_USER_CLASSES

Counts = dict[str, dict[str, dict[str, int]]]
#: What a closed window produces: the metrics record, and the speeds record of a calibrated camera.
WindowRecord = WindowMetrics | WindowSpeeds


@dataclass(frozen=True, slots=True)
class WindowExtras:
    """Optional per-window aggregates, closed together with the counts (ground-plane analytics)."""

    speeds: SpeedAggregator | None = None
    speed_limit_kmh: float | None = None
    min_speed_count: int = 3
    movements: MovementAggregator | None = None
    conflicts: ConflictAggregator | None = None


class WindowAggregator:
    """Aggregates one camera's crossings into windows of ``window_s`` aligned to ``origin``.

    Times given to ``add_frame`` are UTC seconds since the epoch (media time mapped onto the recording's
    start in replay, the wall clock live). A window closes when the first frame of a later window
    arrives; ``flush`` closes the last, partial one. ``advance`` must come before a frame's crossings,
    speeds, movements and conflicts are added, so that they land in the frame's own window.
    """

    def __init__(self, device: str, camera: str, window_s: int, origin: datetime,
                 lines: list[tuple[str, tuple[str, str]]], extras: WindowExtras | None = None) -> None:
        self.device, self.camera, self.window_s = device, camera, window_s
        self.extras = extras or WindowExtras()
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

    def add_frame(self, t_utc_s: float, crossings: list[Crossing], dropped_before: int = 0) -> list[WindowRecord]:
        """Account one processed frame and its crossings; return the windows this frame closed."""
        closed = self.advance(t_utc_s, dropped_before)
        self.add_crossings(crossings)
        return closed

    def add_crossings(self, crossings: list[Crossing]) -> None:
        for c in crossings:
            self._counts[c.line][c.direction][ROAD_USER_CLASSES[c.class_id]] += 1

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
        start_iso = iso_utc(start)
        span = self._last_t - self._first_t
        fps = (self._frames - 1) / span if span > 0 else 0.0
        x = self.extras
        speeds = self._speeds(start_iso, partial)
        metrics = WindowMetrics(
            msg_id=window_msg_id(self.device, self.camera, start_iso),
            device=self.device,
            camera=self.camera,
            window_start=start_iso,
            window_s=self.window_s,
            partial=partial,
            counts=self._counts,
            movements=({m: {c: n for c, n in per.items() if n} for m, per in x.movements.close().items()
                        if any(per.values())} if x.movements is not None else None),
            conflicts=x.conflicts.close() if x.conflicts is not None else None,
            health=WindowHealth(frames=self._frames, dropped_frames=self._dropped, fps=round(fps, 3)),
        )
        return [metrics] if speeds is None else [metrics, speeds]

    def _speeds(self, start_iso: str, partial: bool) -> WindowSpeeds | None:
        """Sparse speed statistics, with mean and percentiles withheld below the minimum count."""
        x = self.extras
        if x.speeds is None or x.speed_limit_kmh is None:
            return None
        out: dict[str, dict[str, dict[str, SpeedStats]]] = {}
        for line, per_dir in x.speeds.close().items():
            out[line] = {}
            for direction, per_class in per_dir.items():
                out[line][direction] = {}
                for cls, st in per_class.items():
                    if st.count == 0 and st.unmeasured == 0:
                        continue
                    shown = st.count >= x.min_speed_count
                    out[line][direction][cls] = (
                        st.count, st.unmeasured, st.mean_kmh if shown else None, st.p50_kmh if shown else None,
                        st.p85_kmh if shown else None, st.over_limit,
                    )
        return WindowSpeeds(
            msg_id=window_msg_id(self.device, self.camera, start_iso, "speeds"), device=self.device,
            camera=self.camera, window_start=start_iso, window_s=self.window_s, partial=partial,
            speed_limit_kmh=x.speed_limit_kmh, speeds=out,
        )
