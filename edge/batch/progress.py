"""One progress display over a whole batch: frames analysed (finished jobs plus the running ones' reports),
frames per second and ETA over the frames of every job, and jobs done and failed. A tqdm bar on a terminal;
quiet in CI (``CI=true``), with ``-q`` and when stderr is not a terminal."""

from __future__ import annotations

import os
import sys

from tqdm import tqdm


def show_progress(quiet: bool) -> bool:
    return sys.stderr.isatty() and not quiet and os.environ.get("CI") != "true"


class BatchProgress:
    def __init__(self, *, jobs: int, frames: int, skipped: int, enabled: bool) -> None:
        self.jobs, self.skipped = jobs, skipped
        self.done = self.failed = 0
        self._finished_frames = 0
        self._running: dict[str, int] = {}
        self._total = max(frames, 1)
        self._bar = tqdm(total=self._total, disable=not enabled, unit="frame", dynamic_ncols=True,
                         desc="batch", file=sys.stderr, smoothing=0.05)
        self._refresh()

    def _refresh(self) -> None:
        shown = min(self._finished_frames + sum(self._running.values()), self._total)
        self._bar.update(max(0, shown - self._bar.n))
        self._bar.set_postfix_str(f"jobs {self.done + self.skipped}/{self.jobs} done, {self.failed} failed, "
                                  f"{len(self._running)} running", refresh=False)

    def running(self, job_id: str, frames: int) -> None:
        self._running[job_id] = frames
        self._refresh()

    def finished(self, job_id: str, frames: int, *, ok: bool, planned: int) -> None:
        """A job ended; ``planned`` frames of the total were its share (a failed job's frames leave the count
        until it is retried)."""
        self._running.pop(job_id, None)
        if ok:
            self.done += 1
            self._finished_frames += planned
        else:
            self.failed += 1
        self._refresh()

    def retrying(self) -> None:
        self.failed -= 1
        self._refresh()

    def close(self) -> None:
        self._bar.close()
