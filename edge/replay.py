"""Offline replay: run one camera's pipeline over a recorded file as fast as the machine allows.

The stages overlap (``edge.stages``): decoding in one thread, motion gating and detection in a second,
tracking and analytics in the caller's (on 2 cores, detection shares the caller's thread); bounded queues
join them. Nothing is dropped in replay: a stage that runs ahead waits.

Output: ``OUTDIR/metrics.jsonl`` with one record per window (the last partial window included and marked),
``OUTDIR/events.jsonl`` with the near-misses and, for a calibrated camera, ``OUTDIR/speeds.jsonl`` with
the speeds per window; all byte-identical for the same video and config.

The summary says how many frames were read of those the container lists and how many decode errors the
source met; a damaged or truncated file (more than 1 % of the frames missing, or any decode error) is
flagged with WARNING lines in the summary (the source logs a WARNING too), and the exit status stays 0: the
records written cover the frames read, at their own media time (frames lost to damage leave their gap).
"""

from __future__ import annotations

import itertools
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from edge.analytics.speeds import speed_stats
from edge.clips.recorder import ClipCounters, WindowClipTally, build_recorder
from edge.config import EdgeConfig
from edge.detect import DetectorTimes
from edge.drive import drive
from edge.errors import EdgeError
from edge.pipeline import CameraPipeline, FrameResult, ObjectDetector, StageTimes
from edge.publish.mqtt import MqttPublisher
from edge.sinks import FanOutSink, JsonlSink, MqttSink, RecordCounts, RecordSink
from edge.source import FileSource, PacketTap, short_of
from edge.stages import Prefetch
from edge.types import ROAD_USER_CLASSES, Frame

# Decoding runs up to this far ahead of detection: while road users move the detector is the slow stage
# and the decoder works ahead; while the scene is still (motion gating skips the detector) the detector
# stage drains that backlog. 8 frames -> 2-4 s of frames made carpark_1080p_audio.mp4 with motion gating
# 10 % faster (tools/bench.py). Bounded in seconds too: the pre-event ring keeps 8 s beyond the pre-roll
# (edge.clips.recorder), so a clip's start is still there when the detector catches up.
_DECODED_AHEAD_S = 4.0
_DECODED_AHEAD_FRAMES = (8, 64)  # at least, at most (1080p for a 416 model: 480x270 BGR, 0.4 MB each)


def _decoded_ahead(fps: float) -> int:
    least, most = _DECODED_AHEAD_FRAMES
    return max(least, min(most, round(_DECODED_AHEAD_S * fps)))


class ReplaySpan(Protocol):
    """The part of a recording a replay covers (``edge.batch``: a segment with its warm-up): where its frames
    start, which records are its own and when it stops. Without one, a replay covers the whole file."""

    def open(self, video: Path, on_packet: PacketTap | None, fit_px: tuple[int, int]) -> FileSource:
        """The source, at the span's first frame (with the media times of the whole file's decode)."""
        ...

    def keep(self, pipeline: CameraPipeline, sink: RecordSink) -> RecordSink:
        """The sink that passes the span's own records on to ``sink``."""
        ...

    def after(self, frame: Frame, result: FrameResult) -> None:
        """Called after each frame's records went to the sink."""
        ...

    def done(self) -> bool:
        """True once the span's last frame was analysed: the replay stops."""
        ...


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    video: Path
    frames: int
    video_s: float
    wall_s: float
    decode_s: float
    times: StageTimes
    detector_times: DetectorTimes | None
    counts: dict[tuple[str, str, str], int]
    lines: list[tuple[str, tuple[str, str]]]
    windows: int
    clips: ClipCounters | None = None
    events: dict[str, int] = field(default_factory=dict)
    detected_frames: int = 0
    #: Frames the container lists (or duration x fps; capped by ``max_frames``); None when unknown.
    frames_expected: int | None = None
    #: Packets that did not decode, plus one when the file ended early (``FileSource.decode_errors``).
    decode_errors: int = 0
    #: Whether the camera is calibrated (speeds and near-misses are measured).
    calibrated: bool = False
    #: Motor-vehicle crossing speeds over the whole run, km/h, per (line, direction); calibrated cameras only.
    speeds_kmh: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    #: Turning movements over the whole run (movement -> class -> count); None without zones.
    movements: dict[str, dict[str, int]] | None = None

    @property
    def warnings(self) -> list[str]:
        """What a reader of the summary must know about the input: missing frames, decode errors."""
        found = []
        if short_of(self.frames, self.frames_expected):
            expected = self.frames_expected or 0
            found.append(f"read {self.frames} of the {expected} frames the container lists "
                         f"({100 * (expected - self.frames) / expected:.1f} % missing): the file is truncated or "
                         "damaged; the counts cover only the frames read")
        if self.decode_errors:
            found.append(f"{self.decode_errors} decode error(s): damaged video data was skipped, or the file "
                         "ended early (the log says where)")
        return found

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def x_real_time(self) -> float:
        return self.video_s / self.wall_s if self.wall_s > 0 else 0.0


