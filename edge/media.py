"""What a recorded video says about itself before it is replayed: when it started.

A replay that publishes to a dashboard must stamp its windows with real time, not the epoch: the start is
taken from the container's ``creation_time`` tag, else from a date and time in the file name (as camera
recorders and OpenTrafficCam name files: ``..._2020-01-01_00-00-00.mp4``, ``20240501T070000.mkv``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import av

#: A date and time in a file name: 2024-05-01_07-00-00, 2024-05-01T07:00:00, 20240501T070000, 20240501_070000.
_NAME_TIME: Final = re.compile(
    r"(?<!\d)(\d{4})-?(\d{2})-?(\d{2})[T_ -](\d{2})[-:.]?(\d{2})[-:.]?(\d{2})(?!\d)"
)
#: Tags older than this are a muxer's zero (1904 or 1970), not a recording's start.
_EARLIEST: Final = datetime(1990, 1, 1, tzinfo=UTC)


def _from_tag(path: Path) -> datetime | None:
    try:
        with av.open(str(path)) as container:
            tag = container.metadata.get("creation_time")
    except (av.error.FFmpegError, OSError):
        return None
    if not tag:
        return None
    try:
        t = datetime.fromisoformat(str(tag).replace("Z", "+00:00"))
    except ValueError:
        return None
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t if t >= _EARLIEST else None


def _from_name(path: Path) -> datetime | None:
    for m in _NAME_TIME.finditer(path.stem):
        try:
            year, month, day, hour, minute, second = (int(g) for g in m.groups())
            t = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
        except ValueError:  # 2024-13-45: not a date
            continue
        if t >= _EARLIEST:
            return t
    return None


def utc_time_arg(text: str) -> datetime:
    """A command-line instant: ISO 8601 with a time zone (``Z`` allowed), as UTC; argparse's error otherwise."""
    import argparse

    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if t.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a time zone, e.g. 2024-05-01T07:00:00Z")
    return t.astimezone(UTC)


def recording_start(path: Path) -> tuple[datetime, str] | None:
    """The UTC start of a recording and where it was read (``"creation_time tag"``, ``"file name"``), or
    None when neither says. A time in the file name is taken as UTC."""
    t = _from_tag(path)
    if t is not None:
        return t, "its creation_time tag"
    t = _from_name(path)
    if t is not None:
        return t, "its file name (taken as UTC)"
    return None
