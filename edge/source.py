"""Video sources: recorded files and live cameras, as iterators of ``Frame``.

This is the only module of the package that talks to the video library: PyAV (FFmpeg's libavformat and
libavcodec). Only the video stream is ever read: every other stream (audio, data, subtitles) is set to
``discard = "all"`` so the demuxer drops its packets, and no decoder is ever opened for it (privacy
invariant P1).

Each source can hand the *encoded* video packets to a tap (``on_packet``) before decoding them: the
pre-event buffer keeps those compressed packets in RAM, so a clip costs nothing until an event needs it.

``FileSource`` replays a file deterministically, with no wall clock: a frame's media time ``t_s`` is
``index / fps``, except that frames lost to damaged data leave their gap (measured by the pts of the next
frame that decodes) instead of shifting every later time.
``LiveSource`` reads an RTSP (or other FFmpeg network) URL or a USB device in a background thread that keeps
only the newest frame, detects stalls by frame age, and reopens the stream with capped exponential backoff
and full jitter forever, until ``close()``. Live frames carry ``t_s = time.monotonic()`` and ``wall_time_s =
time.time()`` at capture. Open and read timeouts are passed to FFmpeg's interrupt callback (``av.open(...,
timeout=(open_s, read_s))``); FFmpeg's own default would block for a long time on a silent peer.

A packet that does not decode (corrupt or truncated data) is a ``DecodeError``: both sources skip it,
count it (``decode_errors``) and read on (the decoder resumes at the next frame it can rebuild, for H.264
the next keyframe); a file that ends short of the frames its container lists (truncated) is counted and
reported too; a live source reopens only when no frame decodes for ``read_timeout_s`` (a stall). Each
open is a stream session (``StreamInfo.session``, ``Frame.session``): pts restart, so packets of different
sessions are never mixed in a clip.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Final, Protocol, Self
from urllib.parse import urlsplit, urlunsplit

import av
import av.container
import av.stream
import av.video.stream
import numpy as np
import numpy.typing as npt

from edge.config import FileSourceConfig, RtspSourceConfig, UsbSourceConfig
from edge.errors import DecodeError, SourceError
from edge.types import EncodedPacket, Frame, StreamInfo, analysis_size

__all__ = [
    "FileSource",
    "FrameSource",
    "LiveSource",
    "PacketTap",
    "SourceState",
    "backoff_delay_s",
    "open_source",
    "short_of",
]

logger = logging.getLogger(__name__)

#: Frame rate assumed when a file's container reports none.
FALLBACK_FPS: Final = 25.0
#: A file whose frames fall short of the count its container lists by more than this fraction is reported
#: (a warning, one decode error, a line in the replay summary): truncated, or frames lost to damage.
SHORTFALL_WARN_FRACTION: Final = 0.01
#: Codecs of FFmpeg's "tty" family, which render any .txt/.nfo/.ans text file as ANSI-art frames. A text
#: file is never camera footage: refuse it.
_TEXT_AS_VIDEO_CODECS: Final = frozenset({"ansi", "bintext", "xbin", "idf"})
#: ``LiveSource.__iter__`` wakes up this often to notice ``close()`` while no frame arrives.
_ITER_POLL_S: Final = 0.5
#: Extra time ``close()`` waits for the reader thread beyond the longest blocking FFmpeg call.
_JOIN_GRACE_S: Final = 1.0
#: Options for network streams: RTSP over TCP (no UDP loss), regenerated timestamps, drop corrupt packets.
_NETWORK_OPTIONS: Final = {"rtsp_transport": "tcp", "fflags": "+genpts+discardcorrupt"}

class PacketTap(Protocol):
    """Receives the encoded video packets, in decode order, before they are decoded."""

    def start(self, info: StreamInfo) -> None:
        """A new stream session begins (file opened, camera (re)connected): pts restart.
        ``info.session`` numbers the sessions of the source: 1, then one more per reconnect."""

    def push(self, packet: EncodedPacket) -> None: ...


class FrameSource(Protocol):
    """What the pipeline needs from a source: frames in order, and a way to stop."""

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


def _video_only(container: av.container.InputContainer) -> av.video.stream.VideoStream:
    """The first video stream, with every other stream discarded by the demuxer (never decoded)."""
    if not container.streams.video:
        raise SourceError("no video stream")
    video = container.streams.video[0]
    for stream in container.streams:
        if stream.index != video.index:
            stream.discard = av.stream.Discard.all
    video.thread_type = "AUTO"  # frame + slice threads: FFmpeg decodes on every core
    return video


def _stream_info(video: av.video.stream.VideoStream, fps: float, session: int) -> StreamInfo:
    ctx = video.codec_context
    tb = video.time_base or Fraction(1, 90_000)
    return StreamInfo(
        codec=ctx.name, extradata=bytes(ctx.extradata or b""), width=ctx.width, height=ctx.height,
        time_base_num=tb.numerator, time_base_den=tb.denominator, fps=fps, session=session,
    )


def _decode_packet(packet: av.Packet) -> list[av.VideoFrame]:  # type: ignore[type-arg]
    """The frames of one demuxed packet; ``DecodeError`` when its data is corrupt (PyAV raises
    ``av.error.InvalidDataError``, a ``ValueError``, or another ``FFmpegError``)."""
    try:
        return packet.decode()
    except (av.FFmpegError, ValueError) as exc:
        raise DecodeError(f"video packet dts {packet.dts} ({packet.size} bytes) does not decode: "
                          f"{_reason(exc)}") from exc


def _log_decode_error(label: object, count: int, exc: DecodeError) -> None:
    """Warn at the 1st, 10th, 100th, ... decode error of a source (a damaged stream may give one a frame)."""
    level = logging.WARNING if str(count).rstrip("0") == "1" else logging.DEBUG
    logger.log(level, "%s: %s; the packet is skipped (%d decode errors so far)", label, exc, count)


def _packet(packet: av.Packet) -> EncodedPacket | None:  # type: ignore[type-arg]
    """A copy of a demuxed packet for the tap; None for the empty flush packet at the end."""
    if packet.size == 0 or packet.dts is None:
        return None
    return EncodedPacket(data=bytes(packet), pts=packet.pts, dts=packet.dts, keyframe=packet.is_keyframe)


def _reason(exc: BaseException) -> str:
    """An FFmpeg error without the URL it names (which may carry a password)."""
    return getattr(exc, "strerror", None) or type(exc).__name__


def _bgr(frame: av.VideoFrame, fit_px: tuple[int, int] | None) -> npt.NDArray[np.uint8]:
    """The frame as BGR; with ``fit_px`` (a model input size) its analysis copy, area-averaged by
    FFmpeg's scaler (no aliasing)."""
    if fit_px is None:
        return np.asarray(frame.to_ndarray(format="bgr24"), np.uint8)
    w, h = analysis_size((frame.width, frame.height), fit_px)
    return np.asarray(frame.to_ndarray(width=w, height=h, format="bgr24", interpolation="AREA"), np.uint8)


