"""Clip recorder: on an event, pre-roll + event + post-roll from the pre-event buffer, as one MP4.

Runs beside the camera loop without ever blocking it: ``trigger`` and ``observe`` only touch memory; a
writer thread decodes, redacts, encodes, verifies and stores. Overlapping events merge into one clip,
never longer than ``clips.max_clip_s``; no frame ends up in two clips.

Fail closed: a clip is dropped (and counted), never written half-redacted or half-verified, when
redaction has no boxes for a frame, the writer is still busy with earlier clips, or the disk is full.
Counting and publishing carry on regardless.
"""

from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.clips.buffer import PacketRing, Snapshot
from edge.clips.codec import encode_clip, probe
from edge.clips.store import ClipRecord, ClipStore
from edge.config import ClipsConfig
from edge.errors import ClipError
from edge.models import sha256_file
from edge.types import Frame

log = logging.getLogger(__name__)

_PENDING_JOBS = 2  # clips waiting for the writer; more means it cannot keep up: drop (fail closed)
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
class _Job:
    clip_id: str
    snapshot: Snapshot
    start_utc_s: float
    end_utc_s: float
    event_ids: tuple[str, ...]
    boxes: tuple[tuple[int, npt.NDArray[np.float32]], ...]


@dataclass(slots=True)
class ClipCounters:
    written: int = 0
    frames_written: int = 0
    dropped_busy: int = 0
    dropped_enospc: int = 0
    dropped_redaction: int = 0
    failed: int = 0


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
        self._encrypt = encrypt
        self._redact = redact
        self._pending: _Pending | None = None
        self._session = -1
        self._boxes: deque[tuple[int, npt.NDArray[np.float32]]] = deque()
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=_PENDING_JOBS)
        self._writer = threading.Thread(target=self._write_loop, name=f"clips-{camera}", daemon=True)
        self._writer.start()

    # ------------------------------------------------------------------------------ camera loop side
    def observe(self, frame: Frame, redact_boxes: npt.NDArray[np.float32]) -> None:
        """Account a processed frame: remember its redaction boxes; finish a clip whose end has passed."""
        if frame.pts is None:
            return
        if self.ring.session != self._session:  # a new stream session: pts restart, old clip is void
            self._session = self.ring.session
            self._boxes.clear()
            if self._pending is not None:
                self._submit(self._pending, self._pending.end_pts)
                self._pending = None
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

    def trigger(self, event_id: str, frame: Frame, t_utc_s: float, ago_s: float = 0.0) -> str | None:
        """Record an event that happened ``ago_s`` before ``frame``, at ``t_utc_s``: start a clip or extend
        the open one. Returns the clip id."""
        if frame.pts is None:
            return None
        at = frame.pts - self.ring.pts_delta(ago_s)
        pre, post = self.ring.pts_delta(self.config.pre_roll_s), self.ring.pts_delta(self.config.post_roll_s)
        cap = self.ring.pts_delta(self.config.max_clip_s) - self._frame_pts()
        p = self._pending
        if p is not None and at - pre <= p.end_pts and at <= p.cap_pts:
            p.end_pts = min(max(p.end_pts, at + post), p.cap_pts)
            p.event_ids.append(event_id)
            return p.clip_id
        start = at - pre
        if p is not None:  # the event lies beyond what the open clip may cover: close it, start after it
            self._submit(p, p.end_pts)
            start = max(start, p.end_pts + self._frame_pts())
        start_utc = t_utc_s - self.ring.seconds(at - start)
        clip_id = f"{self.camera}_{datetime.fromtimestamp(start_utc, UTC).strftime('%Y%m%dT%H%M%S_%f')[:-3]}Z"
        self._pending = _Pending(clip_id, start, min(at + post, start + cap), start + cap, start_utc, [event_id])
        self.ring.hold(start)
        return clip_id

    def close(self, timeout_s: float = 60.0) -> None:
        """Write the open clip with what the buffer holds, then stop the writer."""
        if self._pending is not None:
            newest = self.ring.newest_pts()
            end = min(self._pending.end_pts, newest) if newest is not None else self._pending.end_pts
            self._submit(self._pending, end)
            self._pending = None
        self._jobs.put(None)
        self._writer.join(timeout=timeout_s)

    def _frame_pts(self) -> int:
        info = self.ring.info
        return max(1, self.ring.pts_delta(1.0 / info.fps)) if info is not None else 1

    def _submit(self, p: _Pending, end_pts: int) -> None:
        snapshot = self.ring.snapshot(p.start_pts, end_pts)
        if snapshot is None:
            self.counters.failed += 1
            return
        boxes = tuple(b for b in self._boxes if p.start_pts - self._carry_pts() <= b[0] <= end_pts)
        job = _Job(p.clip_id, snapshot, p.start_utc_s, p.start_utc_s + self.ring.seconds(end_pts - p.start_pts),
                   tuple(p.event_ids), boxes)
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
            try:
                self._write(job)
            except RedactionGapError as exc:
                self.counters.dropped_redaction += 1
                log.warning("clip %s not written: %s (fail closed)", job.clip_id, exc)
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    self.counters.dropped_enospc += 1
                    log.warning("clip %s dropped: disk full", job.clip_id)
                else:
                    self.counters.failed += 1
                    log.error("clip %s failed: %s", job.clip_id, exc)
            except ClipError as exc:
                self.counters.failed += 1
                log.error("clip %s failed: %s", job.clip_id, exc)

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
            record = ClipRecord(
                id=job.clip_id, file=f"{job.clip_id}{suffix}", camera=self.camera,
                start_utc_s=job.start_utc_s, end_utc_s=job.end_utc_s, event_ids=job.event_ids,
                frames=encoded.frames, bytes=partial.stat().st_size, sha256=sha256_file(partial),
                encrypted=self._encrypt is not None, created_s=time.time(),
            )
            self.store.commit(partial, record)
        except BaseException:
            self.store.discard(partial)
            raise
        self.counters.written += 1
        self.counters.frames_written += encoded.frames
        self.store.enforce_retention()
        log.info("clip %s: %d frames, events %s", job.clip_id, encoded.frames, ", ".join(job.event_ids))

    @staticmethod
    def _fsync(path: Path) -> None:
        with path.open("rb+") as f:
            os.fsync(f.fileno())


def build_recorder(config: ClipsConfig, device: str, camera: str, store_dir: Path | None = None) -> ClipRecorder:
    """A recorder with its store, redaction and encryption as the config says (``store_dir`` overrides)."""
    from edge.clips import crypto
    from edge.clips.redact import blur_regions

    store = ClipStore(store_dir or config.store_dir, config.retention_days, config.max_store_bytes)
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
