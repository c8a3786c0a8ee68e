"""Video sources: recorded files and live cameras, as iterators of ``Frame``.

This is the only module of the package that talks to the video library (OpenCV ``VideoCapture`` with
the FFmpeg backend; V4L2 for USB cameras). Only the video stream is ever opened: audio stays disabled
(``CAP_PROP_AUDIO_STREAM`` is left at its default of -1 and no audio parameters are passed).

``FileSource`` replays a file deterministically: frame ``i`` has media time ``t_s = i / fps`` and no wall
clock. ``LiveSource`` reads an RTSP (or other FFmpeg network) URL or a USB device in a background thread
that keeps only the newest frame, detects stalls by frame age, and reopens the capture with capped
exponential backoff and full jitter forever, until ``close()``. Live frames carry ``t_s =
time.monotonic()`` and ``wall_time_s = time.time()`` at capture.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy as np
import numpy.typing as npt

from edge.config import FileSourceConfig, RtspSourceConfig, UsbSourceConfig
from edge.errors import SourceError
from edge.types import Frame

__all__ = [
    "FileSource",
    "FrameSource",
    "LiveSource",
    "SourceState",
    "backoff_delay_s",
    "open_source",
]

logger = logging.getLogger(__name__)

#: Frame rate assumed when a file's container reports none (0 or NaN).
FALLBACK_FPS: Final = 25.0
#: FOURCCs (first four letters of FFmpeg's codec name) of FFmpeg's "tty" family, which renders any
#: .txt/.nfo/.ans text file as ANSI-art frames. A text file is never camera footage: refuse it.
_TEXT_AS_VIDEO_FOURCCS: Final = frozenset({"ansi", "bint", "xbin"})
#: ``LiveSource.__iter__`` wakes up this often to notice ``close()`` while no frame arrives.
_ITER_POLL_S: Final = 0.5
#: Extra time ``close()`` waits for the reader thread beyond the longest blocking OpenCV call.
_JOIN_GRACE_S: Final = 1.0


class FrameSource(Protocol):
    """What the pipeline needs from a source: frames in order, and a way to stop."""

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


def _to_bgr(image: object) -> npt.NDArray[np.uint8]:
    """OpenCV's ``MatLike`` as a plain uint8 array (no copy when it already is one)."""
    return np.asarray(image, dtype=np.uint8)


def _fourcc(cap: cv2.VideoCapture) -> str:
    """The capture's codec as four characters (OpenCV packs them little-endian into a float)."""
    value = cap.get(cv2.CAP_PROP_FOURCC)
    if not math.isfinite(value) or not 0 <= value < 2**32:
        return ""
    return int(value).to_bytes(4, "little", signed=False).decode("latin-1")


