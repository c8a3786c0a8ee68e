"""The clip-seconds budget of one camera (privacy invariant P3): so many clip seconds per rolling hour and
per rolling day, whatever the near-miss detector asks for.

A false alarm is not harmless: it keeps video. A detector that fires all the time (a bad calibration, a
broken model, a camera knocked askew) would otherwise make the device a recorder of 30-second pieces.
The budget caps what such a fault can keep at ``clips.budget_s_per_hour`` / ``clips.budget_s_per_day``
(protocol maximum 120 s and 600 s).

How seconds are counted: a clip spans the UTC time of its first frame to the end of its last frame (a
frame lasts 1/fps). No frame is ever stored in two clips (``edge.clips.recorder``), so these spans do not
overlap and their sum is the video actually kept. A clip counts *whole* toward every rolling hour (day)
that it touches. A new clip is admitted only if its seconds, plus those of every clip that touches the
stretch from one hour before its start to one hour after its end, fit the hourly budget (likewise for
the day). Every window of an hour that touches the new clip lies inside that stretch, so no window of an
hour, anywhere, ever holds more than the budget, whatever order the clips came in (a restart, a second
replay into the same store). The price is a little caution at the edges: a clip straddling the start of
the hour counts whole.

Spans come from the clip store's index (clips kept before a restart) and from the recorder (clips
admitted in this run, queued or being written, with the span they were admitted for, which a written
clip never exceeds). Thread-safe: the camera loop asks and reserves, the health reporter reads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

HOUR_S = 3600.0
DAY_S = 86_400.0
#: Spans this much older than the newest admitted clip can no longer touch a window of a later clip.
_HISTORY_S = 2 * DAY_S
_EPS_S = 1e-6  # float noise: a clip of exactly the budget fits


class ClipBudget:
    """Rolling hour and day budgets over non-overlapping clip spans (UTC seconds), keyed by clip id."""

    def __init__(self, per_hour_s: float, per_day_s: float,
                 kept: Iterable[tuple[str, float, float]] = ()) -> None:
        self.per_hour_s, self.per_day_s = per_hour_s, per_day_s
        self._lock = threading.Lock()
        self._spans: dict[str, tuple[float, float]] = {clip_id: (s, e) for clip_id, s, e in kept}
        self._newest_start = max((s for s, _ in self._spans.values()), default=float("-inf"))

    def fits(self, clip_id: str, start_s: float, end_s: float) -> bool:
        """Whether clip ``clip_id`` may span ``[start_s, end_s)``; its own earlier reservation (a clip
        being extended) does not count against it."""
        need = end_s - start_s
        with self._lock:
            return all(self._used(start_s, end_s, window, clip_id) + need <= limit + _EPS_S
                       for window, limit in ((HOUR_S, self.per_hour_s), (DAY_S, self.per_day_s)))

    def reserve(self, clip_id: str, start_s: float, end_s: float) -> None:
        """Count clip ``clip_id`` as spanning ``[start_s, end_s)`` (replacing what it reserved before)."""
        with self._lock:
            self._spans[clip_id] = (start_s, end_s)
            if start_s > self._newest_start:
                self._newest_start = start_s
                horizon = start_s - _HISTORY_S
                for old in [k for k, (_, e) in self._spans.items() if e < horizon]:
                    del self._spans[old]

    def used_s(self, now_s: float) -> tuple[float, float]:
        """Seconds counted against the hourly and the daily budget for a clip starting at ``now_s``."""
        with self._lock:
            return self._used(now_s, now_s, HOUR_S, None), self._used(now_s, now_s, DAY_S, None)

    def _used(self, start_s: float, end_s: float, window_s: float, exclude: str | None) -> float:
        lo, hi = start_s - window_s, end_s + window_s
        return sum(e - s for k, (s, e) in self._spans.items() if k != exclude and e > lo and s < hi)