def replay(video: Path, config: EdgeConfig, detector: ObjectDetector, outdir: Path, *,
           camera: str | None = None, start_time: datetime | None = None, max_frames: int | None = None,
           progress: bool = False, force_events_s: tuple[float, ...] = (),
           publisher: MqttPublisher | None = None, span: ReplaySpan | None = None,
           clips_dir: Path | None = None) -> ReplaySummary:
    """Replay ``video`` through the pipeline of ``camera`` and write ``outdir/metrics.jsonl``.

    With ``clips.enabled`` the clips go to ``outdir/clips``, under the clip-seconds budget as on the
    device: it counts the clips already in that store by their UTC times, so a second replay of the same
    recording into the same folder finds the budget of those hours spent. ``force_events_s`` triggers a
    clip event at these media times (seconds): for testing the clip path before near-miss detection runs. With a
    ``publisher`` the same records also go to its outbox (and so to the broker), as on the device. ``span``
    replays only a part of the file (``edge.batch``); ``clips_dir`` replaces ``outdir/clips``.
    """
    cam = config.camera(camera)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeError(f"cannot create output folder {outdir}: {exc.strerror}; pick a writable -o") from None
    start_s = (start_time or config.windows.origin).timestamp()
    recorder = (build_recorder(config.clips, config.device_id, cam.name, clips_dir or outdir / "clips")
                if config.clips.enabled else None)
    pipeline = CameraPipeline(config, cam, detector, start_utc_s=start_s, recorder=recorder)
    tally = WindowClipTally(recorder)  # clip counts of each window into its health
    counts = RecordCounts()
    try:
        files = JsonlSink(outdir, speeds=pipeline.kinematics is not None)
        sink: RecordSink = FanOutSink(files, counts, *([MqttSink(publisher)] if publisher is not None else []))
        tap = recorder.ring if recorder else None
        if span is not None:
            sink = span.keep(pipeline, sink)
        with (FileSource(video, on_packet=tap, fit_px=detector.input_size_px) if span is None
              else span.open(video, tap, detector.input_size_px)) as source:
            t0 = time.perf_counter()
            try:
                decode_s = _run(source, pipeline, tally, sink, max_frames=max_frames, progress=progress,
                                forced=sorted(force_events_s), name=video.name, span=span)
                sink.close()
            finally:
                files.discard()
            video_s = source.media_s
            expected = source.expected_frames
            frames_expected = expected if max_frames is None or expected is None else min(max_frames, expected)
            decode_errors = source.decode_errors
    finally:
        if recorder is not None:
            recorder.close()
            recorder.store.close()
    wall = time.perf_counter() - t0
    return ReplaySummary(
        video=video, frames=pipeline.totals.frames, video_s=video_s, wall_s=wall, decode_s=decode_s,
        times=pipeline.times, detector_times=getattr(detector, "times", None), counts=dict(pipeline.totals.crossings),
        lines=[(line.name, line.directions) for line in pipeline.counter.lines], windows=counts.windows,
        clips=recorder.counters if recorder else None, events=dict(counts.events),
        detected_frames=pipeline.detected_frames, frames_expected=frames_expected, decode_errors=decode_errors,
        calibrated=pipeline.kinematics is not None, speeds_kmh=dict(pipeline.totals.speeds_kmh),
        movements=counts.movements_total() if cam.movements is not None else None,
    )


def _run(source: FileSource, pipeline: CameraPipeline, tally: WindowClipTally, sink: RecordSink, *,
         max_frames: int | None, progress: bool, forced: list[float], name: str,
         span: ReplaySpan | None = None) -> float:
    """Decode ``source`` in a thread of its own and drive its frames through ``pipeline``, with a progress
    bar and the ``forced`` clip events (media seconds, ascending); returns the decode thread's busy time."""
    total = source.frame_count if max_frames is None else min(max_frames, source.frame_count or max_frames)
    bar = tqdm(total=total, disable=not progress, unit="frame", dynamic_ncols=True, desc=name, file=sys.stderr)
    decoded = Prefetch(itertools.islice(source, max_frames), _decoded_ahead(source.fps), "replay-decode")
    t0 = time.perf_counter()
    recorder = pipeline.recorder

    def after(frame: Frame, result: FrameResult) -> None:
        while recorder is not None and forced and frame.t_s >= forced[0]:
            recorder.trigger(f"forced-{forced.pop(0):g}", frame, pipeline.utc_s(frame))
        if span is not None:
            span.after(frame, result)
        bar.update(1)
        if bar.n % 25 == 0 and not bar.disable:
            elapsed = time.perf_counter() - t0
            bar.set_postfix_str(f"{frame.t_s / elapsed:.1f}x real time" if elapsed else "")

    try:
        drive(((frame, 0) for frame in decoded), pipeline, tally, sink, on_frame=after,
              stop=span.done if span is not None else None, thread_name="replay-detect", wake=decoded.close)
    finally:
        decoded.close()
        bar.close()
    return decoded.busy_s