# ------------------------------------------------------------------------------------------------ file
class FileSource:
    """A recorded video file, decoded frame by frame until the end of the file.

    Iteration is single pass: a second ``for`` loop continues where the first one stopped. Frames are
    BGR uint8 ``HxWx3``; ``Frame.t_s = index / fps`` (media time, deterministic) and
    ``Frame.wall_time_s is None``.

    Raises ``SourceError`` at construction when the file is missing, cannot be opened, or has no
    decodable video frame.
    """

    def __init__(self, path: Path) -> None:
        self._path = Path(path)
        if not self._path.is_file():
            what = "is not a file" if self._path.exists() else "does not exist"
            raise SourceError(
                f"video file {self._path} {what}; check the path (relative paths are resolved from "
                f"the current directory {Path.cwd()})"
            )
        cap = cv2.VideoCapture(str(self._path), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot open {self._path} as a video: FFmpeg does not recognise its format; check that "
                f"it is a video file (`ffprobe {self._path}` should list a video stream)"
            )
        fourcc = _fourcc(cap)
        if fourcc in _TEXT_AS_VIDEO_FOURCCS:
            cap.release()
            raise SourceError(
                f"{self._path} is a text file (FFmpeg would render it as {fourcc!r} text art), not a "
                f"video; check the path (`ffprobe {self._path}` shows its format)"
            )
        ok, first = cap.read()
        if not ok or first is None:
            cap.release()
            raise SourceError(
                f"{self._path} has no decodable video frame (no video stream, an unsupported codec, or a "
                f"truncated file); check it with `ffprobe {self._path}` or re-encode it to H.264"
            )
        self._cap: cv2.VideoCapture | None = cap
        self._pending: npt.NDArray[np.uint8] | None = _to_bgr(first)
        self._next_index = 0
        self._audio_stream_index = int(cap.get(cv2.CAP_PROP_AUDIO_STREAM))
        height, width = self._pending.shape[:2]
        self._size = (int(width), int(height))

        fps = cap.get(cv2.CAP_PROP_FPS)
        if not math.isfinite(fps) or fps <= 0:
            logger.warning(
                "%s reports no frame rate (%r); assuming %.1f fps for media time", self._path, fps,
                FALLBACK_FPS,
            )
            fps = FALLBACK_FPS
        self._fps = float(fps)
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self._frame_count = int(count) if math.isfinite(count) and count > 0 else None
        logger.info(
            "opened %s: %s %dx%d, %.3f fps, %s frames", self._path, fourcc.strip("\x00") or "?", width,
            height, self._fps, self._frame_count if self._frame_count is not None else "unknown",
        )

    @property
    def path(self) -> Path:
        return self._path

    @property
    def fps(self) -> float:
        """Frame rate from the container, or ``FALLBACK_FPS`` when it reports none."""
        return self._fps

    @property
    def frame_count(self) -> int | None:
        """Frame count from the container (an estimate for some formats), or None when unknown."""
        return self._frame_count

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` in pixels, from the first decoded frame."""
        return self._size

    @property
    def audio_stream_index(self) -> int:
        """``CAP_PROP_AUDIO_STREAM`` of the capture: -1 means audio is not opened (always the case here)."""
        return self._audio_stream_index

    def __iter__(self) -> Iterator[Frame]:
        while self._cap is not None:
            if self._pending is not None:
                image, self._pending = self._pending, None
            else:
                ok, raw = self._cap.read()
                if not ok or raw is None:
                    logger.info("end of %s after %d frames", self._path, self._next_index)
                    return
                image = _to_bgr(raw)
            index = self._next_index
            self._next_index += 1
            yield Frame(image=image, index=index, t_s=index / self._fps, wall_time_s=None)

    def close(self) -> None:
        """Release the capture; idempotent. Iteration stops afterwards."""
        if self._cap is not None:
            self._cap.release()
            self._cap = None
            self._pending = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------ live
class SourceState(Enum):
    """Life cycle of a ``LiveSource``.

    CONNECTING until the first frame ever arrives, STREAMING while frames arrive, RECONNECTING after a
    read failure or stall (the capture has been released and is being reopened), CLOSED after ``close()``.
    """

    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


def backoff_delay_s(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before reopen attempt number ``attempt`` (1 = the first retry after a failure).

    Capped exponential backoff with full jitter: uniform in ``[0, min(max_s, min_s * 2**(attempt-1))]``.
    Full jitter spreads the reconnects of many cameras (or devices) after a shared outage.
    """
    ceiling = min(max_s, min_s * 2.0 ** min(max(attempt - 1, 0), 62))
    return rng.uniform(0.0, ceiling)


def _redact(target: str | int) -> str:
    """The target for logs and thread names, with any password in a URL replaced by ``***``."""
    if isinstance(target, int):
        return f"/dev/video{target}"
    parts = urlsplit(target)
    if parts.password is None:
        return target
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


class LiveSource:
    """A live camera (RTSP/network URL or USB device index) read by a background thread.

    The reader thread keeps only the newest frame (a one-slot buffer): a frame overwritten before
    ``read()`` took it counts in ``dropped_frames``, so a slow consumer always gets fresh frames instead
    of a growing backlog. ``Frame.index`` counts every frame captured since construction (gaps mean
    drops) and keeps increasing across reconnects.

    A read failure (``ok=False``) or a stall (no new frame for ``read_timeout_s``, judged by frame age
    because OpenCV returns a few decoder-buffered frames with ``ok=True`` after the read timeout) releases
    the capture, which is never reused, and reopens a new one after ``backoff_delay_s``. It retries
    forever and never raises for a camera fault; watch ``state``, ``last_frame_age_s`` and the counters.

    The open and read timeouts are passed to OpenCV as open-time parameters: ``cap.set()`` after opening
    has no effect on FFmpeg's interrupt callback, whose default is 30 s. The V4L2 backend may ignore them
    (it has its own select timeout); the frame-age check still applies when its read returns.
    """

    def __init__(
        self,
        target: str | int,
        *,
        open_timeout_s: float = 5.0,
        read_timeout_s: float = 5.0,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        for name, value in (
            ("open_timeout_s", open_timeout_s),
            ("read_timeout_s", read_timeout_s),
            ("reconnect_min_s", reconnect_min_s),
            ("reconnect_max_s", reconnect_max_s),
        ):
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
        if reconnect_min_s > reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({reconnect_min_s}) must not exceed reconnect_max_s ({reconnect_max_s}); "
                "raise reconnect_max_s or lower reconnect_min_s"
            )
        if isinstance(target, int) and target < 0:
            raise ValueError(f"USB device index must be >= 0, got {target}")
        self._target = target
        self._label = _redact(target)
        self._open_timeout_s = open_timeout_s
        self._read_timeout_s = read_timeout_s
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._rng = rng if rng is not None else random.Random()

        self._stop = threading.Event()
        self._cond = threading.Condition()  # guards every field below
        self._state = SourceState.CONNECTING
        self._latest: Frame | None = None
        self._next_index = 0
        self._frames_read = 0
        self._dropped_frames = 0
        self._reconnects = 0
        self._stalls = 0
        self._open_failures = 0
        self._last_frame_mono: float | None = None
        self._fps: float | None = None

        logger.info("camera %s: connecting", self._label)
        self._thread = threading.Thread(target=self._run, name=f"edge-source {self._label}", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, cfg: RtspSourceConfig | UsbSourceConfig, rng: random.Random | None = None) -> Self:
        target: str | int = cfg.url if isinstance(cfg, RtspSourceConfig) else cfg.device_index
        return cls(
            target,
            open_timeout_s=cfg.open_timeout_s,
            read_timeout_s=cfg.read_timeout_s,
            reconnect_min_s=cfg.reconnect_min_s,
            reconnect_max_s=cfg.reconnect_max_s,
            rng=rng,
        )

    # ---------------------------------------------------------------------------------- public state
    @property
    def target(self) -> str:
        """The camera, for logs: the URL with any password redacted, or ``/dev/videoN``."""
        return self._label

    @property
    def state(self) -> SourceState:
        with self._cond:
            return self._state

    @property
    def frames_read(self) -> int:
        """Frames captured since construction (including dropped ones)."""
        with self._cond:
            return self._frames_read

    @property
    def dropped_frames(self) -> int:
        """Frames overwritten in the one-slot buffer before ``read()`` took them."""
        with self._cond:
            return self._dropped_frames

    @property
    def reconnects(self) -> int:
        """Times streaming resumed (first new frame) after the capture was lost."""
        with self._cond:
            return self._reconnects

    @property
    def stalls(self) -> int:
        """Times no new frame arrived for ``read_timeout_s`` while streaming."""
        with self._cond:
            return self._stalls

    @property
    def open_failures(self) -> int:
        """Open attempts that failed (camera absent, refused, or open timeout)."""
        with self._cond:
            return self._open_failures

    @property
    def last_frame_age_s(self) -> float | None:
        """Seconds since the newest frame was captured (monotonic clock), or None before the first."""
        with self._cond:
            if self._last_frame_mono is None:
                return None
            return time.monotonic() - self._last_frame_mono

    @property
    def fps(self) -> float | None:
        """Nominal frame rate the stream reported at the last open, or None before a successful open."""
        with self._cond:
            return self._fps

    # ------------------------------------------------------------------------------------- consuming
    def read(self, timeout_s: float) -> Frame | None:
        """The newest frame not returned before, waiting up to ``timeout_s``; None on timeout or closed."""
        deadline = time.monotonic() + max(timeout_s, 0.0)
        with self._cond:
            while self._latest is None:
                remaining = deadline - time.monotonic()
                if self._state is SourceState.CLOSED or remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._latest = self._latest, None
            return frame

    def __iter__(self) -> Iterator[Frame]:
        """Frames as they come; blocks while the camera is offline and ends after ``close()``."""
        while True:
            frame = self.read(_ITER_POLL_S)
            if frame is not None:
                yield frame
            elif self.state is SourceState.CLOSED:
                return

    def close(self) -> None:
        """Stop the reader thread and release the capture; idempotent.

        Waits at most the longest blocking OpenCV call (open or read timeout) plus a grace period; a
        thread still blocked after that is a daemon that releases its capture when the call returns.
        """
        with self._cond:
            if self._state is SourceState.CLOSED:
                return
            self._state = SourceState.CLOSED
            self._latest = None
            self._stop.set()
            self._cond.notify_all()
        join_s = max(self._open_timeout_s, self._read_timeout_s) + _JOIN_GRACE_S
        self._thread.join(timeout=join_s)
        if self._thread.is_alive():
            logger.warning(
                "camera %s: reader still blocked in OpenCV after %.1f s; it will release the capture "
                "when the call returns", self._label, join_s,
            )
        logger.info("camera %s: closed", self._label)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------- reader thread
    def _set_state(self, new: SourceState, why: str) -> None:
        """Change state (never out of CLOSED) and log the transition. Caller holds ``_cond``."""
        old = self._state
        if old is new or old is SourceState.CLOSED:
            return
        self._state = new
        level = logging.WARNING if new is SourceState.RECONNECTING else logging.INFO
        logger.log(level, "camera %s: %s -> %s (%s)", self._label, old.value, new.value, why)

    def _open(self) -> cv2.VideoCapture | None:
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, max(1, round(self._open_timeout_s * 1000)),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(1, round(self._read_timeout_s * 1000)),
        ]
        started = time.monotonic()
        if isinstance(self._target, int):
            cap = cv2.VideoCapture(self._target, cv2.CAP_V4L2, params)
        else:
            cap = cv2.VideoCapture(self._target, cv2.CAP_FFMPEG, params)
        if cap.isOpened():
            fps = cap.get(cv2.CAP_PROP_FPS)
            with self._cond:
                self._fps = float(fps) if math.isfinite(fps) and fps > 0 else None
            logger.info(
                "camera %s: opened in %.2f s (%s, %.2f fps nominal)", self._label,
                time.monotonic() - started, cap.getBackendName(), fps,
            )
            return cap
        cap.release()
        with self._cond:
            self._open_failures += 1
        logger.warning(
            "camera %s: cannot open after %.2f s (absent, refused or timed out); will retry",
            self._label, time.monotonic() - started,
        )
        return None

    def _lost(self, why: str, *, stall: bool) -> None:
        """The capture failed: count it, log it, and leave STREAMING (CONNECTING if never streamed)."""
        with self._cond:
            if stall:
                self._stalls += 1
            never_streamed = self._frames_read == 0
            after = SourceState.CONNECTING if never_streamed else SourceState.RECONNECTING
            if self._state is after:
                logger.warning("camera %s: %s", self._label, why)
            self._set_state(after, why)

    def _stream(self, cap: cv2.VideoCapture, reconnecting: bool) -> bool:
        """Read frames until a failure, a stall or ``close()``; True if at least one frame arrived."""
        got_frame = False
        last_new = time.monotonic()  # the open counts as "fresh" for the first frame's age
        while not self._stop.is_set():
            ok, raw = cap.read()
            now = time.monotonic()
            if not ok or raw is None:
                self._lost("read failed: end of stream or error", stall=False)
                return got_frame
            if now - last_new >= self._read_timeout_s:
                # read() blocked for the whole read timeout: what comes back now are decoder-buffered
                # frames from before the stall, then ok=False forever. Do not trust this capture again.
                self._lost(f"stalled: no new frame for {now - last_new:.2f} s", stall=True)
                return got_frame
            last_new = now
            image = _to_bgr(raw)
            wall_time_s = time.time()
            with self._cond:
                if self._state is SourceState.CLOSED:
                    return got_frame
                if self._latest is not None:
                    self._dropped_frames += 1
                self._latest = Frame(image, self._next_index, t_s=now, wall_time_s=wall_time_s)
                self._next_index += 1
                self._frames_read += 1
                self._last_frame_mono = now
                if not got_frame:
                    if reconnecting:
                        self._reconnects += 1
                    self._set_state(SourceState.STREAMING, "frames arriving")
                self._cond.notify_all()
            got_frame = True
        return got_frame

    def _run(self) -> None:
        failures = 0  # consecutive sessions that ended without a frame
        streamed_before = False
        while not self._stop.is_set():
            cap: cv2.VideoCapture | None = None
            try:
                cap = self._open()
                if (
                    cap is not None
                    and not self._stop.is_set()
                    and self._stream(cap, reconnecting=streamed_before)
                ):
                    streamed_before = True
                    failures = 0
            except Exception:
                # A camera fault must never kill the reader; log it, count it as a failure, retry.
                logger.exception("camera %s: unexpected error in the reader; will reopen", self._label)
                self._lost("unexpected error in the reader", stall=False)
            finally:
                if cap is not None:
                    cap.release()  # never reuse a capture after a failure
            if self._stop.is_set():
                break
            failures += 1
            delay = backoff_delay_s(failures, self._reconnect_min_s, self._reconnect_max_s, self._rng)
            logger.info("camera %s: reopening in %.2f s (attempt %d)", self._label, delay, failures)
            self._stop.wait(delay)


# --------------------------------------------------------------------------------------------- factory
def open_source(
    cfg: FileSourceConfig | RtspSourceConfig | UsbSourceConfig, rng: random.Random | None = None
) -> FileSource | LiveSource:
    """The source a camera's config describes. Raises ``SourceError`` only for files (a camera that is
    down at start-up is retried in the background instead)."""
    if isinstance(cfg, FileSourceConfig):
        return FileSource(cfg.path)
    return LiveSource.from_config(cfg, rng=rng)
