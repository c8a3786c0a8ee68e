"""A batch folder's outputs: each job's records in ``OUTDIR/jobs/JOB_ID/``, and the merged records.

A job's folder is written under a hidden temporary name, fsynced and renamed into place (then the ledger
says ``done``), so a job folder under its final name is always complete. The merged files
(``OUTDIR/metrics.jsonl``, ``speeds.jsonl``, ``events.jsonl``) are made from the job folders of the
batch's jobs alone, again through a temporary file and a rename: rerunning the merge gives the same bytes.

Merged window records are keyed by (device, camera, window_start) (speeds also by line), sorted by it, each
line exactly as the job wrote it: what the device would have published. A key two jobs produced (two
recordings of one camera that share a window: one ends, the next starts inside it) is one record: the
counts, movements, conflicts and health frames summed, marked partial if either part was; speed
statistics that cannot be combined from two parts (p50, p85) are left out of that window's record, counts
and the mean kept. Events come in recording and segment order; the events of a later segment get the
message ids the unsplit replay gives them (their number in the recording's sequence is part of the id).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from edge.batch.job import RECORD_FILES, JobResult, JobSpec
from edge.payloads import ConflictCounts, NearMissEvent, SpeedStats, WindowHealth, WindowMetrics, WindowSpeeds


def job_dir(outdir: Path, job_id: str) -> Path:
    return outdir / "jobs" / job_id


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_job(outdir: Path, job: JobSpec, result: JobResult) -> Path:
    """The job's records and a ``job.json`` about it, into its folder, atomically (see the module docstring)."""
    final = job_dir(outdir, job.job_id)
    tmp = final.parent / f".{job.job_id}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    about = {"job_id": job.job_id, "video": str(job.video), "camera": job.camera, "start": job.start.isoformat(),
             "segment": job.segment, "segments": job.segments, "first_frame": job.span.first_frame,
             "keep_from_window": job.span.keep_from, "keep_until_window": job.span.keep_until,
             "frames": result.frames, "media_s": result.media_s, "wall_s": round(result.wall_s, 3),
             "decode_errors": result.decode_errors, "warnings": list(result.warnings), "worker": result.worker}
    for name, text in [*result.files.items(), ("job.json", json.dumps(about, indent=1) + "\n")]:
        with (tmp / name).open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    _fsync(tmp)
    if final.exists():  # a job finished before, its ledger entry not (the batch was killed in between)
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync(final.parent)
    return final


def _write_atomic(path: Path, lines: Iterable[str]) -> None:
    tmp = path.parent / f".{path.name}.partial"
    with tmp.open("w", encoding="utf-8") as f:
        for line in lines:
            f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def _when(window_start: str) -> datetime:
    return datetime.fromisoformat(window_start.replace("Z", "+00:00"))


# ----------------------------------------------------------------------------------- combining one window
def _add(into: dict[str, object], other: dict[str, object]) -> None:
    """Nested dicts of counts summed into ``into``."""
    for k, v in other.items():
        if isinstance(v, dict):
            sub = into.setdefault(k, {})
            assert isinstance(sub, dict)
            _add(sub, v)
        else:
            into[k] = int(into.get(k, 0)) + int(v)  # type: ignore[call-overload]


def _summed(parts: Iterable[dict[str, object] | None]) -> dict[str, object] | None:
    given = [p for p in parts if p is not None]
    if not given:
        return None
    total: dict[str, object] = {}
    for p in given:
        _add(total, p)
    return total


def _optional_sum(values: Iterable[int | None]) -> int | None:
    given = [v for v in values if v is not None]
    return sum(given) if given else None


def combine_metrics(parts: Sequence[WindowMetrics]) -> WindowMetrics:
    """One window's metrics from the records of two or more jobs (see the module docstring)."""
    frames = sum(p.health.frames for p in parts)
    fps = sum(p.health.fps * p.health.frames for p in parts) / frames if frames else 0.0
    health = WindowHealth(frames=frames, dropped_frames=sum(p.health.dropped_frames for p in parts),
                          fps=round(fps, 3), clips_started=_optional_sum(p.health.clips_started for p in parts),
                          clips_dropped_budget=_optional_sum(p.health.clips_dropped_budget for p in parts))
    conflicts = None
    if any(p.conflicts is not None for p in parts):
        cs = [p.conflicts for p in parts if p.conflicts is not None]
        by_type = _summed(c.model_dump()["by_type"] for c in cs) or {}
        entering = sum(c.vehicles_entering for c in cs)
        total = sum(sum(v.values()) for c in cs for v in c.by_type.values())
        conflicts = ConflictCounts.model_validate({
            "by_type": by_type, "vulnerable": sum(c.vulnerable for c in cs), "vehicles_entering": entering,
            "per_1000_vehicles": round(1000 * total / entering, 2) if entering else None})
    return parts[0].model_copy(update={
        "partial": any(p.partial for p in parts), "counts": _summed(p.model_dump()["counts"] for p in parts) or {},
        "movements": _summed(p.model_dump()["movements"] for p in parts), "conflicts": conflicts,
        "health": health})


