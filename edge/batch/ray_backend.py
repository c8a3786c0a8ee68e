"""The Ray Core backend (``pip install edge[ray]``, ``edge batch --backend ray``): one actor per worker, which
loads the model once and runs one job at a time.

``RAY_ADDRESS`` attaches to a running cluster (``ray start --head`` on one machine, ``ray start --address``
on the others; every machine needs ``edge`` installed and the recordings at the same path, e.g. on shared
storage). Without it, ``ray.init()`` starts a local Ray on this machine with as many CPUs as the workers
use, no dashboard. Records come back to the driver in each job's result, so the batch folder need only be
on the driver's machine (the clip store excepted: with clips on, workers write into ``OUTDIR/clips``).

Not Ray Data: a job is a whole recording or segment, because tracker state is per recording; a per-frame
dataset model would cut every road user's track at every block boundary.

Start-up is bounded: Ray's own connection timeouts bound ``ray.init``, and the actors must have loaded the
model within ``start_timeout_s``.
"""

from __future__ import annotations

import os
import time
from typing import Any, Final

from edge.batch.job import JobSpec, JobWorker, Outcome, Progress
from edge.config import EdgeConfig
from edge.errors import EdgeError

RAY_START_TIMEOUT_S: Final = 60.0
#: How often the driver asks running actors for their progress.
_PROGRESS_POLL_S: Final = 1.0


class RayWorker:
    """The actor: a :class:`JobWorker` and the progress of its running job (read from a second thread)."""

    def __init__(self, config: EdgeConfig, threads: int) -> None:
        self._worker = JobWorker(config, threads)
        self._progress: tuple[str, int] | None = None

    def ready(self) -> str:
        return self._worker.name

    def run(self, job: JobSpec) -> Outcome:
        self._progress = (job.job_id, 0)

        def report(frames: int) -> None:
            self._progress = (job.job_id, frames)

        try:
            return self._worker.outcome(job, report)
        finally:
            self._progress = None

    def progress(self) -> tuple[str, int] | None:
        return self._progress


class RayBackend:
    """``workers`` Ray actors of ``threads`` CPUs each (see the module docstring)."""

    def __init__(self, config: EdgeConfig, workers: int, threads: int, *,
                 start_timeout_s: float = RAY_START_TIMEOUT_S) -> None:
        try:
            import ray
        except ImportError:
            raise EdgeError("--backend ray needs Ray: pip install 'edge[ray]'") from None
        self._ray = ray
        self._address = os.environ.get("RAY_ADDRESS") or None
        self._started_ray = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = ({"address": self._address} if self._address else
                                      {"num_cpus": workers * threads, "include_dashboard": False})
            ray.init(log_to_driver=False, configure_logging=False, **kwargs)  # on the main thread: Ray needs it
            self._started_ray = True
        self._actor = ray.remote(RayWorker).options(num_cpus=threads, max_concurrency=2)  # run() + progress()
        self._config, self._threads, self._timeout_s = config, threads, start_timeout_s
        self._actors: list[Any] = [self._new_actor() for _ in range(workers)]
        self._wait_ready(self._actors)
        self._busy: dict[Any, tuple[int, str]] = {}  # the ObjectRef of a running job -> (slot, job id)
        self._last_progress = 0.0

    @property
    def slots(self) -> int:
        return len(self._actors)

    @property
    def name(self) -> str:
        where = f"cluster {self._address}" if self._address else "local Ray"
        return f"ray ({where}: {self.slots} actors x {self._threads} CPUs)"

    def _new_actor(self) -> Any:
        return self._actor.remote(self._config, self._threads)

    def _wait_ready(self, actors: list[Any]) -> None:
        ray = self._ray
        try:
            ray.get([a.ready.remote() for a in actors], timeout=self._timeout_s)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise EdgeError(f"the Ray workers did not start within {self._timeout_s:g} s") from None
        except ray.exceptions.RayError as exc:
            self.close()
            raise EdgeError(f"a Ray worker could not start: {str(exc).splitlines()[0]}") from None

    def submit(self, job: JobSpec) -> None:
        busy = {slot for slot, _ in self._busy.values()}
        slot = next(i for i in range(self.slots) if i not in busy)  # StopIteration: a caller's bug
        self._busy[self._actors[slot].run.remote(job)] = (slot, job.job_id)

    def poll(self, timeout_s: float) -> list[Outcome | Progress]:
        ray = self._ray
        if not self._busy:
            return []
        ready, _ = ray.wait(list(self._busy), num_returns=len(self._busy), timeout=timeout_s)
        got: list[Outcome | Progress] = [self._outcome(ref) for ref in ready]
        return got + self._progress()

    def _outcome(self, ref: Any) -> Outcome:
        ray = self._ray
        slot, job_id = self._busy.pop(ref)
        try:
            outcome: Outcome = ray.get(ref)
            return outcome
        except ray.exceptions.RayActorError as exc:  # the actor died: a new one takes its slot
            self._actors[slot] = self._new_actor()
            self._wait_ready([self._actors[slot]])
            return Outcome(job_id, error=f"the Ray worker died: {str(exc).splitlines()[0]}")
        except ray.exceptions.RayError as exc:
            return Outcome(job_id, error=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")

    def _progress(self) -> list[Outcome | Progress]:
        ray = self._ray
        if not self._busy or time.monotonic() - self._last_progress < _PROGRESS_POLL_S:
            return []
        self._last_progress = time.monotonic()
        refs = [self._actors[slot].progress.remote() for slot, _ in self._busy.values()]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0.5)
        reports = []
        for ref in ready:
            try:
                reports.append(ray.get(ref))
            except ray.exceptions.RayError:
                continue  # the run() call reports the failure
        return [Progress(job_id, frames) for job_id, frames in filter(None, reports)]

    def close(self) -> None:
        ray = self._ray
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []
        if self._started_ray:
            ray.shutdown()