def short_of(read: int, expected: int | None) -> bool:
    """Whether ``read`` frames fall short of ``expected`` by more than ``SHORTFALL_WARN_FRACTION``."""
    return expected is not None and expected - read > SHORTFALL_WARN_FRACTION * expected


def _expected_frames(container: av.container.InputContainer, video: av.video.stream.VideoStream,
                     fps: float) -> int | None:
    """Frames the container lists for the video stream, else its duration x fps; None when unknown."""
    if video.frames and video.frames > 0:
        return int(video.frames)
    if video.duration is not None and video.time_base is not None:
        seconds = float(video.duration * video.time_base)
    elif container.duration is not None:
        seconds = container.duration / av.time_base
    else:
        return None
    return round(seconds * fps) if seconds > 0 else None


def _mp4_without_index(path: Path) -> bool:
    """Whether ``path`` starts like an MP4/MOV (an ``ftyp`` box) but has no ``moov`` box (its index): a
    recording cut off before the recorder wrote the index at its end."""
    try:
        with path.open("rb") as f:
            size, pos = path.stat().st_size, 0
            types: list[bytes] = []
            while pos + 8 <= size and len(types) < 64:
                f.seek(pos)
                head = f.read(16)
                box_size, kind = int.from_bytes(head[:4], "big"), head[4:8]
                if box_size == 1 and len(head) == 16:
                    box_size = int.from_bytes(head[8:16], "big")
                types.append(kind)
                if box_size < 8:
                    break
                pos += box_size
    except OSError:
        return False
    return bool(types) and types[0] == b"ftyp" and b"moov" not in types


