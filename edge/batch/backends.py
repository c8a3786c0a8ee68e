"""Where batch jobs run, behind one small interface (:class:`Backend`): a local process pool (the default: no
cluster, no extra service) or Ray Core (``edge.batch.ray_backend``).

Both keep one worker per slot that loads the model once (``edge.batch.job.JobWorker``) and runs a job at a
time; the driver hands a job to a free worker, and collects what comes back: :class:`~edge.batch.job.Progress`
while a job runs, one :class:`~edge.batch.job.Outcome` when it ends. A worker that dies (killed, out of
memory) fails its job, and a new worker takes its place.

The local pool is a handful of ``multiprocessing`` processes (spawned: nothing of the driver's threads or
open files is inherited), each with its own job queue, so the driver always knows which job a dead worker
held. The model is loaded once per process, when it starts (the process's initializer). On Linux a worker
dies with its driver (``PR_SET_PDEATHSIG``): a killed batch leaves no orphan decoding on.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import multiprocessing
import os
import queue
import signal
import sys
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from typing import Final, Protocol

from edge.batch.job import JobSpec, JobWorker, Outcome, Progress
from edge.config import EdgeConfig
from edge.errors import EdgeError

#: A worker that has not loaded its model by then is reported and the batch stops.
WORKER_START_TIMEOUT_S: Final = 120.0
_PR_SET_PDEATHSIG: Final = 1


class Backend(Protocol):
    """Runs jobs on ``slots`` workers, one job per worker at a time."""

    @property
    def slots(self) -> int: ...

    @property
    def name(self) -> str:
        """E.g. ``local (2 processes)``, for the summary."""
        ...

    def submit(self, job: JobSpec) -> None:
        """Start ``job`` on a free worker (the caller keeps no more than ``slots`` jobs running)."""
        ...

    def poll(self, timeout_s: float) -> list[Outcome | Progress]:
        """What happened since the last call, waiting up to ``timeout_s`` for something to happen."""
        ...

    def close(self) -> None:
        """Stop every worker (a running job is abandoned)."""
        ...


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """onnxruntime intra-op threads per worker: the cores shared out, at least one each."""
    return max(1, cores() // max(1, workers))


def _die_with_parent() -> None:
    """Linux: this process gets SIGKILL when its parent dies (a killed batch leaves no orphan workers)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True, slots=True)
class _Started:
    slot: int
    error: str | None = None


def serve(slot: int, config: EdgeConfig, threads: int, inbox: Queue[JobSpec | None],
          outbox: Queue[Outcome | Progress | _Started]) -> None:
    """A local worker process: load the model once, then run the jobs of ``inbox`` until None."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the driver, which stops the workers
    try:
        worker = JobWorker(config, threads)
    except Exception as exc:
        outbox.put(_Started(slot, f"{type(exc).__name__}: {exc}"))
        return
    outbox.put(_Started(slot))
    while (job := inbox.get()) is not None:
        outbox.put(worker.outcome(job, functools.partial(_report, outbox, job.job_id)))


def _report(outbox: Queue[Outcome | Progress | _Started], job_id: str, frames: int) -> None:
    outbox.put(Progress(job_id, frames))


class LocalBackend:
    """``workers`` local processes, each with ``threads`` onnxruntime threads (see the module docstring)."""

    def __init__(self, config: EdgeConfig, workers: int, threads: int, *,
                 start_timeout_s: float = WORKER_START_TIMEOUT_S) -> None:
        self._ctx = multiprocessing.get_context("spawn")
        self._config, self._threads = config, threads
        self._outbox: Queue[Outcome | Progress | _Started] = self._ctx.Queue()
        self._procs: list[BaseProcess] = []
        self._inboxes: list[Queue[JobSpec | None]] = []
        self._busy: list[str | None] = [None] * workers
        self._held: list[Outcome | Progress] = []  # what came while a worker was being (re)started
        self._start_timeout_s = start_timeout_s
        for slot in range(workers):
            self._inboxes.append(self._ctx.Queue())
            self._procs.append(self._spawn(slot))
        self._wait_started(set(range(workers)))

    @property
    def slots(self) -> int:
        return len(self._procs)

    @property
    def name(self) -> str:
        return f"local ({self.slots} processes x {self._threads} onnxruntime threads)"

    def _spawn(self, slot: int) -> BaseProcess:
        proc = self._ctx.Process(target=serve, name=f"edge-batch-{slot}", daemon=True,
                                 args=(slot, self._config, self._threads, self._inboxes[slot], self._outbox))
        proc.start()
        return proc

    def _wait_started(self, slots: set[int]) -> None:
        deadline = time.monotonic() + self._start_timeout_s
        while slots:
            try:
                msg = self._outbox.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                self.close()
                raise EdgeError(
                    f"{len(slots)} batch worker(s) did not start within {self._start_timeout_s:g} s") from None
            if not isinstance(msg, _Started):
                self._held.append(msg)
                continue
            if msg.error is not None:
                self.close()
                raise EdgeError(f"a batch worker could not start: {msg.error}")
            slots.discard(msg.slot)

    def submit(self, job: JobSpec) -> None:
        slot = self._busy.index(None)  # ValueError: more jobs than slots, a caller's bug
        self._busy[slot] = job.job_id
        self._inboxes[slot].put(job)

    def poll(self, timeout_s: float) -> list[Outcome | Progress]:
        got, self._held = self._held, []
        with contextlib.suppress(queue.Empty):
            msg = self._outbox.get(timeout=0 if got else timeout_s)
            while True:
                if isinstance(msg, Outcome) and msg.job_id in self._busy:
                    self._busy[self._busy.index(msg.job_id)] = None
                if not isinstance(msg, _Started):
                    got.append(msg)
                msg = self._outbox.get_nowait()
        return got + self._replace_dead()

    def _replace_dead(self) -> list[Outcome | Progress]:
        """A worker that died fails its job; a new one takes its slot."""
        failed: list[Outcome | Progress] = []
        for slot, proc in enumerate(self._procs):
            if proc.is_alive():
                continue
            job_id, self._busy[slot] = self._busy[slot], None
            if job_id is not None:
                failed.append(Outcome(job_id, error=f"the worker process died (exit code {proc.exitcode})"))
            self._inboxes[slot] = self._ctx.Queue()
            self._procs[slot] = self._spawn(slot)
            self._wait_started({slot})
        return failed

    def close(self) -> None:
        for slot, proc in enumerate(self._procs):
            if not proc.is_alive():
                continue
            if self._busy[slot] is None:
                with contextlib.suppress(Exception):
                    self._inboxes[slot].put(None)  # an idle worker ends by itself
            else:
                proc.terminate()  # a running job is abandoned
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
        self._procs = []
