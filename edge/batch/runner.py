"""``edge batch MANIFEST -c CONFIG -o OUTDIR``: every recording of a manifest through the pipeline of
``edge replay``, on a local process pool or on Ray, resumable, merged into one set of window records.

1. The manifest's recordings (``edge.batch.manifest``) are probed and hashed (sha256, cached in the ledger);
   the config gets the start-up checks of ``edge replay`` once per camera and frame size.
2. Each recording becomes one job, or segments of whole windows with a warm-up (``edge.batch.plan``).
3. Jobs the ledger (``edge.batch.ledger``) has done, with the same input and config, are skipped; the
   others run on the backend (``edge.batch.backends``), at most ``workers`` at a time. A failed job is
   tried again up to ``retries`` times in this run (and again in a later run).
4. Each finished job's records are written atomically into ``OUTDIR/jobs/JOB_ID/``, then the ledger says
   done; a batch killed at any moment reruns only what was not done.
5. The records of every done job are merged (``edge.batch.outputs``) into ``OUTDIR/metrics.jsonl``,
   ``speeds.jsonl`` and ``events.jsonl``, keyed by (device, camera, window_start).

Privacy holds as in ``edge replay``: no frame is written anywhere; clips, only when the config turns them on,
go to the clip store ``OUTDIR/clips/CAMERA`` under the protocol's per-camera budget.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

from edge.batch.backends import Backend, LocalBackend, cores, threads_per_worker
from edge.batch.job import JobSpec, Outcome, Progress
from edge.batch.ledger import Ledger
from edge.batch.manifest import Recording, load_manifest
from edge.batch.outputs import Merged, job_dir, merge, write_job
from edge.batch.plan import Probe, SplitOptions, config_sha256, plan_jobs, probe
from edge.batch.progress import BatchProgress
from edge.config import EdgeConfig
from edge.errors import EdgeError

log = logging.getLogger(__name__)

BACKENDS = ("local", "ray")
_POLL_S = 0.5


@dataclass(frozen=True, slots=True)
class BatchOptions:
    backend: str = "local"
    #: Workers (processes, or Ray actors); None: one per core of this machine.
    workers: int | None = None
    split: SplitOptions = field(default_factory=SplitOptions)
    #: Further attempts of a failed job in this run.
    retries: int = 2
    progress: bool = False


@dataclass(slots=True)
class BatchSummary:
    outdir: Path
    backend: str
    workers: int
    threads: int
    run: int
    recordings: int
    jobs: int
    video_s: float
    skipped: int = 0
    done: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # job label -> error
    frames: int = 0
    wall_s: float = 0.0
    merged: Merged = field(default_factory=Merged)


@dataclass(slots=True)
class _Plan:
    jobs: list[JobSpec]
    hashes: dict[Path, str]
    cfg_sha256: str
    video_s: float


def _plan(recordings: list[Recording], config: EdgeConfig, outdir: Path, ledger: Ledger,
          split: SplitOptions) -> _Plan:
    from edge.prepare import prepare

    cfg_sha = config_sha256(config)
    clips_root = outdir / "clips" if config.clips.enabled else None
    probes: dict[Path, Probe] = {}
    hashes: dict[Path, str] = {}
    jobs: list[JobSpec] = []
    ids: set[str] = set()
    checked: set[tuple[str, tuple[int, int]]] = set()
    for rec in recordings:
        info = probes.get(rec.path) or probe(rec.path)
        probes[rec.path] = info
        hashes[rec.path] = hashes.get(rec.path) or ledger.sha256(rec.path)
        if (rec.camera, info.size) not in checked:  # lines, zones and calibration points inside the frame
            prepare(config, frame_sizes={rec.camera: info.size}, device=False)
            checked.add((rec.camera, info.size))
        for job in plan_jobs(config, rec, info, split, input_sha256=hashes[rec.path], cfg_sha256=cfg_sha,
                             clips_root=clips_root):
            if job.job_id in ids:
                log.warning("%s is listed twice with the same camera and start: replayed once", rec.path)
                break
            ids.add(job.job_id)
            jobs.append(job)
    if config.clips.enabled:  # one camera's jobs one after the other, in time order (see edge.batch.plan)
        jobs.sort(key=lambda j: (j.camera, j.start, j.segment))
    video_s = sum(probes[r.path].duration_s or 0.0 for r in recordings)
    return _Plan(jobs, hashes, cfg_sha, video_s)


def _is_done(ledger: Ledger, outdir: Path, job: JobSpec) -> bool:
    row = ledger.get(job.job_id)
    return row is not None and row.state == "done" and (job_dir(outdir, job.job_id) / "job.json").exists()


def make_backend(options: BatchOptions, config: EdgeConfig) -> tuple[Backend, int]:
    """The backend of ``options`` and its onnxruntime threads per worker."""
    workers = options.workers or cores()
    threads = threads_per_worker(workers)
    if options.backend == "ray":
        from edge.batch.ray_backend import RayBackend

        return RayBackend(config, workers, threads), threads
    if options.backend != "local":
        raise EdgeError(f"unknown backend {options.backend!r}: use one of {', '.join(BACKENDS)}")
    return LocalBackend(config, workers, threads), threads


class _Scheduler:
    """Hands jobs to the backend's free workers and records what comes back (see the module docstring)."""

    def __init__(self, backend: Backend, ledger: Ledger, plan: _Plan, outdir: Path, *, run: int, retries: int,
                 serial: bool, progress: BatchProgress, summary: BatchSummary) -> None:
        self.backend, self.ledger, self.plan, self.outdir = backend, ledger, plan, outdir
        self.run, self.retries, self.serial = run, retries, serial
        self.progress, self.summary = progress, summary
        self.running: dict[str, JobSpec] = {}
        self.attempts: Counter[str] = Counter()

    def _next(self, waiting: deque[JobSpec]) -> JobSpec | None:
        busy = {j.camera for j in self.running.values()}
        for job in waiting:
            if not self.serial or job.camera not in busy:
                waiting.remove(job)
                return job
            busy.add(job.camera)  # a camera's later jobs wait for its earlier ones
        return None

    def execute(self, todo: list[JobSpec]) -> None:
        waiting = deque(todo)
        while waiting or self.running:
            while len(self.running) < self.backend.slots and (job := self._next(waiting)) is not None:
                self.ledger.started(job, self.plan.hashes[job.video], self.plan.cfg_sha256, self.run)
                self.backend.submit(job)
                self.running[job.job_id] = job
            for msg in self.backend.poll(_POLL_S):
                if isinstance(msg, Progress):
                    if msg.job_id in self.running:
                        self.progress.running(msg.job_id, msg.frames)
                elif msg.job_id in self.running:
                    self._ended(msg, waiting)

    def _ended(self, outcome: Outcome, waiting: deque[JobSpec]) -> None:
        job = self.running.pop(outcome.job_id)
        if outcome.result is not None:
            write_job(self.outdir, job, outcome.result)
            self.ledger.finished(job.job_id, frames=outcome.result.frames, wall_s=outcome.result.wall_s,
                                 worker=outcome.result.worker)
            self.summary.done += 1
            self.summary.frames += outcome.result.frames
            for warning in outcome.result.warnings:
                log.warning("%s: %s", job.label, warning)
            self.progress.finished(job.job_id, outcome.result.frames, ok=True, planned=job.frames)
            return
        error = outcome.error or "failed"
        self.ledger.failed(job.job_id, error)
        self.attempts[job.job_id] += 1
        self.progress.finished(job.job_id, 0, ok=False, planned=job.frames)
        if self.attempts[job.job_id] <= self.retries:
            log.warning("%s failed (%s); trying again (%d of %d)", job.label, error, self.attempts[job.job_id],
                        self.retries)
            self.progress.retrying()
            waiting.appendleft(job)
        else:
            log.error("%s failed: %s", job.label, error)
            self.summary.failed[job.label] = error


