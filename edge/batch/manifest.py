"""The manifest of a batch: which recordings, of which camera, starting when.

CSV, with a header row (``start`` and ``camera`` may be left empty)::

    path,camera,start
    2024-05-01/cam1_0700.mp4,overpass,2024-05-01T07:00:00Z

YAML, with single recordings and folders whose file names carry the start time::

    recordings:
      - {path: 2024-05-01/cam1_0700.mp4, camera: overpass, start: "2024-05-01T07:00:00Z"}
      - folder: otc
        pattern: "Testvideo_*_%Y-%m-%d_%H-%M-%S.mp4"
        camera: otc

A pattern is a file-name glob (``*``, ``?``) in which the strftime fields ``%Y %m %d %H %M %S`` stand for the
digits of the start time (taken as UTC). Without a start (and a pattern without those fields), the start
comes from the file as ``edge replay --publish`` takes it: its creation_time tag, else a date in its name
(``edge.media.recording_start``); a recording with neither is refused. Relative paths are resolved from
the manifest's folder. ``camera`` names a camera of the config (default: its first).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import yaml

from edge.config import EdgeConfig
from edge.errors import ConfigError

_FIELDS: Final = {"Y": r"(?P<Y>\d{4})", "m": r"(?P<m>\d{2})", "d": r"(?P<d>\d{2})",
                  "H": r"(?P<H>\d{2})", "M": r"(?P<M>\d{2})", "S": r"(?P<S>\d{2})"}


@dataclass(frozen=True, slots=True)
class Recording:
    path: Path
    camera: str
    start: datetime
    #: Where the start time came from, for the summary.
    start_from: str = "manifest"


def parse_time(text: str, where: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{where}: not an ISO 8601 time: {text!r}") from None
    if t.tzinfo is None:
        raise ConfigError(f"{where}: {text!r} needs a time zone, e.g. 2024-05-01T07:00:00Z")
    return t.astimezone(UTC)


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """The regular expression of a manifest file-name pattern (see the module docstring)."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "%" and i + 1 < len(pattern):
            field = pattern[i + 1]
            if field == "%":
                out.append("%")
            elif field in _FIELDS:
                out.append(_FIELDS[field] if f"(?P<{field}>" not in "".join(out) else rf"(?P={field})")
            else:
                raise ConfigError(f"pattern {pattern!r}: %{field} is not one of %Y %m %d %H %M %S")
            i += 2
            continue
        out.append(".*" if c == "*" else "." if c == "?" else re.escape(c))
        i += 1
    return re.compile("".join(out))


def _start_of_name(match: re.Match[str], where: str) -> datetime | None:
    fields = match.groupdict()
    if not fields:
        return None
    try:
        return datetime(int(fields.get("Y", 1970)), int(fields.get("m", 1)), int(fields.get("d", 1)),
                        int(fields.get("H", 0)), int(fields.get("M", 0)), int(fields.get("S", 0)), tzinfo=UTC)
    except ValueError as exc:
        raise ConfigError(f"{where}: the file name gives no valid time ({exc})") from None


def _from_file(path: Path, where: str) -> tuple[datetime, str]:
    from edge.media import recording_start

    found = recording_start(path)
    if found is None:
        raise ConfigError(f"{where}: {path.name} has no start time: give one (start), or a pattern with the time "
                          "fields, e.g. cam_%Y-%m-%d_%H-%M-%S.mp4 (neither its creation_time tag nor its name says)")
    return found


def _recording(path: Path, camera: str, start: datetime | None, where: str) -> Recording:
    if not path.is_file():
        raise ConfigError(f"{where}: {path} {'is not a file' if path.exists() else 'does not exist'}")
    if start is not None:
        return Recording(path, camera, start)
    t, source = _from_file(path, where)
    return Recording(path, camera, t, source)


def _folder(entry: dict[str, Any], base: Path, camera: str, where: str) -> list[Recording]:
    folder = base / str(entry["folder"])
    pattern = str(entry.get("pattern", "*"))
    if not folder.is_dir():
        raise ConfigError(f"{where}.folder: {folder} is not a folder")
    regex = pattern_regex(pattern)
    found = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        match = regex.fullmatch(path.name)
        if match is not None:
            start = _start_of_name(match, f"{where} ({path.name})")
            found.append(_recording(path, camera, start, f"{where} ({path.name})")
                         if start is None else Recording(path, camera, start, "file name pattern"))
    if not found:
        raise ConfigError(f"{where}: no file in {folder} matches {pattern!r}")
    return found


def _camera(value: object, config: EdgeConfig, where: str) -> str:
    name = str(value).strip() if value not in (None, "") else None
    try:
        return config.camera(name).name
    except ConfigError as exc:
        raise ConfigError(f"{where}.camera: {exc}") from None


def _entry(entry: object, base: Path, config: EdgeConfig, where: str) -> list[Recording]:
    if not isinstance(entry, dict) or ("path" in entry) == ("folder" in entry):
        raise ConfigError(f"{where}: give either path or folder (with pattern)")
    unknown = set(entry) - {"path", "folder", "pattern", "camera", "start"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    camera = _camera(entry.get("camera"), config, where)
    if "folder" in entry:
        return _folder(entry, base, camera, where)
    start = entry.get("start")
    when = parse_time(start.isoformat() if isinstance(start, datetime) else str(start), f"{where}.start") \
        if start else None
    return [_recording(base / str(entry["path"]), camera, when, where)]


def _csv_rows(path: Path) -> list[dict[str, Any]]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and "path" not in rows[0]:
        raise ConfigError(f"{path}: the CSV needs a header row with path (and camera, start)")
    return [{k: v for k, v in row.items() if k and v not in (None, "")} for row in rows]


def load_manifest(path: Path, config: EdgeConfig) -> list[Recording]:
    """The recordings of a CSV or YAML manifest (see the module docstring), in manifest order."""
    if not path.is_file():
        raise ConfigError(f"manifest {path} does not exist")
    if path.suffix.lower() == ".csv":
        entries: object = _csv_rows(path)
    else:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        entries = data.get("recordings") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise ConfigError(f"{path}: a YAML manifest is a mapping with a list under recordings")
    assert isinstance(entries, list)
    recordings = [r for i, e in enumerate(entries) for r in _entry(e, path.parent, config, f"{path.name}[{i}]")]
    if not recordings:
        raise ConfigError(f"manifest {path} lists no recording")
    return recordings