#: What the default direction names mean on screen (``edge.config.default_direction_names``).
_DIRECTION_LEGEND = ("directions: up/down = crossing towards the top/bottom of the image (for a camera looking\n"
                     "  along the road, up is away from it), left/right = towards that edge; "
                     "lines[].directions names them")


def _table(rows: list[list[str]]) -> str:
    """Rows of cells as aligned columns: the first two left-aligned (names), the rest right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) if i > 1 else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(r, widths, strict=True))) for r in rows)


def _speed_cells(speeds_kmh: list[float]) -> list[str]:
    """Measured crossings, mean and p85 (km/h) of the motor vehicles on one line and direction."""
    if not speeds_kmh:
        return ["0", "-", "-"]
    st = speed_stats(speeds_kmh, speed_limit_kmh=1e9)
    return [str(st.count), f"{st.mean_kmh:.0f}", f"{st.p85_kmh:.0f}"]


def _counts_table(s: ReplaySummary) -> str:
    if not s.lines:
        return "(no counting lines configured)"
    speeds = bool(s.speeds_kmh) or s.calibrated
    rows = [["line", "direction", *ROAD_USER_CLASSES, "total",
             *(["measured", "mean km/h", "p85 km/h"] if speeds else [])]]
    for name, dirs in s.lines:
        for d in dirs:
            per_class = [s.counts.get((name, d, c), 0) for c in ROAD_USER_CLASSES]
            rows.append([name, d, *map(str, per_class), str(sum(per_class)),
                         *(_speed_cells(s.speeds_kmh.get((name, d), [])) if speeds else [])])
    table = _table(rows)
    if any(d in {"up", "down", "left", "right"} for _, dirs in s.lines for d in dirs):
        table += "\n" + _DIRECTION_LEGEND
    if speeds:
        table += "\nspeeds: of the motor vehicles whose ground velocity had settled when they crossed"
    return table


def _movements_table(movements: dict[str, dict[str, int]]) -> str:
    rows = [["movement", "", *ROAD_USER_CLASSES, "total"]]
    for name in sorted(movements):
        per_class = [movements[name].get(c, 0) for c in ROAD_USER_CLASSES]
        rows.append([name, "", *map(str, per_class), str(sum(per_class))])
    return "\n\n" + _table(rows) if len(rows) > 1 else "\n\nmovements: none completed"


def _clips_line(c: ClipCounters) -> str:
    return (f"\nclips written {c.written} ({c.frames_written} frames, {c.written_s:.1f} s kept) | dropped: "
            f"budget {c.dropped_budget}, busy {c.dropped_busy}, disk full {c.dropped_enospc}, "
            f"redaction {c.dropped_redaction}, corrupt data {c.dropped_corrupt}, reconnect "
            f"{c.dropped_reconnect}, failed {c.failed}")


def format_summary(s: ReplaySummary) -> str:
    """Counts per line, direction and class (with speeds on a calibrated camera), turning movements and
    near-misses when configured, then frames, throughput, speed against real time and any warnings."""
    out = _counts_table(s)
    if s.movements is not None:
        out += _movements_table(s.movements)
    if s.calibrated or s.events:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(s.events.items()))
        out += f"\n\nnear-misses {sum(s.events.values())}" + (f" ({kinds})" if kinds else "")
    if s.clips is not None:
        out += _clips_line(s.clips)
    expected = "unknown" if s.frames_expected is None else str(s.frames_expected)
    warnings = "".join(f"\nWARNING: {w}" for w in s.warnings)
    return (
        f"{out}\n\nframes {s.frames} read of {expected} expected | decode errors {s.decode_errors} | "
        f"video {s.video_s:.1f} s | wall {s.wall_s:.1f} s | {s.fps:.1f} fps | {s.x_real_time:.1f}x real time | "
        f"windows {s.windows}{warnings}"
    )
