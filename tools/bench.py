"""Throughput benchmark: decode-only fps and pipeline fps of the same file, measured in one run.

    EDGE_MODEL_DIR=../shared/models python tools/bench.py VIDEO -c CONFIG [--stride K] [--gating] [--clips]

Prints, from one process on one machine:

- decode-only fps twice: *raw* (FFmpeg demux + decode, frames discarded: the hard limit of the device)
  and *to analysis copies* (the same source the pipeline reads: decode plus scaling to the detector's
  input size);
- pipeline fps (``edge replay``: decoding overlapping detection and analytics), its ratio
  to both decode-only figures, and speed against real time.

The three run in turn ``--runs`` times (a burst of other load on a shared machine hits all alike) and the
best of each counts; the ratio of each round is printed too. Every round starts with a fresh, warmed-up
detector and must give the same counts.
- for the fastest pipeline round: time per stage (decode, motion gate, preprocess, inference, postprocess,
  tracking, analytics), CPU use and the counts; the peak RSS of the process.

``--clips`` turns on clip recording with a 5 s pre-event buffer and forces one event every 10 s of video,
so the peak RSS includes the pre-event buffer and the clip writer.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from edge.config import ClipsConfig, MotionGatingConfig, load_config
from edge.detect import Detector
from edge.replay import ReplaySummary, replay
from edge.source import FileSource
from edge.stages import ANALYTICS_THREAD


@dataclass(frozen=True)
class Round:
    raw_fps: float
    copies_fps: float
    summary: ReplaySummary
    detector: Detector
    cpu_s: float


def decode_raw(video: Path) -> tuple[int, float]:
    """Frames and seconds to demux and decode every frame, converting nothing."""
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # as edge.source does
        t0 = time.perf_counter()
        n = sum(1 for _ in container.decode(stream))
        return n, time.perf_counter() - t0


def decode_copies(video: Path, fit_px: tuple[int, int]) -> tuple[int, float]:
    """Frames and seconds for the pipeline's own source: decode plus the analysis copies."""
    with FileSource(video, fit_px=fit_px) as src:
        t0 = time.perf_counter()
        n = sum(1 for _ in src)
        return n, time.perf_counter() - t0


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", type=Path)
    ap.add_argument("-c", "--config", type=Path, required=True)
    ap.add_argument("--model", help="manifest model (default: the config's)")
    ap.add_argument("--input-size", type=int, nargs=2, metavar=("W", "H"), help="input size of a dynamic model")
    ap.add_argument("--threads", type=int, help="onnxruntime threads (default: the config's)")
    ap.add_argument("--stride", type=int, help="detect every k-th frame (detector.stride_frames)")
    ap.add_argument("--gating", action="store_true", help="motion gating with default settings")
    ap.add_argument("--clips", action="store_true", help="clips on: 5 s pre-event buffer, an event every 10 s")
    ap.add_argument("--runs", type=int, default=3,
                    help="rounds of (decode-only raw, decode-only, pipeline); the best of each counts (default 3)")
    args = ap.parse_args()

    config = load_config(args.config)
    update: dict[str, object] = {}
    if args.model:
        update["model"] = args.model
        update["input_size_px"] = None  # the model's own size unless --input-size says otherwise
    if args.input_size:
        update["input_size_px"] = tuple(args.input_size)
    if args.threads:
        update["threads"] = args.threads
    if args.stride:
        update["stride_frames"] = args.stride
    if args.gating:
        update["motion_gating"] = MotionGatingConfig()
    config = config.model_copy(update={"detector": config.detector.model_copy(update=update)})
    fit = Detector(config.detector).input_size_px
    with FileSource(args.video, fit_px=fit) as first:
        warm = next(iter(first)).image
    events: tuple[float, ...] = ()
    rounds: list[Round] = []
    with tempfile.TemporaryDirectory() as out:
        if args.clips:
            clips = ClipsConfig(enabled=True, store_dir=Path(out) / "clips", pre_roll_s=5.0)
            config = config.model_copy(update={"clips": clips})
            events = tuple(float(t) for t in range(10, 3600, 10))
        for i in range(args.runs):  # round robin: a burst of other load hits decode and pipeline alike
            print(f"round {i + 1}/{args.runs}: decode-only raw, decode-only, pipeline ...", file=sys.stderr, flush=True)
            raw, copies = decode_raw(args.video), decode_copies(args.video, fit)
            detector = Detector(config.detector)  # fresh timers; warmed up so the clock starts with the replay
            detector(np.zeros_like(warm))  # an analysis copy's size: an automatic input size is picked here
            cpu0 = cpu_s()
            s = replay(args.video, config, detector, Path(out) / f"run{i}", force_events_s=events)
            rounds.append(Round(raw[0] / raw[1], copies[0] / copies[1], s, detector, cpu_s() - cpu0))
    counts = {tuple(sorted(r.summary.counts.items())) for r in rounds}
    best = max(rounds, key=lambda r: r.summary.fps)
    s, detector, cpu = best.summary, best.detector, best.cpu_s
    raw_fps = max(r.raw_fps for r in rounds)
    copies_fps = max(r.copies_fps for r in rounds)
    fps = s.fps
    n = max(s.frames, 1)
    dt = s.detector_times
    calls = max(dt.calls, 1) if dt else 1
    stages = [
        ("decode + analysis copy", "decode", s.decode_s / n),
        ("motion gate", "detect", s.times.gate_s / n),
        ("preprocess", "detect", dt.preprocess_s / n if dt else 0.0),
        ("inference", "detect", dt.inference_s / n if dt else 0.0),
        ("postprocess", "detect", dt.postprocess_s / n if dt else 0.0),
        ("tracking", "analytics", s.times.track_s / n),
        ("analytics", "analytics", s.times.analytics_s / n),
        ("  of which ground+conflicts", "analytics", s.times.conflicts_s / n),
    ]
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    d = config.detector
    print(f"video            {args.video} ({s.frames} frames, {s.video_s:.1f} s); {args.runs} rounds, best of each")
    print(f"model            {d.model} {detector.input_w}x{detector.input_h}, {d.threads} thread(s), "
          f"{', '.join(detector.providers)}; stride {d.stride_frames}, "
          f"motion gating {'on' if d.motion_gating else 'off'}, clips {'on (5 s pre-roll)' if args.clips else 'off'}")
    layout = "decode | detect | analytics" if ANALYTICS_THREAD else "decode | detect + analytics"
    print(f"cpu              {os.cpu_count()} cores; threads: {layout}")
    print(f"decode-only raw  {raw_fps:8.1f} fps  (demux + decode, nothing converted)")
    print(f"decode-only      {copies_fps:8.1f} fps  (the pipeline's source: decode + copies fitting {fit[0]}x{fit[1]})")
    print(f"pipeline         {fps:8.1f} fps  ({s.frames} frames in {s.wall_s:.2f} s, detector on "
          f"{s.detected_frames} = {100 * s.detected_frames / n:.0f} % of frames)")
    print(f"ratio            {fps / copies_fps:8.3f} x decode-only   ({fps / raw_fps:.3f} x decode-only raw)")
    per_round = [r.summary.fps / r.copies_fps for r in rounds]
    print(f"  per round      {', '.join(f'{x:.3f}' for x in per_round)} x decode-only (median "
          f"{statistics.median(per_round):.3f}); pipeline fps {', '.join(f'{r.summary.fps:.1f}' for r in rounds)}")
    print(f"real time        {s.x_real_time:8.2f} x")
    print(f"cpu use          {cpu / s.wall_s:8.2f} cores busy on average during the pipeline")
    print("per stage (thread): ms per frame")
    for name, thread, sec in stages:
        print(f"  {name:28} {thread:9} {1000 * sec:7.2f}")
    if dt:
        print(f"  inference per detector call      {1000 * dt.inference_s / calls:7.2f} ms")
    if s.clips is not None:
        c = s.clips
        print(f"clips            {c.written} written, {c.dropped_busy + c.dropped_enospc + c.failed} dropped/failed")
    print(f"near-misses      {dict(sorted(s.events.items()))}")
    print(f"peak RSS         {peak_rss_mb:8.1f} MB")
    print(f"counts           {dict(sorted(s.counts.items()))}"
          + ("" if len(counts) == 1 else f"  DIFFERENT between rounds: {sorted(counts)}"))


if __name__ == "__main__":
    main()
