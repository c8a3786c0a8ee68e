"""The end-of-batch summary: jobs, throughput, the merged windows and the counts per camera, line, direction
and class."""

from __future__ import annotations

from collections import Counter

from edge.batch.runner import BatchSummary
from edge.payloads import WindowMetrics
from edge.types import ROAD_USER_CLASSES


def merged_counts(records: list[WindowMetrics]) -> Counter[tuple[str, str, str, str]]:
    """(camera, line, direction, class) -> crossings, over the merged metrics."""
    out: Counter[tuple[str, str, str, str]] = Counter()
    for rec in records:
        for line, per_dir in rec.counts.items():
            for direction, per_class in per_dir.items():
                for cls, n in per_class.items():
                    out[(rec.camera, line, direction, cls)] += n
    return out


def _counts_table(records: list[WindowMetrics]) -> str:
    counts = merged_counts(records)
    keys = sorted({k[:3] for k in counts})
    if not keys:
        return "counts: none"
    rows = [["camera", "line", "direction", *ROAD_USER_CLASSES, "total"]]
    for camera, line, direction in keys:
        per_class = [counts.get((camera, line, direction, c), 0) for c in ROAD_USER_CLASSES]
        rows.append([camera, line, direction, *map(str, per_class), str(sum(per_class))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(w) if i > 2 else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(r, widths, strict=True))) for r in rows)


def format_batch_summary(s: BatchSummary) -> str:
    fps = s.frames / s.wall_s if s.wall_s > 0 else 0.0
    cores = s.workers * s.threads
    m = s.merged
    status = "complete" if not s.failed else f"INCOMPLETE: {len(s.failed)} job(s) failed"
    lines = [
        f"batch run {s.run}: {s.recordings} recording(s), {s.video_s / 3600:.2f} h of video, {s.jobs} job(s): "
        f"{s.done} run now, {s.skipped} done before, {len(s.failed)} failed ({status})",
        f"backend {s.backend}",
        f"frames {s.frames} | wall {s.wall_s:.1f} s | {fps:.1f} fps | {fps / max(cores, 1):.1f} fps per core",
        f"windows {m.windows}" + (f" ({len(m.combined)} shared by two recordings, combined)" if m.combined else "")
        + f" | speeds records {m.speeds} | events {m.events}",
        "",
        _counts_table(m.metrics),
    ]
    for label, error in sorted(s.failed.items()):
        lines.append(f"FAILED {label}: {error}")
    names = ["metrics.jsonl", "events.jsonl", *(["speeds.jsonl"] if (s.outdir / "speeds.jsonl").exists() else [])]
    lines.append("output: " + ", ".join(str(s.outdir / n) for n in names) + f" (jobs: {s.outdir / 'jobs'}, "
                 f"ledger: {s.outdir / 'ledger.sqlite'})")
    return "\n".join(lines)
