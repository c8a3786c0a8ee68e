"""Import the JSONL output of ``edge replay`` and ``edge batch`` into the archive.

A path may be a file (imported whatever its name) or a folder, searched for the files the pipeline writes:
``metrics*.jsonl``, ``speeds*.jsonl`` and ``events*.jsonl``. A folder that holds such files is imported and
its subfolders are not: an ``edge batch`` folder's merged records supersede those of its ``jobs/`` (a window
two jobs shared is one merged record). A folder without them is searched in its subfolders (a folder of
replays); hidden folders (a job being written) are skipped. Each line goes through the
same checks as a message from the broker (:mod:`edge.city.records`), so an import and a subscription fill
the archive identically, and importing the same output twice changes nothing (every record is a duplicate).
Each file is one transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from edge.city.records import Checker, Invalid
from edge.city.store import Archive
from edge.errors import EdgeError

PIPELINE_FILES = ("metrics*.jsonl", "speeds*.jsonl", "events*.jsonl")


@dataclass
class ImportSummary:
    files: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)  # inserted / updated / duplicate / quarantined

    def line(self) -> str:
        parts = ", ".join(f"{k} {self.outcomes[k]}" for k in ("inserted", "updated", "duplicate", "quarantined"))
        return f"{self.files} file(s): {parts}"


def _folder_files(folder: Path) -> list[Path]:
    here = sorted({f for pattern in PIPELINE_FILES for f in folder.glob(pattern) if f.is_file()})
    if here:
        return here
    subfolders = sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    return [f for d in subfolders for f in _folder_files(d)]


def jsonl_files(paths: Iterable[Path]) -> list[Path]:
    """The files to import: each given file, and the pipeline's JSONL files of each given folder."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += _folder_files(path)
        elif path.is_file():
            found.append(path)
        else:
            raise EdgeError(f"{path}: no such file or folder to import")
    return found


def import_file(archive: Archive, checker: Checker, path: Path, summary: ImportSummary) -> None:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise EdgeError(f"{path}: cannot read it: {exc.strerror}") from None
    with archive.batch():
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            source = f"file:{path}:{number}"
            result = checker.check(line)
            if isinstance(result, Invalid):
                archive.quarantine(line, result.reason, kind=result.kind, source=source)
                summary.outcomes["quarantined"] += 1
            else:
                summary.outcomes[archive.store(result, source)] += 1
    summary.files += 1


def import_paths(archive: Archive, checker: Checker, paths: Iterable[Path]) -> ImportSummary:
    summary = ImportSummary()
    for path in jsonl_files(paths):
        import_file(archive, checker, path, summary)
    return summary
