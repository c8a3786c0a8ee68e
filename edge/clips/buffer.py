"""Pre-event buffer: the last seconds of *encoded* video packets, in RAM only (privacy invariant P2).

Keeping the camera's own compressed packets costs no CPU and little memory (a 1080p H.264 stream at
4 Mbit/s needs about 2.5 MB for 5 s), where raw 1080p frames would need 6 MB each. A clip decodes them
only when an event asks for it. Nothing here ever touches disk.

The buffer always starts at a keyframe, so the oldest frame it holds can be decoded. It is bounded by
time (``keep_s`` behind the newest packet, plus whatever an open clip still needs) and by bytes; when
the byte budget is hit the oldest group of pictures goes first and the overflow is counted.

A new stream session (a camera reconnect: pts restart) empties the buffer, except for what a clip that
is still open needs: the ended session's packets are set aside for it (``SessionPackets``), still within
the byte budget, so the clip is cut from its own session's packets and never from the new one's.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction

from edge.types import EncodedPacket, StreamInfo


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Packets to decode for a clip: from the keyframe at or before ``start_pts`` through ``end_pts``."""

    info: StreamInfo
    packets: tuple[EncodedPacket, ...]
    start_pts: int
    end_pts: int


@dataclass(frozen=True, slots=True)
class SessionPackets:
    """Packets of one stream session, oldest first (decode order), starting at a keyframe."""

    info: StreamInfo
    packets: tuple[EncodedPacket, ...]

    @property
    def session(self) -> int:
        return self.info.session

    @property
    def bytes(self) -> int:
        return sum(len(p.data) for p in self.packets)

    def newest_pts(self) -> int | None:
        return max((p.pts for p in self.packets[-8:] if p.pts is not None), default=None)

    def snapshot(self, start_pts: int, end_pts: int) -> Snapshot | None:
        """The packets a decoder needs to produce every frame with ``start_pts <= pts <= end_pts``."""
        if not self.packets:
            return None
        first = 0
        for i, p in enumerate(self.packets):
            if p.keyframe and p.pts is not None and p.pts <= start_pts:
                first = i
        # decode order: keep packets until one past the window (B-frames may be reordered after it)
        chosen = []
        for p in self.packets[first:]:
            chosen.append(p)
            if p.dts > end_pts and p.keyframe:
                break
        return Snapshot(self.info, tuple(chosen), start_pts, end_pts)


class PacketRing:
    """Thread-safe: the source's reader thread pushes, the pipeline thread snapshots."""

    def __init__(self, keep_s: float, max_bytes: int) -> None:
        self.keep_s = keep_s
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._packets: deque[EncodedPacket] = deque()
        self._bytes = 0
        self._info: StreamInfo | None = None
        self._time_base = Fraction(1, 90_000)
        self._hold_from_pts: int | None = None
        self._previous: SessionPackets | None = None  # the ended session, kept for the clip it held
        self._previous_bytes = 0
        self.session = 0  # ``StreamInfo.session`` of the current session
        self.overflow_drops = 0
        self.peak_bytes = 0

    # -------------------------------------------------------------------------------------- PacketTap
    def start(self, info: StreamInfo) -> None:
        """A new stream session: the packets of the ended one are kept only if a clip held them."""
        with self._lock:
            self._previous, self._previous_bytes = None, 0
            if self._hold_from_pts is not None and self._info is not None and self._packets:
                self._previous, self._previous_bytes = SessionPackets(self._info, tuple(self._packets)), self._bytes
            self._packets.clear()
            self._bytes = 0
            self._info = info
            self._time_base = Fraction(info.time_base_num, info.time_base_den)
            self._hold_from_pts = None
            self.session = info.session

    def push(self, packet: EncodedPacket) -> None:
        with self._lock:
            if not self._packets and not packet.keyframe:
                return  # cannot decode anything before the first keyframe
            self._packets.append(packet)
            self._bytes += len(packet.data)
            self._trim()
            if self._previous is not None and self._bytes + self._previous_bytes > self.max_bytes:
                self._previous, self._previous_bytes = None, 0  # the byte budget holds both sessions
                self.overflow_drops += 1
            self.peak_bytes = max(self.peak_bytes, self._bytes + self._previous_bytes)

    # ----------------------------------------------------------------------------------------- queries
    @property
    def bytes(self) -> int:
        """Bytes held, an ended session's packets kept for an open clip included."""
        with self._lock:
            return self._bytes + self._previous_bytes

    @property
    def info(self) -> StreamInfo | None:
        with self._lock:
            return self._info

    def seconds(self, pts_delta: int) -> float:
        return float(pts_delta * self._time_base)

    def pts_delta(self, seconds: float) -> int:
        return round(seconds / self._time_base)

    def newest_pts(self, session: int | None = None) -> int | None:
        """The newest pts held for ``session`` (default: the current one), None if it holds none."""
        packets = self.packets(session)
        return packets.newest_pts() if packets is not None else None

    def packets(self, session: int | None = None) -> SessionPackets | None:
        """The packets held for ``session`` (default: the current one): the current session's, or an
        ended session's kept for its open clip; None if none are held for it."""
        with self._lock:
            if session is None or session == self.session:
                return SessionPackets(self._info, tuple(self._packets)) if self._info is not None else None
            previous = self._previous
        return previous if previous is not None and previous.session == session else None

    def release(self, session: int) -> None:
        """The open clip of an ended ``session`` is done: free the packets kept for it."""
        with self._lock:
            if self._previous is not None and self._previous.session == session:
                self._previous, self._previous_bytes = None, 0

    def hold(self, from_pts: int | None) -> None:
        """Keep every packet needed from ``from_pts`` on (an open clip), or release the hold (None)."""
        with self._lock:
            self._hold_from_pts = from_pts

    def snapshot(self, start_pts: int, end_pts: int, session: int | None = None) -> Snapshot | None:
        """The packets a decoder needs to produce every frame with ``start_pts <= pts <= end_pts`` of
        ``session`` (default: the current one); None when none are held for that session."""
        packets = self.packets(session)
        return packets.snapshot(start_pts, end_pts) if packets is not None else None

    # ---------------------------------------------------------------------------------------- trimming
    def _trim(self) -> None:
        """Drop whole groups of pictures from the front while the next one still covers what is needed."""
        newest = self._packets[-1].dts
        horizon = newest - round(self.keep_s / self._time_base)
        if self._hold_from_pts is not None:
            horizon = min(horizon, self._hold_from_pts)
        while True:
            nxt = self._next_keyframe_index()
            if nxt is None:
                break
            over_budget = self._bytes > self.max_bytes
            if not over_budget and self._packets[nxt].dts > horizon:
                break
            if over_budget and (self._packets[nxt].dts > horizon):
                self.overflow_drops += 1
            for _ in range(nxt):
                self._bytes -= len(self._packets.popleft().data)
        # a single group of pictures larger than the budget: drop it all rather than exceed the budget
        while self._bytes > self.max_bytes and self._packets:
            self._bytes -= len(self._packets.popleft().data)
            self.overflow_drops += 1
            while self._packets and not self._packets[0].keyframe:
                self._bytes -= len(self._packets.popleft().data)

    def _next_keyframe_index(self) -> int | None:
        for i, p in enumerate(self._packets):
            if i > 0 and p.keyframe:
                return i
        return None
