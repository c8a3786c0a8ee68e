"""Clip recorder: on an event, pre-roll + event + post-roll from the pre-event buffer, as one MP4.

Runs beside the camera loop without ever blocking it: ``trigger`` and ``observe`` only touch memory; a
writer thread decodes, redacts, encodes, verifies and stores. Overlapping events merge into one clip,
never longer than ``clips.max_clip_s``; no frame ends up in two clips: a clip never starts at or before
the end of the previous clip of the same stream session, even when it was already handed to the writer.

The clip-seconds budget (P3, ``edge.clips.budget``) is checked when an event asks for seconds, before
anything is queued: a new clip that does not fit is dropped whole, an extension of the open clip that
does not fit is refused whole (the clip keeps what it had). Both are counted (``dropped_budget``) and
``trigger`` returns None, so the event is published without a clip reference. Only the clip is dropped:
the event and the metrics are not.

Fail closed: a clip is dropped (and counted), never written half-redacted or half-verified, when
redaction has no boxes for a frame, the writer is still busy with earlier clips, the disk is full, a
packet of its window does not decode (corrupt camera data), or the camera reconnected and the packets of
its session are gone. Counting and publishing carry on regardless, and no fault stops the writer thread.

A camera reconnect starts a new stream session (pts restart): the open clip ends with the last frame the
pipeline saw of its own session, cut from that session's packets, which the pre-event buffer keeps for
it (``PacketRing.start``); a clip never takes packets of another session.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.clips.budget import ClipBudget
from edge.clips.buffer import PacketRing, Snapshot
from edge.clips.codec import encode_clip, probe
from edge.clips.store import ClipRecord, ClipStore
from edge.clips.store import clip_id as store_clip_id
from edge.config import ClipsConfig
from edge.errors import ClipError, DecodeError
from edge.models import sha256_file
from edge.payloads import WindowMetrics, WindowSpeeds
from edge.protocol import PROTOCOL
from edge.types import Frame

log = logging.getLogger(__name__)

_PENDING_JOBS = 2  # clips waiting for the writer; more means it cannot keep up: drop (fail closed)
_CLOSE_POLL_S = 0.2  # ``close()`` checks this often that the writer thread is still alive
#: Kept beyond the pre-roll: the pipeline lags the reader by a few frames, and a near-miss is reported
#: when its encounter ends, up to a few seconds after its critical moment.
_KEEP_MARGIN_S = 8.0
WRITER_NICE = 10  # the clip writer thread's nice value (Linux): below the camera loop
RETENTION_INTERVAL_S = 600.0  # retention also runs on this timer, not only after a write


class RedactionGapError(ClipError):
    """A clip frame has no redaction boxes (the pipeline skipped it for too long)."""


@dataclass(slots=True)
class _Pending:
    clip_id: str
    start_pts: int
    end_pts: int
    cap_pts: int
    start_utc_s: float
    event_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Submitted:
    """The last clip handed to the writer in this stream session: no later clip may reach back into it."""

    clip_id: str
    start_pts: int
    end_pts: int


@dataclass(frozen=True, slots=True)
class _Job:
    clip_id: str
    snapshot: Snapshot
    start_utc_s: float  # UTC of snapshot.start_pts
    event_ids: tuple[str, ...]
    boxes: tuple[tuple[int, npt.NDArray[np.float32]], ...]


@dataclass(slots=True)
class ClipCounters:
    """What became of the clips events asked for. ``started`` and ``dropped_budget`` are decided in the
    camera loop (deterministic in replay); the others by the writer thread."""

    started: int = 0  # clips begun within the budget (each then written or dropped below)
    written: int = 0
    frames_written: int = 0
    written_s: float = 0.0  # seconds of video in the written clips (first frame to end of last frame)
    dropped_budget: int = 0  # events refused a new clip or an extension: the clip-seconds budget was spent
    dropped_busy: int = 0
    dropped_enospc: int = 0
    dropped_redaction: int = 0
    dropped_corrupt: int = 0  # a packet of the clip window did not decode (corrupt camera data)
    dropped_reconnect: int = 0  # the camera reconnected and the clip's session packets were gone
    failed: int = 0

    @property
    def dropped_faults(self) -> int:
        """Clips begun but not written: busy writer, full disk, redaction gap, corrupt data, a reconnect
        that lost the clip's packets, errors (not the budget)."""
        return (self.dropped_busy + self.dropped_enospc + self.dropped_redaction + self.dropped_corrupt
                + self.dropped_reconnect + self.failed)


