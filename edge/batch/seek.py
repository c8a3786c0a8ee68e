"""A recorded file read from a given frame on: a segment's first frame (its warm-up's) without decoding the file
from its start.

The frames must be the very frames, with the very indices and media times, that a decode of the whole file
(``edge.source.FileSource``) gives: frame ``i`` at ``t_s = i / fps``. The source opens the file as
``FileSource`` does (only the video stream is decoded, P1), decodes its first frame, whose pts anchors the
index of every later frame (``round((pts - pts0) x time_base x fps)``), seeks to the keyframe before the
target (less a margin of frames) and decodes forward. It trusts the pts only when the frames between that
keyframe and the target come with consecutive indices: some containers carry pts out of presentation order
(AVI with packed B-frames), where a seek would misplace every frame. Those files, and a seek that lands past
the target, are read from their start instead, skipping the frames before the target (exact, only slower).
After the first frame the indices count on one by one as ``FileSource`` counts them; after damaged data
(a packet that does not decode) the next frame's pts measures the gap, as the whole-file decode does.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from pathlib import Path
from typing import Final

import av

from edge.errors import DecodeError, EdgeError, SourceError
from edge.source import FileSource, _bgr, _decode_packet
from edge.types import Frame

log = logging.getLogger(__name__)

#: Frames decoded and checked before the target, at least: their indices must be consecutive to trust the pts.
SEEK_MARGIN_FRAMES: Final = 8


class _IrregularError(Exception):
    """The pts after a seek do not give consecutive frame indices: read the file from its start instead."""


class PastTheEndError(EdgeError):
    """The file decodes, but ends before the segment's first frame (its container listed more frames)."""


class SegmentSource(FileSource):
    """``FileSource`` whose first frame is frame ``first`` of the file (see the module docstring).
    ``PastTheEndError`` when the file has no frame ``first``."""

    def __init__(self, path: Path, first: int, fit_px: tuple[int, int] | None = None) -> None:
        self._first = first
        self._seeked = False
        self._head_decoded = False
        self._first_t_s: float | None = None
        self._last_t_s: float | None = None
        try:
            super().__init__(path, fit_px=fit_px)
        except SourceError:
            if self._head_decoded:
                raise PastTheEndError(f"{path} ends before frame {first}") from None
            raise

    @property
    def seeked(self) -> bool:
        """Whether the source seeked (False: it decoded from the file's start and skipped)."""
        return self._seeked

    @property
    def media_s(self) -> float:
        """Media seconds read so far: from this source's first frame to the end of its last one."""
        if self._first_t_s is None or self._last_t_s is None:
            return 0.0
        return self._last_t_s - self._first_t_s + 1.0 / self.fps

    def _decode(self) -> Generator[Frame, None, None]:
        for frame in self._frames_from_first():
            if self._first_t_s is None:
                self._first_t_s = frame.t_s
            self._last_t_s = frame.t_s
            yield frame

    def _frames_from_first(self) -> Generator[Frame, None, None]:
        whole = super()._decode()
        if self._first < SEEK_MARGIN_FRAMES:
            for frame in whole:
                self._head_decoded = True
                if frame.index >= self._first:
                    yield frame
            return
        head = next(whole, None)
        if head is None:
            return
        self._head_decoded = True
        whole.close()
        if head.pts is None:
            yield from self._from_start()
            return
        try:
            seeked = self._seek(head.pts)
            first = next(seeked, None)  # the pre-roll is checked before the first frame is handed out
        except _IrregularError as exc:
            log.info("%s: %s; decoding from the start to frame %d", self.path, exc, self._first)
            yield from self._from_start()
            return
        if first is not None:
            self._seeked = True
            yield first
            yield from seeked

    def _from_start(self) -> Generator[Frame, None, None]:
        """The exact fallback: a fresh decode from frame 0 that skips the frames before ``first``."""
        with FileSource(self.path, fit_px=self._fit_px) as whole:
            for frame in whole:
                if frame.index >= self._first:
                    self._next_index = frame.index + 1
                    yield frame
            self._decode_errors += whole.decode_errors

    def _seek(self, pts0: int) -> Generator[Frame, None, None]:
        container, video = self._container, self._video
        tb = video.time_base
        if container is None or tb is None:
            raise _IrregularError("no time base")
        target = self._first - SEEK_MARGIN_FRAMES
        try:
            container.seek(pts0 + int(target / (self.fps * tb)), stream=video, backward=True, any_frame=False)
        except (av.FFmpegError, OSError) as exc:
            raise _IrregularError(f"the file does not seek ({type(exc).__name__})") from None
        last: int | None = None
        damaged = False
        for packet in container.demux(video):
            try:
                decoded = _decode_packet(packet)
            except DecodeError as exc:
                if last is None or last < self._first:
                    raise _IrregularError(f"damaged data before the segment: {exc}") from None
                self._decode_errors += 1
                damaged = True
                continue
            for frame in decoded:
                index = self._index(frame.pts, pts0, last, damaged=damaged)
                damaged = False
                last = index
                if index < self._first:
                    continue
                self._next_index = index + 1
                yield Frame(_bgr(frame, self._fit_px), index, t_s=index / self.fps, pts=frame.pts,
                            source_size=(frame.width, frame.height), session=self.info.session)

    def _index(self, pts: int | None, pts0: int, last: int | None, *, damaged: bool) -> int:
        """The whole-file index of a decoded frame: from its pts up to the first frame handed out (checked),
        then one more per frame (and the pts gap after damaged data), as ``FileSource`` counts."""
        tb = self._video.time_base
        by_pts = round(float((pts - pts0) * tb) * self.fps) if pts is not None and tb is not None else None
        if last is not None and last >= self._first:
            return by_pts if damaged and by_pts is not None and by_pts > last else last + 1
        if by_pts is None:
            raise _IrregularError("a frame without pts")
        if last is None and by_pts > self._first - SEEK_MARGIN_FRAMES:
            raise _IrregularError(f"the seek landed at frame {by_pts}, past frame {self._first - SEEK_MARGIN_FRAMES}")
        if last is not None and by_pts != last + 1:
            raise _IrregularError(f"pts out of order (frame {by_pts} after {last})")
        return by_pts

