"""The one frame loop: a source's frames through a camera's pipeline into a record sink.

``edge replay`` (``edge.replay``), ``edge run`` (``edge.service.CameraWorker``) and
``tools/bench_live.py`` all run their frames through :func:`drive`; ``tests/test_structure.py`` checks
that nothing else calls ``CameraPipeline.analyse``. The callers differ only in their frames, their sink
and what they do after each frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from edge.clips.recorder import WindowClipTally
from edge.pipeline import CameraPipeline, FrameResult
from edge.sinks import RecordSink, send
from edge.stages import ANALYTICS_THREAD, DETECTED_AHEAD, Prefetch
from edge.types import Frame

#: Called after each frame's records went to the sink, in the loop's thread.
FrameHook = Callable[[Frame, FrameResult], None]


def with_drops(frames: Iterable[Frame]) -> Iterator[tuple[Frame, int]]:
    """A live source's frames, each with the frames its reader dropped before it: the gap in the capture
    index (``LiveSource`` keeps only the newest frame; the gap is exact, unlike reading its drop counter
    after the fact)."""
    last_index = -1
    for frame in frames:
        yield frame, frame.index - last_index - 1
        last_index = frame.index


def drive(frames: Iterator[tuple[Frame, int]], pipeline: CameraPipeline, tally: WindowClipTally,
          sink: RecordSink, *, on_frame: FrameHook | None = None, stop: Callable[[], bool] | None = None,
          detect_thread: bool = ANALYTICS_THREAD, thread_name: str = "detect",
          wake: Callable[[], None] | None = None) -> None:
    """Run ``frames`` (each with the frames dropped before it) through ``pipeline`` into ``sink``.

    Per frame: ``pipeline.detect`` (in a thread named ``thread_name``, ``DETECTED_AHEAD`` frames ahead,
    when ``detect_thread``), ``pipeline.analyse``, the closed windows stamped with ``tally``'s clip
    counts, events then windows to ``sink``, then ``on_frame``; the loop ends when ``frames`` ends or
    ``stop()`` returns True after a frame. At the end, also after an exception: ``wake()`` (it closes
    what the frames wait on, e.g. a ``LiveSource``, so the detect thread can stop), the detect thread is
    stopped, then ``pipeline.finish()`` sends the open movements, encounters and the partial window.
    The sink is not closed: its owner closes it once the run succeeded.
    """
    detecting = ((pipeline.detect(frame), dropped) for frame, dropped in frames)
    stage = Prefetch(detecting, DETECTED_AHEAD, thread_name) if detect_thread else None
    try:
        for detected, dropped in stage if stage is not None else detecting:
            tally.before_frame()
            result = pipeline.analyse(detected, dropped)
            send(sink, result.events, tally.stamp(result.windows))
            if on_frame is not None:
                on_frame(detected.frame, result)
            if stop is not None and stop():
                break
    finally:
        if wake is not None:
            wake()
        if stage is not None:
            stage.close()  # before the caller closes a file source: the stage's thread decodes it
        events, windows = pipeline.finish()
        send(sink, events, tally.stamp(windows, final=True))