def _combine_stats(parts: Sequence[SpeedStats]) -> SpeedStats:
    count = sum(p.count for p in parts)
    means = [(p.mean_kmh, p.count) for p in parts if p.count]
    known = [(m, n) for m, n in means if m is not None]
    mean = round(sum(m * n for m, n in known) / count, 1) if count and len(known) == len(means) else None
    return SpeedStats(count=count, unmeasured=sum(p.unmeasured for p in parts), mean_kmh=mean,
                      over_limit=sum(p.over_limit for p in parts))


def combine_speeds(parts: Sequence[WindowSpeeds]) -> WindowSpeeds:
    """One window's speeds at one line from two or more jobs: counts summed, the mean weighted, no p50/p85."""
    cells: dict[str, dict[str, list[SpeedStats]]] = defaultdict(lambda: defaultdict(list))
    for p in parts:
        for direction, per_class in p.speeds.items():
            for cls, st in per_class.items():
                cells[direction][cls].append(st)
    speeds = {d: {c: _combine_stats(sts) for c, sts in pc.items()} for d, pc in cells.items()}
    return parts[0].model_copy(update={"partial": any(p.partial for p in parts), "speeds": speeds})


# ------------------------------------------------------------------------------------------------ merge
@dataclass(slots=True)
class Merged:
    """What the merge wrote."""

    windows: int = 0
    speeds: int = 0
    events: int = 0
    #: Window keys produced by more than one job, combined into one record.
    combined: list[str] = field(default_factory=list)
    #: The merged metrics records (for the summary's counts).
    metrics: list[WindowMetrics] = field(default_factory=list)


def _merge_windows(lines: list[tuple[str, int, str]], speeds: bool, merged: Merged) -> list[str]:
    """Window record lines (with their job order) keyed and sorted; a key with several distinct records
    combined into one."""
    by_key: dict[tuple[str, ...], list[tuple[int, str]]] = defaultdict(list)
    for _, order, line in lines:
        rec = json.loads(line)
        key = (rec["device"], rec["camera"], rec["window_start"], *([rec["line"]] if speeds else []))
        by_key[key].append((order, line))
    out = []
    for key in sorted(by_key, key=lambda k: (k[0], k[1], _when(k[2]), by_key[k][0][0])):
        parts = list(dict.fromkeys(line for _, line in by_key[key]))  # a duplicate record is the same record
        if len(parts) == 1:
            out.append(parts[0])
            continue
        if speeds:
            out.append(combine_speeds([WindowSpeeds.model_validate_json(p) for p in parts]).to_json())
        else:
            merged.combined.append("/".join(key))
            out.append(combine_metrics([WindowMetrics.model_validate_json(p) for p in parts]).to_json())
    return out


def _event_id(event: NearMissEvent, number: int) -> str:
    """The message id ``edge.pipeline.CameraPipeline`` gives the ``number``-th event of a replay."""
    key = f"edge-event/{event.device}/{event.camera}/{event.time}/{number}"
    return str(uuid.uuid5(uuid.NAMESPACE_URL, key))


def _events(outdir: Path, jobs: Sequence[JobSpec]) -> list[str]:
    """Every job's events; those of a recording's later segments renumbered as in the unsplit replay."""
    out: list[str] = []
    seen: dict[tuple[Path, str, datetime], int] = defaultdict(int)
    for job in jobs:
        recording = (job.video, job.camera, job.start)
        for line in _lines(job_dir(outdir, job.job_id) / "events.jsonl"):
            seen[recording] += 1
            if job.segment > 0:
                event = NearMissEvent.model_validate_json(line)
                line = event.model_copy(update={"msg_id": _event_id(event, seen[recording])}).to_json()
            out.append(line)
    return out


def merge(outdir: Path, jobs: Sequence[JobSpec]) -> Merged:
    """Merge the records of ``jobs`` (all done) into ``OUTDIR/{metrics,speeds,events}.jsonl``."""
    ordered = sorted(jobs, key=lambda j: (j.camera, j.start, str(j.video), j.segment))
    merged = Merged()
    found: dict[str, list[tuple[str, int, str]]] = {name: [] for name in RECORD_FILES}
    for order, job in enumerate(ordered):
        for name in ("metrics.jsonl", "speeds.jsonl"):
            found[name] += [(job.job_id, order, line) for line in _lines(job_dir(outdir, job.job_id) / name)]
    metrics = _merge_windows(found["metrics.jsonl"], False, merged)
    speeds = _merge_windows(found["speeds.jsonl"], True, merged)
    events = _events(outdir, ordered)
    _write_atomic(outdir / "metrics.jsonl", metrics)
    _write_atomic(outdir / "events.jsonl", events)
    if speeds or (outdir / "speeds.jsonl").exists():
        _write_atomic(outdir / "speeds.jsonl", speeds)
    merged.windows, merged.speeds, merged.events = len(metrics), len(speeds), len(events)
    merged.metrics = [WindowMetrics.model_validate_json(line) for line in metrics]
    return merged
