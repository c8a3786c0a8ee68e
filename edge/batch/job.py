"""One batch job (a recording, or a segment of one) and the worker that runs jobs with one loaded model.

A job runs through ``edge.replay.replay``, the pipeline, sinks and frame loop of ``edge replay``, into a
private temporary folder; its records come back in the :class:`JobResult` (aggregate window records and
events: a few kB per window), and the batch's driver writes them into the batch folder. So a worker needs
no shared output folder (a Ray worker on another machine) and the driver is the one writer of the outputs
and the ledger. Only clips, when the config turns them on, are written by the worker itself, into the
batch's clip store (``OUTDIR/clips/CAMERA``). No frame is ever written (P2): the temporary folder holds the
JSONL records only.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from edge.batch.seek import PastTheEndError
from edge.batch.span import Span, SpanRun
from edge.config import EdgeConfig

#: The record files a job produces, in the order they are written to the job's folder.
RECORD_FILES = ("metrics.jsonl", "speeds.jsonl", "events.jsonl")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a worker needs to run one job (picklable: it crosses process and machine boundaries)."""

    job_id: str
    video: Path
    camera: str
    start: datetime
    span: Span = field(default_factory=Span)
    segment: int = 0
    segments: int = 1
    #: Frames the job decodes, warm-up included (an estimate from the container: progress and ETA).
    frames: int = 0
    #: The clip store of the camera in the batch folder; None when clips are off.
    clips_dir: Path | None = None

    @property
    def label(self) -> str:
        part = f" segment {self.segment + 1}/{self.segments}" if self.segments > 1 else ""
        return f"{self.video.name}{part}"


@dataclass(frozen=True, slots=True)
class JobResult:
    job_id: str
    #: Frames analysed (warm-up included) and the media seconds they cover.
    frames: int
    media_s: float
    wall_s: float
    decode_errors: int
    warnings: tuple[str, ...]
    #: Record file name -> its content (JSON lines).
    files: dict[str, str]
    worker: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """A job that ended: its result, or why it failed."""

    job_id: str
    result: JobResult | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """Frames a running job has analysed so far."""

    job_id: str
    frames: int


def worker_config(config: EdgeConfig, threads: int) -> EdgeConfig:
    """``config`` with onnxruntime's intra-op threads set to the worker's share of the cores."""
    return config.model_copy(update={"detector": config.detector.model_copy(update={"threads": threads})})


class JobWorker:
    """The pipeline set-up of one worker: the config and the detector, whose model is loaded once here and
    serves every job the worker runs."""

    def __init__(self, config: EdgeConfig, threads: int) -> None:
        from edge.attest import disable_core_dumps
        from edge.detect import Detector  # onnxruntime: imported in the worker only

        disable_core_dumps()  # a core dump could hold frames (P2): also on a Ray node the driver did not start
        self.config = worker_config(config, threads)
        self.detector = Detector(self.config.detector)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, job: JobSpec, progress: Callable[[int], None] | None = None) -> JobResult:
        from edge.replay import replay

        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="edge-batch-") as tmp:
            out = Path(tmp)
            span = SpanRun(job.span, progress)
            try:
                summary = replay(job.video, self.config, self.detector, out, camera=job.camera,
                                 start_time=job.start, span=span, clips_dir=job.clips_dir)
            except PastTheEndError:  # the segment before it reached the end of the file and closed it
                return JobResult(job.job_id, 0, 0.0, time.perf_counter() - t0, 0, (), {}, self.name)
            files = {name: (out / name).read_text(encoding="utf-8")
                     for name in RECORD_FILES if (out / name).exists()}
        return JobResult(job_id=job.job_id, frames=summary.frames, media_s=summary.video_s,
                         wall_s=time.perf_counter() - t0, decode_errors=summary.decode_errors,
                         warnings=tuple(summary.warnings) if job.span.whole else (), files=files, worker=self.name)

    def outcome(self, job: JobSpec, progress: Callable[[int], None] | None = None) -> Outcome:
        """:meth:`run`, with any failure as the outcome's error (one line) instead of an exception."""
        try:
            return Outcome(job.job_id, result=self.run(job, progress))
        except Exception as exc:  # a job fails alone: the worker serves the next one
            return Outcome(job.job_id, error=f"{type(exc).__name__}: {exc}".splitlines()[0])