#: Blurs the given boxes (N,4, source pixels) of a BGR frame in place.
Redact = Callable[[npt.NDArray[np.uint8], npt.NDArray[np.float32]], None]
#: Encrypts clip bytes into the given file for the clip id.
Encrypt = Callable[[bytes, Path, str], None]


class ClipRecorder:
    """One camera's clips. ``ring`` is the source's packet tap; ``redact`` blurs boxes in a frame."""

    def __init__(self, config: ClipsConfig, device: str, camera: str, store: ClipStore,
                 encrypt: Encrypt | None = None, redact: Redact | None = None) -> None:
        self.config = config
        self.device, self.camera = device, camera
        self.store = store
        self.ring = PacketRing(keep_s=config.pre_roll_s + _KEEP_MARGIN_S, max_bytes=config.buffer_max_bytes)
        self.counters = ClipCounters()
        limits = PROTOCOL.limits  # the config is validated against them; min() keeps that true for any caller
        # The budget starts from what the store's index says this camera kept: a restart does not reset it.
        self.budget = ClipBudget(min(config.budget_s_per_hour, limits.max_clip_s_per_hour),
                                 min(config.budget_s_per_day, limits.max_clip_s_per_day), store.kept_spans(camera))
        self._encrypt = encrypt
        self._redact = redact
        self._pending: _Pending | None = None
        self._submitted: _Submitted | None = None
        self._refusing = False  # the budget refused the last request: log once per run of refusals
        self._session = -1  # stream session of the frames observed (``Frame.session``)
        self._last_pts: int | None = None  # pts of the last frame observed in that session
        self._boxes: deque[tuple[int, npt.NDArray[np.float32]]] = deque()
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=_PENDING_JOBS)
        self._writer = threading.Thread(target=self._write_loop, name=f"clips-{camera}", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------------------ camera loop side
    def observe(self, frame: Frame, redact_boxes: npt.NDArray[np.float32]) -> None:
        """Account a processed frame: remember its redaction boxes; finish a clip whose end has passed."""
        if frame.pts is None:
            return
        if frame.session != self._session:
            self._new_session(frame.session)
        self._last_pts = frame.pts
        if self._redact is not None:
            self._boxes.append((frame.pts, redact_boxes))
            horizon = frame.pts - self.ring.pts_delta(self.config.pre_roll_s + _KEEP_MARGIN_S)
            if self._pending is not None:
                horizon = min(horizon, self._pending.start_pts)
            while self._boxes and self._boxes[0][0] < horizon:
                self._boxes.popleft()
        if self._pending is not None and frame.pts >= self._pending.end_pts:
            self._submit(self._pending, self._pending.end_pts)
            self._pending = None
            self.ring.hold(None)

    def _new_session(self, session: int) -> None:
        """The camera reconnected (pts restart): end the open clip with the last frame observed of its own
        session, cut from that session's packets (kept by the ring for it), or drop it, counted, when they
        are gone. Redaction boxes and clip boundaries of the ended session are forgotten after that."""
        ended, self._session = self._session, session
        p, self._pending = self._pending, None
        if p is not None:
            newest = self.ring.newest_pts(ended)
            end = min(p.end_pts, self._last_pts if self._last_pts is not None else p.end_pts)
            if newest is None or end < p.start_pts:
                self.counters.dropped_reconnect += 1
                log.warning("clip %s dropped: the camera reconnected and the packets of its stream session are "
                            "no longer buffered (fail closed)", p.clip_id)
            else:
                self._submit(p, min(end, newest), ended)
        self.ring.release(ended)
        self.ring.hold(None)
        self._boxes.clear()
        self._submitted = None  # pts of the new session cannot be compared with the old ones
        self._last_pts = None

    def trigger(self, event_id: str, frame: Frame, t_utc_s: float, ago_s: float = 0.0) -> str | None:
        """Record an event that happened ``ago_s`` before ``frame``, at ``t_utc_s``: start a clip or extend
        the open one. Returns the id of the clip that will hold the event, or None when there is none: the
        budget refused the seconds it needed, or the frame has no pts.

        Dropped whole, never truncated to what fits: a clip cut to the budget would show the approach
        without the conflict, or the conflict without its outcome, and still spend the seconds; and the
        event would point to a clip that does not show what the event says. So a request either gets every
        second it asks for (pre-roll, event, post-roll, up to ``max_clip_s``) or none.
        """
        if frame.pts is None:
            return None
        if frame.session != self._session:  # a caller that did not ``observe`` this frame first
            self._new_session(frame.session)
        at = frame.pts - self.ring.pts_delta(ago_s)
        pre, post = self.ring.pts_delta(self.config.pre_roll_s), self.ring.pts_delta(self.config.post_roll_s)
        cap = self.ring.pts_delta(self.config.max_clip_s) - self._frame_pts()
        p = self._pending
        if p is not None and at - pre <= p.end_pts and at <= p.cap_pts:
            end = min(max(p.end_pts, at + post), p.cap_pts)
            if end > p.end_pts:
                if not self.budget.fits(p.clip_id, *self._span(p, end)):
                    self._refuse(event_id, f"extending clip {p.clip_id}")
                    return None
                p.end_pts = end
                self.budget.reserve(p.clip_id, *self._span(p, end))
            p.event_ids.append(event_id)
            self._refusing = False
            return p.clip_id
        if p is not None:  # the event lies beyond what the open clip may cover: close it, start after it
            self._submit(p, p.end_pts)
            self._pending = None
            self.ring.hold(None)
        start = at - pre
        held = self.ring.packets()
        if held is not None and held.packets and held.packets[0].pts is not None:
            start = max(start, held.packets[0].pts)  # a pre-roll from before the first frame held starts at it
        last = self._submitted
        if last is not None:  # never reach back into a clip already written or queued: no frame twice
            start = max(start, last.end_pts + 1)
        end = min(at + post, start + cap)
        if end < start:  # all this event needs is inside the last clip already
            return last.clip_id if last is not None and last.start_pts <= at else None
        start_utc = t_utc_s - self.ring.seconds(at - start)
        clip_id = store_clip_id(self.camera, start_utc)
        pending = _Pending(clip_id, start, end, start + cap, start_utc, [event_id])
        if not self.budget.fits(clip_id, *self._span(pending, end)):
            self._refuse(event_id, "a new clip")
            return None
        self.budget.reserve(clip_id, *self._span(pending, end))
        self._pending = pending
        self.ring.hold(start)
        self.counters.started += 1
        self._refusing = False
        return clip_id

    def _span(self, p: _Pending, end_pts: int) -> tuple[float, float]:
        """UTC start and end of the frames from ``p.start_pts`` through ``end_pts`` (the last one lasts a
        frame): what the clip counts against the budget, never less than what it will hold."""
        return p.start_utc_s, p.start_utc_s + self.ring.seconds(end_pts - p.start_pts) + self._frame_s()

    def _frame_s(self) -> float:
        info = self.ring.info
        return 1.0 / info.fps if info is not None and info.fps > 0 else self.ring.seconds(self._frame_pts())

    def _refuse(self, event_id: str, what: str) -> None:
        """Count a request the budget refused; warn once per run of refusals (a faulty detector may ask
        every frame), the rest at debug level."""
        self.counters.dropped_budget += 1
        level = logging.DEBUG if self._refusing else logging.WARNING
        log.log(level, "event %s: no clip (%s): the clip budget of %g s per hour / %g s per day is spent "
                "(protocol %s clause P3); the event is still published; %d refused so far",
                event_id, what, self.budget.per_hour_s, self.budget.per_day_s, PROTOCOL.id,
                self.counters.dropped_budget)
        self._refusing = True

    def close(self, timeout_s: float = 60.0) -> bool:
        """Write the open clip with what the buffer holds, then stop the writer. Returns within about
        ``timeout_s`` in any case: True when the writer finished every queued clip, False (logged) when it
        is still busy (it is a daemon thread and stops with the process)."""
        if self._pending is not None:
            newest = self.ring.newest_pts(self._session)
            end = min(self._pending.end_pts, newest) if newest is not None else self._pending.end_pts
            self._submit(self._pending, end, self._session)
            self._pending = None
        deadline = time.monotonic() + timeout_s
        while self._writer.is_alive():
            try:
                self._jobs.put(None, timeout=max(0.0, min(_CLOSE_POLL_S, deadline - time.monotonic())))
                break
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        self._writer.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._writer.is_alive():
            log.warning("camera %s: the clip writer did not finish its %d queued clips within %.0f s; they may "
                        "be lost at exit", self.camera, self._jobs.qsize(), timeout_s)
            return False
        return True

    def _frame_pts(self) -> int:
        info = self.ring.info
        return max(1, self.ring.pts_delta(1.0 / info.fps)) if info is not None else 1

    def _submit(self, p: _Pending, end_pts: int, session: int | None = None) -> None:
        """Hand the clip to the writer. From here on no later clip of this stream session may start at or
        before ``end_pts``, whether the writer then manages to write it or not (so clip boundaries do not
        depend on the writer's timing). Its budget reservation shrinks to what is submitted and is kept
        even if the write fails: budget decisions in the camera loop never wait for, or depend on, the
        writer thread (deterministic in replay); a restart recounts from the index, where only kept clips
        are. The packets come from the stream session of the frames observed (``session``)."""
        self._submitted = _Submitted(p.clip_id, p.start_pts, end_pts)
        self.budget.reserve(p.clip_id, *self._span(p, end_pts))
        snapshot = self.ring.snapshot(p.start_pts, end_pts, self._session if session is None else session)
        if snapshot is None:
            self.counters.failed += 1
            log.warning("clip %s dropped: the pre-event buffer holds no packets of its stream session", p.clip_id)
            return
        boxes = tuple(b for b in self._boxes if p.start_pts - self._carry_pts() <= b[0] <= end_pts)
        job = _Job(p.clip_id, snapshot, p.start_utc_s, tuple(p.event_ids), boxes)
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            self.counters.dropped_busy += 1
            log.warning("clip %s dropped: the clip writer is still busy (fail closed)", p.clip_id)

    def _carry_pts(self) -> int:
        carry = self.config.redaction.carry_frames if self.config.redaction else 0
        return carry * self._frame_pts()

    # --------------------------------------------------------------------------------- writer thread
    def _write_loop(self) -> None:
        # Clips yield the CPU to the camera loop: re-encoding a 1080p clip takes several seconds of CPU,
        # and on a 2-core device it must not slow counting (metrics before clips). On Linux a thread has
        # its own nice value, and the encoder threads FFmpeg starts from here inherit it.
        with contextlib.suppress(OSError, AttributeError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
        while True:
            try:
                job = self._jobs.get(timeout=RETENTION_INTERVAL_S)
            except queue.Empty:
                self.store.enforce_retention()
                continue
            if job is None:
                return
            self._write_counted(job)

    def _write_counted(self, job: _Job) -> None:
        """Write one clip; any failure drops that clip, is counted and logged, and never ends the thread."""
        try:
            self._write(job)
        except RedactionGapError as exc:
            self.counters.dropped_redaction += 1
            log.warning("clip %s not written: %s (fail closed)", job.clip_id, exc)
        except DecodeError as exc:
            self.counters.dropped_corrupt += 1
            log.warning("clip %s dropped: %s", job.clip_id, exc)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self.counters.dropped_enospc += 1
                log.warning("clip %s dropped: disk full", job.clip_id)
            else:
                self.counters.failed += 1
                log.error("clip %s failed: %s", job.clip_id, exc)
        except (ClipError, sqlite3.Error) as exc:
            self.counters.failed += 1
            log.error("clip %s failed: %s", job.clip_id, exc)
        except Exception:  # a bug or a library error not mapped above: the next clip must still be written
            self.counters.failed += 1
            log.exception("clip %s failed with an unexpected error; the clip writer carries on", job.clip_id)

    def _frame_filter(self, job: _Job) -> Callable[[npt.NDArray[np.uint8], int], None] | None:
        if self._redact is None:
            return None
        redact = self._redact
        boxes = dict(job.boxes)
        known = sorted(boxes)
        carry = self._carry_pts()

        def apply(image: npt.NDArray[np.uint8], pts: int) -> None:
            if pts in boxes:
                redact(image, boxes[pts])
                return
            earlier = [k for k in known if k < pts]
            if not earlier or pts - earlier[-1] > carry:
                raise RedactionGapError(f"no redaction boxes for frame pts {pts} (none within {carry} pts before)")
            redact(image, boxes[earlier[-1]])

        return apply

    def _write(self, job: _Job) -> None:
        info = job.snapshot.info
        suffix = ".mp4.enc" if self._encrypt is not None else ".mp4"
        partial = self.store.partial_path(job.clip_id, suffix)
        try:
            if self._encrypt is None:
                encoded = encode_clip(job.snapshot, partial, info.fps, self._frame_filter(job))
                self._fsync(partial)
                check = probe(partial)
            else:
                buf = io.BytesIO()  # plaintext stays in RAM; only ciphertext reaches the disk
                encoded = encode_clip(job.snapshot, buf, info.fps, self._frame_filter(job))
                check = probe(buf.getvalue())
                self._encrypt(buf.getvalue(), partial, job.clip_id)
                self._fsync(partial)
            if check.stream_types != ("video",) or check.frames != encoded.frames:
                raise ClipError(f"probe of clip {job.clip_id} found streams {check.stream_types} and "
                                f"{check.frames} frames, expected (video,) and {encoded.frames}")
            partial.chmod(0o600)
            start_utc_s, end_utc_s = self._real_span(job, encoded.first_pts, encoded.last_pts)
            record = ClipRecord(
                id=job.clip_id, file=f"{job.clip_id}{suffix}", camera=self.camera,
                start_utc_s=start_utc_s, end_utc_s=end_utc_s, event_ids=job.event_ids,
                frames=encoded.frames, bytes=partial.stat().st_size, sha256=sha256_file(partial),
                encrypted=self._encrypt is not None, created_s=time.time(),
            )
            self.store.commit(partial, record)
        except BaseException:
            self.store.discard(partial)
            raise
        self.counters.written += 1
        self.counters.frames_written += encoded.frames
        self.counters.written_s += end_utc_s - start_utc_s
        self.store.enforce_retention()
        log.info("clip %s: %d frames, events %s", job.clip_id, encoded.frames, ", ".join(job.event_ids))

    @staticmethod
    def _real_span(job: _Job, first_pts: int | None, last_pts: int | None) -> tuple[float, float]:
        """UTC from the clip's first frame to the end of its last (a frame lasts 1/fps): the seconds it
        really holds, which the index keeps and the budget counts after a restart. Less than what was
        reserved when the buffer no longer held the start of the window."""
        info = job.snapshot.info
        tb = Fraction(info.time_base_num, info.time_base_den)
        first = job.snapshot.start_pts if first_pts is None else first_pts
        last = job.snapshot.end_pts if last_pts is None else last_pts
        start = job.start_utc_s + float((first - job.snapshot.start_pts) * tb)
        frame_s = 1.0 / info.fps if info.fps > 0 else 0.0
        return start, job.start_utc_s + float((last - job.snapshot.start_pts) * tb) + frame_s

    @staticmethod
    def _fsync(path: Path) -> None:
        with path.open("rb+") as f:
            os.fsync(f.fileno())


def build_recorder(config: ClipsConfig, device: str, camera: str, store_dir: Path | None = None) -> ClipRecorder:
    """A recorder with its store, redaction and encryption as the config says (``store_dir`` overrides)."""
    from edge.clips import crypto
    from edge.clips.redact import blur_regions

    store = ClipStore(store_dir or config.store_dir, config.retention_days, config.max_store_bytes, camera=camera)
    store.enforce_retention()
    encrypt: Encrypt | None = None
    if config.encryption is not None:
        public_key = crypto.load_public_key(config.encryption.public_key_file)

        def encrypt(data: bytes, dst: Path, clip_id: str) -> None:
            crypto.encrypt_file(io.BytesIO(data), dst, public_key, crypto.clip_context(device, clip_id))

    redact: Redact | None = None
    if config.redaction is not None:
        pad, cells = config.redaction.pad_frac, config.redaction.blur_cells

        def redact(image: npt.NDArray[np.uint8], boxes: npt.NDArray[np.float32]) -> None:
            blur_regions(image, boxes, pad, cells=cells)

    return ClipRecorder(config, device, camera, store, encrypt=encrypt, redact=redact)


class WindowClipTally:
    """Clip counts per metrics window (``WindowHealth.clips_started`` / ``clips_dropped_budget``).

    Counts only what the camera loop decides (clips begun, requests the budget refused), never what the
    writer thread does later, so a replay's metrics stay byte-identical. A window closes when the first
    frame of the next one is analysed, before that frame's events ask for clips: call ``before_frame``
    just before ``CameraPipeline.analyse`` and pass the windows it closed to ``stamp``; they get the
    counts of the frames before this one. ``stamp(..., final=True)`` for the partial window of
    ``finish``. Without a recorder (clips off) records pass unchanged.
    """

    def __init__(self, recorder: ClipRecorder | None) -> None:
        self._counters = recorder.counters if recorder is not None else None
        self._base = (0, 0)
        self._mark = (0, 0)

    def _now(self) -> tuple[int, int]:
        c = self._counters
        return (c.started, c.dropped_budget) if c is not None else (0, 0)

    def before_frame(self) -> None:
        self._mark = self._now()

    def stamp(self, records: list[WindowMetrics | WindowSpeeds], *, final: bool = False,
              ) -> list[WindowMetrics | WindowSpeeds]:
        if self._counters is None:
            return records
        out: list[WindowMetrics | WindowSpeeds] = []
        for rec in records:
            if isinstance(rec, WindowMetrics):
                upto = self._now() if final else self._mark
                started, refused = upto[0] - self._base[0], upto[1] - self._base[1]
                self._base = upto
                rec = rec.model_copy(update={"health": rec.health.model_copy(
                    update={"clips_started": started, "clips_dropped_budget": refused})})
            out.append(rec)
        return out
