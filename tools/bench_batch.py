"""Scaling of ``edge batch``: frames per second, and per core, with 1 and 2 workers on this machine, and a
sizing model for N hours of video on M cores, checked against a measured run.

    EDGE_MODEL_DIR=../shared/models python tools/bench_batch.py [--video V -c CONFIG] [--minutes 2]

The input is one recording of ``--minutes`` (default: the highway overpass clip concatenated with ffmpeg,
stream copy), split into segments of ``--segment-s`` with ``--warmup-s`` of warm-up, as ``edge batch`` does
with a long file. Runs, each into a fresh folder (nothing is skipped):

A. 1 worker (onnxruntime gets every core), the recording;
B. 2 workers (one per core), the same recording: the ratio B/A is the scaling on this machine;
C. 2 workers, a recording twice as long: the check of the sizing model fitted on A and B.

Sizing model (one worker per core, each with its own decoder and model, no shared state between jobs)::

    wall_s(N hours, M cores) = T0 + N x 3600 x fps_video x (1 + warmup_s / segment_s) / (M x r_core)

``T0`` is the start-up (worker processes, model loading; measured), ``r_core`` the frames per second one
core sustains with one worker per core (from run B, start-up excluded). The warm-up term counts the frames
each segment decodes before its first window. The model assumes the per-core rate holds as cores are
added: jobs share nothing but the disk (a 1080p H.264 recording is read at a few MB/s per worker), and is
to be re-measured on the target machine type (``r_core`` depends on the CPU, the model and the resolution).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from edge.batch.backends import LocalBackend, cores
from edge.batch.plan import SplitOptions, probe
from edge.batch.runner import BatchOptions, run_batch
from edge.config import EdgeConfig, load_config

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@dataclass(frozen=True, slots=True)
class Run:
    label: str
    workers: int
    threads: int
    frames: int
    video_s: float
    wall_s: float

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s

    def per_core(self, n_cores: int) -> float:
        return self.fps / min(n_cores, self.workers * self.threads)


def concatenated(video: Path, minutes: float, folder: Path) -> Path:
    """``video`` repeated (ffmpeg concat, stream copy) to ``minutes``."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        sys.exit("ffmpeg is not on PATH (apt-get install ffmpeg)")
    length_s = probe(video).duration_s or 30.0
    copies = int(minutes * 60 // length_s) + 1
    (folder / "list.txt").write_text("".join(f"file '{video.resolve()}'\n" for _ in range(copies)))
    out = folder / f"{video.stem}-{minutes:g}min{video.suffix}"
    subprocess.run([ffmpeg, "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i",
                    str(folder / "list.txt"), "-c", "copy", "-t", f"{minutes * 60:g}", str(out)], check=True)
    return out


def startup_s(config: EdgeConfig, workers: int) -> float:
    """Seconds to start ``workers`` local worker processes and load their models."""
    t0 = time.perf_counter()
    backend = LocalBackend(config, workers, max(1, cores() // workers))
    elapsed = time.perf_counter() - t0
    backend.close()
    return elapsed


def batch(label: str, video: Path, config: EdgeConfig, workers: int, split: SplitOptions, folder: Path) -> Run:
    manifest = folder / f"{label}.csv"
    manifest.write_text(f"path,camera,start\n{video},,2024-05-01T07:00:00Z\n")
    s = run_batch(manifest, config, folder / label, BatchOptions(workers=workers, split=split))
    if s.failed:
        sys.exit(f"run {label}: jobs failed: {s.failed}")
    run = Run(label, s.workers, s.threads, s.frames, s.video_s, s.wall_s)
    print(f"{label}: {workers} worker(s) x {s.threads} thread(s), {s.jobs} jobs, {run.frames} frames "
          f"({run.video_s:.0f} s of video) in {run.wall_s:.1f} s: {run.fps:.1f} fps, "
          f"{run.per_core(cores()):.1f} fps per core, {run.video_s / run.wall_s:.1f}x real time", flush=True)
    return run


def sizing(t0: float, r_core: float, fps_video: float, split: SplitOptions, hours: float, n_cores: int) -> float:
    """The model's wall seconds for ``hours`` of video on ``n_cores`` (see the module docstring)."""
    overhead = 1 + split.warmup_s / split.segment_s if split.segment_s else 1.0
    return t0 + hours * 3600 * fps_video * overhead / (n_cores * r_core)


def _report(a: Run, b: Run, c: Run, t0: float, fps_video: float, split: SplitOptions) -> None:
    r_core = b.frames / (b.wall_s - t0) / 2
    predicted = t0 + c.frames / (2 * r_core)
    error = 100 * (predicted - c.wall_s) / c.wall_s
    print(f"\nscaling 1 -> 2 workers on {cores()} cores: {b.fps:.1f} / {a.fps:.1f} fps = {b.fps / a.fps:.2f}x "
          f"(per core {a.per_core(cores()):.1f} -> {b.per_core(cores()):.1f} fps)")
    print(f"sizing model: T0 = {t0:.1f} s start-up, r_core = {r_core:.1f} frames/s per core (run B, start-up "
          f"excluded), video {fps_video:g} fps, segments {split.segment_s:g} s + {split.warmup_s:g} s warm-up")
    print(f"check, run C ({c.video_s:.0f} s of video, 2 workers): predicted {predicted:.1f} s, measured "
          f"{c.wall_s:.1f} s ({error:+.1f} %)")
    print("\nhours of video -> wall hours (the model, one worker per core, "
          f"{fps_video:g} fps video like this one; 30-min segments, 60 s warm-up):")
    study = SplitOptions(segment_s=1800, warmup_s=60)
    sizes = (2, 16, 64)
    print("  hours  " + "  ".join(f"{m:>3} cores" for m in sizes))
    for hours in (24, 168, 1000):
        print(f"  {hours:>5}  " + "  ".join(f"{sizing(t0, r_core, fps_video, study, hours, m) / 3600:>9.1f}"
                                            for m in sizes))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, default=SHARED / "footage/highway-overpass/video1.avi")
    ap.add_argument("-c", "--config", type=Path, default=REPO / "config/highway-overpass.yaml")
    ap.add_argument("--minutes", type=float, default=2.0, help="length of the recording of runs A and B")
    ap.add_argument("--segment-s", type=float, default=60.0)
    ap.add_argument("--warmup-s", type=float, default=10.0)
    args = ap.parse_args()
    if "EDGE_MODEL_DIR" not in os.environ and (SHARED / "models").is_dir():
        os.environ["EDGE_MODEL_DIR"] = str(SHARED / "models")
    config = load_config(args.config)
    split = SplitOptions(segment_s=args.segment_s, warmup_s=args.warmup_s)
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        folder = Path(tmp)
        short = concatenated(args.video, args.minutes, folder)
        long = concatenated(args.video, 2 * args.minutes, folder)
        fps_video = probe(short).fps
        t0 = startup_s(config, 2)
        print(f"{cores()} cores; start-up of 2 workers (spawn, model load): {t0:.1f} s", flush=True)
        a = batch("A", short, config, 1, split, folder)
        b = batch("B", short, config, 2, split, folder)
        c = batch("C", long, config, 2, split, folder)
    _report(a, b, c, t0, fps_video, split)


if __name__ == "__main__":
    main()