def _open_file(path: Path) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    """The opened file and its video stream (every other stream discarded); ``SourceError`` saying what to
    check when the file is missing, is no video, or cannot be read."""
    if not path.is_file():
        what = "is not a file" if path.exists() else "does not exist"
        raise SourceError(f"video file {path} {what}; check the path (relative paths are resolved from the "
                          f"current directory {Path.cwd()})")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError) as exc:
        if _mp4_without_index(path):
            raise SourceError(
                f"cannot open {path}: the MP4 has no index (moov box), so the recording was cut off before "
                "it was finished (a truncated file, e.g. a recorder that lost power); it cannot be replayed "
                "as it is (tools such as untrunc rebuild the index from an intact recording of the same camera)"
            ) from None
        raise SourceError(f"cannot open {path} as a video ({exc}); check that it is a video file "
                          f"(`ffprobe {path}` should list a video stream)") from None
    try:
        video = _video_only(container)
    except SourceError:
        container.close()
        raise SourceError(f"{path} has no video stream; check it with `ffprobe {path}`") from None
    codec = video.codec_context.name
    if codec in _TEXT_AS_VIDEO_CODECS:
        container.close()
        raise SourceError(f"{path} is a text file (FFmpeg would render it as {codec!r} text art), not a "
                          f"video; check the path (`ffprobe {path}` shows its format)")
    return container, video


class _MediaClock:
    """Media time of a file's decoded frames: frame slots of ``1 / fps`` from the first frame, so a clean file
    gives ``t_s = index / fps`` exactly. After damaged data (a decode error), the next frame's pts measures
    how many slots were lost, and time moves on by as many: the frames lost to damage leave their gap instead
    of shifting every later time. Only then are pts used: some containers (AVI with packed B-frames) carry
    pts out of presentation order, which would jitter every frame's time."""

    def __init__(self, time_base: Fraction | None, fps: float) -> None:
        self._time_base, self._fps = time_base, fps
        self._slot: int | None = None
        self._last_pts: int | None = None
        self.damaged = False  # set by the source on a decode error; cleared by the next frame
        self.last_s: float | None = None

    def __call__(self, pts: int | None) -> float:
        step = 1
        if self.damaged and pts is not None and self._last_pts is not None and self._time_base is not None:
            step = max(1, round(float((pts - self._last_pts) * self._time_base) * self._fps))
        self._slot = 0 if self._slot is None else self._slot + step
        self._last_pts, self.damaged = pts, False
        self.last_s = self._slot / self._fps
        return self.last_s

    @property
    def covered_s(self) -> float:
        """Media seconds from the first frame to the end of the last one (0 before the first frame)."""
        return 0.0 if self.last_s is None else self.last_s + 1.0 / self._fps