def run_batch(manifest: Path, config: EdgeConfig, outdir: Path, options: BatchOptions) -> BatchSummary:
    """Run the batch (see the module docstring); its summary."""
    recordings = load_manifest(manifest, config)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgeError(f"cannot create output folder {outdir}: {exc.strerror}; pick a writable -o") from None
    t0 = time.perf_counter()
    ledger = Ledger(outdir / "ledger.sqlite")
    try:
        plan = _plan(recordings, config, outdir, ledger, options.split)
        todo = [j for j in plan.jobs if not _is_done(ledger, outdir, j)]
        summary = _execute(todo, plan, config, outdir, ledger, options, recordings=len(recordings))
        summary.merged = merge(outdir, [j for j in plan.jobs if _is_done(ledger, outdir, j)])
    finally:
        ledger.close()
    summary.wall_s = time.perf_counter() - t0
    return summary


def _execute(todo: list[JobSpec], plan: _Plan, config: EdgeConfig, outdir: Path, ledger: Ledger,
             options: BatchOptions, *, recordings: int) -> BatchSummary:
    backend: Backend | None = None
    workers, threads, name = options.workers or cores(), threads_per_worker(options.workers or cores()), "none"
    if todo:
        backend, threads = make_backend(options, config)
        workers, name = backend.slots, backend.name
    summary = BatchSummary(outdir=outdir, backend=name, workers=workers, threads=threads,
                           run=ledger.begin_run(options.backend), recordings=recordings, jobs=len(plan.jobs),
                           video_s=plan.video_s, skipped=len(plan.jobs) - len(todo))
    if backend is None:
        return summary
    progress = BatchProgress(jobs=len(plan.jobs), frames=sum(j.frames for j in todo), skipped=summary.skipped,
                             enabled=options.progress)
    try:
        _Scheduler(backend, ledger, plan, outdir, run=summary.run, retries=options.retries,
                   serial=config.clips.enabled, progress=progress, summary=summary).execute(todo)
    finally:
        progress.close()
        backend.close()
    return summary
