"""The part of a recording one batch job replays: the whole file, or a segment of whole windows with a warm-up.

A segment owns the windows ``[keep_from, keep_until)`` (window indices from ``windows.origin``). Its frames
start ``warm-up`` seconds before its first window: the tracker, the line counter and every analytic run over
them, so road users already in view at the boundary are tracked as in the unsplit replay, but the records
of those windows are not its own and are dropped. It runs one frame past its last window, the frame that
closes that window (so it closes as in the unsplit replay: not partial), and stops. Which records count:

* a window record (metrics or speeds) when its window is one of the segment's;
* a near-miss event when the frame that emitted it lies in one of the segment's windows: that is the window
  that counts it (``conflicts``), the unsplit replay emits it at that frame too;
* what the end of the stream flushes (the partial window, open movements and encounters) only in the
  segment that reaches the end of the file (``keep_until`` is None).

Every window is thus produced by exactly one segment, from the same frames as in the unsplit replay; no
window needs merging, and no statistic (a p85 speed) needs combining. The detection schedule (stride or
interval) is advanced over the frames before the warm-up, so that the same frames go to the detector.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

import numpy as np

from edge.analytics.windows import WindowAggregator
from edge.batch.seek import SegmentSource
from edge.payloads import NearMissEvent, WindowMetrics, WindowSpeeds
from edge.pipeline import CameraPipeline, DetectionSchedule, FrameResult
from edge.sinks import RecordSink
from edge.source import FileSource, PacketTap
from edge.types import Frame

#: A job reports the frames it analysed at most this often.
PROGRESS_INTERVAL_S: Final = 1.0


@dataclass(frozen=True, slots=True)
class Span:
    """Frames and windows of one job: from frame ``first_frame``, the windows ``[keep_from, keep_until)``
    (None: from the first, to the end of the file). ``fps`` is the file's, for the detection schedule."""

    first_frame: int = 0
    keep_from: int | None = None
    keep_until: int | None = None
    fps: float = 0.0

    @property
    def whole(self) -> bool:
        return self.first_frame == 0 and self.keep_from is None and self.keep_until is None


def window_index_of(windows: WindowAggregator, window_start: str) -> int:
    """The index of a record's window from its ``window_start`` (an exact window start: the middle of the
    window is looked up, clear of any rounding at its edges)."""
    t = datetime.fromisoformat(window_start.replace("Z", "+00:00")).timestamp()
    return windows.window_index(t + windows.window_s / 2)


class SpanSink:
    """Passes the span's own records to ``sink`` (see the module docstring): window records by their window,
    events held until :meth:`frame` says in which window their frame lay."""

    def __init__(self, sink: RecordSink, span: Span, windows: WindowAggregator) -> None:
        self.sink, self.span, self._windows = sink, span, windows
        self._pending: list[NearMissEvent] = []
        self.past_end = False  # a frame after the span's last window came: the stream goes on beyond it

    def owns(self, index: int) -> bool:
        lo, hi = self.span.keep_from, self.span.keep_until
        return (lo is None or index >= lo) and (hi is None or index < hi)

    def _own_record(self, record: WindowMetrics | WindowSpeeds) -> bool:
        return self.owns(window_index_of(self._windows, record.window_start))

    def window(self, record: WindowMetrics) -> None:
        if self._own_record(record):
            self.sink.window(record)

    def speeds(self, record: WindowSpeeds) -> None:
        if self._own_record(record):
            self.sink.speeds(record)

    def event(self, event: NearMissEvent) -> None:
        self._pending.append(event)

    def frame(self, index: int) -> None:
        """The events since the last call were emitted by a frame of window ``index``."""
        until = self.span.keep_until
        self.past_end = self.past_end or (until is not None and index >= until)
        if self.owns(index):
            for e in self._pending:
                self.sink.event(e)
        self._pending.clear()

    def close(self) -> None:
        """The events of the end of the stream are the span's if it reached the end of the file (the last
        segment; or one whose file ended early, before its last window)."""
        if not self.past_end:
            for e in self._pending:
                self.sink.event(e)
        self._pending.clear()
        self.sink.close()


def advance_schedule(schedule: DetectionSchedule, frames: int, fps: float) -> None:
    """Let ``schedule`` pick over frames ``0 .. frames - 1`` (media time ``i / fps``) as the whole-file replay
    would, so that it picks the same frames from there on."""
    if schedule.stride_frames == 1 and schedule.interval_s is None:
        return  # every frame is picked: nothing to catch up
    blank = np.zeros((1, 1, 3), np.uint8)
    for i in range(frames):
        schedule.pick(Frame(blank, i, t_s=i / fps))


class SpanRun:
    """One replay of a :class:`Span` (``edge.replay.ReplaySpan``); ``progress`` gets the frames analysed so
    far, about every ``PROGRESS_INTERVAL_S``."""

    def __init__(self, span: Span, progress: Callable[[int], None] | None = None) -> None:
        self.span = span
        self.frames = 0
        self._progress = progress
        self._reported_at = time.monotonic()
        self._sink: SpanSink | None = None
        self._pipeline: CameraPipeline | None = None
        self._done = False

    def open(self, video: Path, on_packet: PacketTap | None, fit_px: tuple[int, int]) -> FileSource:
        if self.span.first_frame == 0:
            return FileSource(video, on_packet=on_packet, fit_px=fit_px)
        if on_packet is not None:
            raise ValueError("a segment that starts inside the file cannot cut clips: clips need the whole file")
        return SegmentSource(video, self.span.first_frame, fit_px=fit_px)

    def keep(self, pipeline: CameraPipeline, sink: RecordSink) -> RecordSink:
        if self.span.whole:
            return sink
        advance_schedule(pipeline.schedule, self.span.first_frame, self.span.fps)
        self._pipeline = pipeline
        self._sink = SpanSink(sink, self.span, pipeline.windows)
        return self._sink

    def after(self, frame: Frame, result: FrameResult) -> None:
        self.frames += 1
        if self._sink is not None and self._pipeline is not None:
            index = self._pipeline.windows.window_index(self._pipeline.utc_s(frame))
            self._sink.frame(index)
            self._done = self._sink.past_end
        if self._progress is not None and time.monotonic() - self._reported_at >= PROGRESS_INTERVAL_S:
            self._reported_at = time.monotonic()
            self._progress(self.frames)

    def done(self) -> bool:
        return self._done