# ------------------------------------------------------------------------------------------------ file
class FileSource:
    """A recorded video file, decoded frame by frame until the end of the file.

    Iteration is single pass: a second ``for`` loop continues where the first one stopped. Frames are
    BGR uint8 ``HxWx3``, scaled down for a model input of ``fit_px`` when given (the analysis copy, see
    ``Frame``);
    ``Frame.t_s`` the media time from the frame's pts (seconds since the first frame; deterministic),
    ``Frame.pts`` the stream timestamp, and ``Frame.wall_time_s is None``. ``on_packet`` receives each
    encoded packet. A file that ends more than ``SHORTFALL_WARN_FRACTION`` short of ``expected_frames``
    is logged as a warning and counted as one decode error.

    Raises ``SourceError`` at construction when the file is missing, cannot be opened (an MP4 cut off
    before its index was written, among others), or has no decodable video frame.
    """

    def __init__(self, path: Path, on_packet: PacketTap | None = None,
                 fit_px: tuple[int, int] | None = None) -> None:
        self._path = Path(path)
        self._on_packet = on_packet
        self._fit_px = fit_px
        container, video = _open_file(self._path)
        codec = video.codec_context.name
        rate = video.average_rate or video.guessed_rate
        fps = float(rate) if rate else 0.0
        if not math.isfinite(fps) or fps <= 0:
            logger.warning("%s reports no frame rate; assuming %.1f fps for media time", self._path, FALLBACK_FPS)
            fps = FALLBACK_FPS
        self._fps = fps
        self._frame_count = int(video.frames) if video.frames and video.frames > 0 else None
        self._expected = _expected_frames(container, video, fps)
        self._clock = _MediaClock(video.time_base, fps)
        self._read_failed = False
        self._container: av.container.InputContainer | None = container
        self._video = video
        self._next_index, self._decode_errors = 0, 0
        self.info = _stream_info(video, fps, session=1)
        if on_packet is not None:
            on_packet.start(self.info)
        self._frames = self._decode()
        try:
            first = next(self._frames, None)
        except av.FFmpegError:
            first = None
        if first is None:
            self.close()
            raise SourceError(
                f"{self._path} has no decodable video frame (an unsupported codec or a truncated file); "
                f"check it with `ffprobe {self._path}` or re-encode it to H.264"
            )
        self._pending: Frame | None = first
        self._size = first.source_size or (first.image.shape[1], first.image.shape[0])
        logger.info("opened %s: %s %dx%d, %.3f fps, %s frames", self._path, codec, *self._size, fps,
                    self._frame_count if self._frame_count is not None else "unknown")

    def _decode(self) -> Generator[Frame, None, None]:
        container = self._container
        if container is None:
            return
        for packet in container.demux(self._video):
            if self._on_packet is not None and (encoded := _packet(packet)) is not None:
                self._on_packet.push(encoded)
            try:
                decoded = _decode_packet(packet)
            except DecodeError as exc:
                self._decode_errors += 1
                self._clock.damaged = True
                _log_decode_error(self._path, self._decode_errors, exc)
                continue
            for frame in decoded:
                index = self._next_index
                self._next_index += 1
                yield Frame(_bgr(frame, self._fit_px), index, t_s=self._clock(frame.pts), pts=frame.pts,
                            source_size=(frame.width, frame.height), session=self.info.session)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def fps(self) -> float:
        """Frame rate from the container, or ``FALLBACK_FPS`` when it reports none."""
        return self._fps

    @property
    def decode_errors(self) -> int:
        """Packets that did not decode (skipped), plus one when the file ended early: a read error, or
        the end of the file more than ``SHORTFALL_WARN_FRACTION`` short of ``expected_frames``."""
        return self._decode_errors

    @property
    def frame_count(self) -> int | None:
        """Frame count from the container (an estimate for some formats), or None when unknown."""
        return self._frame_count

    @property
    def expected_frames(self) -> int | None:
        """Frames the file should give: the container's count, else its duration x fps; None if unknown."""
        return self._expected

    @property
    def frames_read(self) -> int:
        """Frames decoded so far."""
        return self._next_index

    @property
    def media_s(self) -> float:
        """Media seconds read so far: from the first frame to the end of the last one, by their pts."""
        return self._clock.covered_s

    @property
    def size(self) -> tuple[int, int]:
        """Camera frame ``(width, height)`` in pixels, from the first decoded frame."""
        return self._size

    @property
    def opened_stream_types(self) -> tuple[str, ...]:
        """Types of the streams that have an open decoder: only ``("video",)`` once decoding started."""
        if self._container is None:
            return ()
        return tuple(s.type for s in self._container.streams if s.codec_context.is_open)

    def __iter__(self) -> Iterator[Frame]:
        if self._pending is not None:
            first, self._pending = self._pending, None
            yield first
        try:
            yield from self._frames
        except av.FFmpegError as exc:  # the demuxer cannot read on (a cut or damaged file)
            self._decode_errors += 1
            self._read_failed = True
            logger.warning("reading %s stopped at frame %d: %s", self._path, self._next_index, exc)
        if self._container is not None:  # the file ended (not closed while being read)
            self._check_complete()
        logger.info("end of %s after %d frames", self._path, self._next_index)

    def _check_complete(self) -> None:
        """At the end of the file: warn, and count one decode error, when frames are missing."""
        read, expected = self._next_index, self._expected
        if not short_of(read, expected):
            return
        if not self._read_failed:  # a read error that ended the file was counted already
            self._decode_errors += 1
        logger.warning("%s ended after %d of the %s frames its container lists (%.1f %% missing, %d decode "
                       "errors): the file is truncated or damaged", self._path, read, expected,
                       100 * (1 - read / (expected or 1)), self._decode_errors)

    def close(self) -> None:
        """Close the file; idempotent. Iteration stops afterwards."""
        if self._container is not None:
            self._frames.close()
            self._container.close()
            self._container = None
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


@dataclass(frozen=True, slots=True)
class _Captured:
    """A decoded live frame waiting in the one-slot buffer, not yet converted to BGR."""

    frame: av.VideoFrame
    index: int
    t_s: float
    wall_time_s: float
    session: int


