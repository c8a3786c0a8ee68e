"""The jobs of a batch: each recording whole, or split into segments of whole windows with a warm-up.

A recording longer than ``segment_s`` is cut at window boundaries (``windows.window_s`` from
``windows.origin``, the same UTC grid the device uses) every ``segment_s`` (rounded to whole windows), so
each window is produced by one segment alone (``edge.batch.span``). A segment after the first starts
decoding ``warmup_s`` before its first window. The warm-up should outlast the time a road user stays in
view (a few seconds on a highway; a queue at a red light may stand for minutes): a road user in view for
longer than the warm-up at a boundary may be tracked differently than in the unsplit replay.

Recordings are not split when clips are on (a clip's pre-roll needs the encoded packets from the file's
start), and their jobs of one camera then run one after the other, in time order: the clip-seconds budget
of a camera is counted over one clip store, by the hour, as on the device.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from edge.batch.job import JobSpec
from edge.batch.manifest import Recording
from edge.batch.span import Span
from edge.config import EdgeConfig
from edge.source import FileSource


@dataclass(frozen=True, slots=True)
class Probe:
    """What the container says about a recording: frame rate, frames (None when unknown), frame size."""

    fps: float
    frames: int | None
    size: tuple[int, int]

    @property
    def duration_s(self) -> float | None:
        return self.frames / self.fps if self.frames is not None else None


def probe(path: Path) -> Probe:
    with FileSource(path) as source:  # opens the video stream only, decodes one frame
        return Probe(source.fps, source.expected_frames, source.size)


@dataclass(frozen=True, slots=True)
class SplitOptions:
    #: Target segment length in seconds (rounded to whole windows); None: never split.
    segment_s: float | None = 1800.0
    warmup_s: float = 60.0


def config_sha256(config: EdgeConfig) -> str:
    """The sha256 of what the pipeline runs: the config as loaded, less where the model file lies and the
    onnxruntime thread count (the batch sets it per worker; it does not change the detections), with the
    model file's pinned sha256 and the edge version."""
    from edge import __version__
    from edge.models import load_manifest

    data = config.model_dump(mode="json", exclude={"detector": {"model_dir", "threads"}})
    data["_model_sha256"] = load_manifest().get(config.detector.model).sha256
    data["_edge_version"] = __version__
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _job_id(recording: Recording, input_sha256: str, cfg_sha256: str, span: Span) -> str:
    key = json.dumps({"input": input_sha256, "config": cfg_sha256, "camera": recording.camera,
                      "start": recording.start.isoformat(), "first_frame": span.first_frame,
                      "keep_from": span.keep_from, "keep_until": span.keep_until}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def segment_spans(config: EdgeConfig, recording: Recording, info: Probe, options: SplitOptions) -> list[Span]:
    """The spans of one recording: one whole span, or window-aligned segments (see the module docstring)."""
    window_s = config.windows.window_s
    if options.segment_s is None or info.frames is None or info.frames < 2 or config.clips.enabled:
        return [Span(fps=info.fps)]
    origin = config.windows.origin.timestamp()
    start = recording.start.timestamp()
    per_segment = max(1, round(options.segment_s / window_s))
    first_w = math.floor((start - origin) / window_s)
    last_w = math.floor((start + (info.frames - 1) / info.fps - origin) / window_s)
    bounds = list(range(first_w + per_segment, last_w + 1, per_segment))
    if not bounds:
        return [Span(fps=info.fps)]
    spans, lo = [], None
    for b in [*bounds, None]:
        first = 0
        if lo is not None:
            boundary_s = origin + lo * window_s - start  # media time of the segment's first window
            first = max(0, math.floor((boundary_s - options.warmup_s) * info.fps) - 1)
        spans.append(Span(first_frame=first, keep_from=lo, keep_until=b, fps=info.fps))
        lo = b
    return spans


def plan_jobs(config: EdgeConfig, recording: Recording, info: Probe, options: SplitOptions, *,
              input_sha256: str, cfg_sha256: str, clips_root: Path | None) -> list[JobSpec]:
    """The jobs of one recording, in time order."""
    spans = segment_spans(config, recording, info, options)
    jobs = []
    for i, span in enumerate(spans):
        frames = _frames_of(config, recording, info, span)
        jobs.append(JobSpec(
            job_id=_job_id(recording, input_sha256, cfg_sha256, span), video=recording.path,
            camera=recording.camera, start=recording.start, span=span, segment=i, segments=len(spans),
            frames=frames, clips_dir=clips_root / recording.camera if clips_root is not None else None))
    return jobs


def _frames_of(config: EdgeConfig, recording: Recording, info: Probe, span: Span) -> int:
    """Frames a span decodes, warm-up included (for progress and ETA)."""
    total = info.frames or 0
    if span.keep_until is None:
        return max(0, total - span.first_frame)
    end_s = (config.windows.origin.timestamp() + span.keep_until * config.windows.window_s
             - recording.start.timestamp())
    return max(0, min(total, math.ceil(end_s * info.fps) + 1) - span.first_frame)