class LiveSource:
    """A live camera (RTSP/network URL or USB device index) read by a background thread.

    The reader thread keeps only the newest frame (a one-slot buffer): a frame overwritten before
    ``read()`` took it counts in ``dropped_frames``, so a slow consumer always gets fresh frames instead
    of a growing backlog. ``Frame.index`` counts every frame captured since construction (gaps mean
    drops) and keeps increasing across reconnects.

    A read failure (``ok=False``) or a stall (no new frame for ``read_timeout_s``, judged by frame age
    because FFmpeg returns a few decoder-buffered frames with ``ok=True`` after the read timeout) releases
    the capture, which is never reused, and reopens a new one after ``backoff_delay_s``. It retries
    forever and never raises for a camera fault; watch ``state``, ``last_frame_age_s`` and the counters.

    The open and read timeouts are passed to FFmpeg as open-time parameters: ``cap.set()`` after opening
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
        on_packet: PacketTap | None = None,
        fit_px: tuple[int, int] | None = None,
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
        self._on_packet = on_packet
        self._fit_px = fit_px
        self.info: StreamInfo | None = None

        self._stop = threading.Event()
        self._cond = threading.Condition()  # guards every field below
        self._state = SourceState.CONNECTING
        self._latest: _Captured | None = None
        self._next_index = 0
        self._frames_read = 0
        self._dropped_frames = 0
        self._reconnects = 0
        self._stalls = 0
        self._open_failures = 0
        self._decode_errors = 0
        self._sessions = 0
        self._last_frame_mono: float | None = None
        self._fps: float | None = None

        logger.info("camera %s: connecting", self._label)
        self._thread = threading.Thread(target=self._run, name=f"edge-source {self._label}", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, cfg: RtspSourceConfig | UsbSourceConfig, rng: random.Random | None = None,
                    on_packet: PacketTap | None = None, fit_px: tuple[int, int] | None = None) -> Self:
        target: str | int = cfg.url if isinstance(cfg, RtspSourceConfig) else cfg.device_index
        return cls(
            target,
            open_timeout_s=cfg.open_timeout_s,
            read_timeout_s=cfg.read_timeout_s,
            reconnect_min_s=cfg.reconnect_min_s,
            reconnect_max_s=cfg.reconnect_max_s,
            rng=rng,
            on_packet=on_packet,
            fit_px=fit_px,
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
    def decode_errors(self) -> int:
        """Packets that did not decode (corrupt data): skipped, the stream goes on."""
        with self._cond:
            return self._decode_errors

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
            got, self._latest = self._latest, None
        # Converted here, outside the lock and only for frames a consumer takes: a frame overwritten
        # in the slot (dropped) never pays for its colour conversion.
        return Frame(_bgr(got.frame, self._fit_px), got.index, t_s=got.t_s, wall_time_s=got.wall_time_s,
                     pts=got.frame.pts, source_size=(got.frame.width, got.frame.height), session=got.session)

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

        Waits at most the longest blocking FFmpeg call (open or read timeout) plus a grace period; a
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
                "camera %s: reader still blocked in FFmpeg after %.1f s; it will release the capture "
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

    def _open(self) -> tuple[av.container.InputContainer, av.video.stream.VideoStream] | None:
        started = time.monotonic()
        timeout = (self._open_timeout_s, self._read_timeout_s)
        try:
            if isinstance(self._target, int):
                container = av.open(f"/dev/video{self._target}", format="v4l2", timeout=timeout)
            else:
                container = av.open(self._target, options=dict(_NETWORK_OPTIONS), timeout=timeout)
        except (av.FFmpegError, OSError) as exc:
            with self._cond:
                self._open_failures += 1
            logger.warning("camera %s: cannot open after %.2f s (%s); will retry", self._label,
                           time.monotonic() - started, _reason(exc))
            return None
        try:
            video = _video_only(container)
        except SourceError:
            container.close()
            with self._cond:
                self._open_failures += 1
            logger.warning("camera %s: the stream has no video; will retry", self._label)
            return None
        rate = video.average_rate or video.guessed_rate
        fps = float(rate) if rate else None
        with self._cond:
            self._fps = fps
            self._sessions += 1
            self.info = _stream_info(video, fps or FALLBACK_FPS, self._sessions)
        if self._on_packet is not None:
            self._on_packet.start(self.info)
        logger.info("camera %s: opened in %.2f s (%s %dx%d, %s fps nominal)", self._label,
                    time.monotonic() - started, video.codec_context.name, video.codec_context.width,
                    video.codec_context.height, f"{fps:.2f}" if fps else "?")
        return container, video

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

    def _frames(self, container: av.container.InputContainer,
                video: av.video.stream.VideoStream) -> Generator[av.VideoFrame | DecodeError, None, None]:
        """Decoded frames; a packet that does not decode is counted and yields its ``DecodeError``."""
        for packet in container.demux(video):
            if self._on_packet is not None and (encoded := _packet(packet)) is not None:
                self._on_packet.push(encoded)
            try:
                decoded = _decode_packet(packet)
            except DecodeError as exc:
                with self._cond:
                    self._decode_errors += 1
                    count = self._decode_errors
                _log_decode_error(f"camera {self._label}", count, exc)
                yield exc
                continue
            yield from decoded

    def _stream(self, container: av.container.InputContainer, video: av.video.stream.VideoStream,
                reconnecting: bool) -> bool:
        """Read frames until a failure, a stall or ``close()``; True if at least one frame arrived."""
        got_frame = False
        last_new = time.monotonic()  # the open counts as "fresh" for the first frame's age
        frames = self._frames(container, video)
        try:
            while not self._stop.is_set():
                try:
                    frame = next(frames, None)
                except (av.FFmpegError, OSError) as exc:
                    stalled = time.monotonic() - last_new >= self._read_timeout_s
                    what = f"stalled: no new frame for {time.monotonic() - last_new:.2f} s" if stalled else \
                        f"read failed: {_reason(exc)}"
                    self._lost(what, stall=stalled)
                    return got_frame
                now = time.monotonic()
                if frame is None:
                    self._lost("end of stream", stall=False)
                    return got_frame
                if isinstance(frame, DecodeError):  # skipped; only a run of them as long as a stall reopens
                    if now - last_new >= self._read_timeout_s:
                        self._lost(f"stalled: no decodable frame for {now - last_new:.2f} s", stall=True)
                        return got_frame
                    continue
                if now - last_new >= self._read_timeout_s:
                    # the read blocked past the read timeout: what arrives now is stale, reopen
                    self._lost(f"stalled: no new frame for {now - last_new:.2f} s", stall=True)
                    return got_frame
                last_new = now
                wall_time_s = time.time()
                with self._cond:
                    if self._state is SourceState.CLOSED:
                        return got_frame
                    if self._latest is not None:
                        self._dropped_frames += 1
                    self._latest = _Captured(frame, self._next_index, now, wall_time_s, self._sessions)
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
        finally:
            frames.close()

    def _run(self) -> None:
        failures = 0  # consecutive sessions that ended without a frame
        streamed_before = False
        while not self._stop.is_set():
            opened = None
            try:
                opened = self._open()
                if (
                    opened is not None
                    and not self._stop.is_set()
                    and self._stream(*opened, reconnecting=streamed_before)
                ):
                    streamed_before = True
                    failures = 0
            except Exception:
                # A camera fault must never kill the reader; log it, count it as a failure, retry.
                logger.exception("camera %s: unexpected error in the reader; will reopen", self._label)
                self._lost("unexpected error in the reader", stall=False)
            finally:
                if opened is not None:
                    opened[0].close()  # never reuse a stream after a failure
            if self._stop.is_set():
                break
            failures += 1
            delay = backoff_delay_s(failures, self._reconnect_min_s, self._reconnect_max_s, self._rng)
            logger.info("camera %s: reopening in %.2f s (attempt %d)", self._label, delay, failures)
            self._stop.wait(delay)


# --------------------------------------------------------------------------------------------- factory
def open_source(
    cfg: FileSourceConfig | RtspSourceConfig | UsbSourceConfig, rng: random.Random | None = None,
    on_packet: PacketTap | None = None, fit_px: tuple[int, int] | None = None,
) -> FileSource | LiveSource:
    """The source a camera's config describes, delivering analysis copies that fit ``fit_px``. Raises
    ``SourceError`` only for files (a camera that is down at start-up is retried in the background)."""
    if isinstance(cfg, FileSourceConfig):
        return FileSource(cfg.path, on_packet=on_packet, fit_px=fit_px)
    return LiveSource.from_config(cfg, rng=rng, on_packet=on_packet, fit_px=fit_px)
