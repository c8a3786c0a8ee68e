"""Throughput benchmark: decode-only fps and pipeline fps of the same file, measured in one run.

    EDGE_MODEL_DIR=../shared/models python tools/bench_replay.py VIDEO -c CONFIG [--repeat 1]

Prints decode-only fps (OpenCV/FFmpeg, frames discarded), pipeline fps (edge replay: decode in a
thread, detect, track, count, windows), their ratio, speed against real time, per-stage time and peak
RSS. Decode-only runs first and last and the better of the two is used, so a cold file cache does not
flatter the ratio.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from edge.config import MotionGatingConfig, load_config
from edge.detect import Detector
from edge.replay import replay
from edge.source import FileSource


def decode_only(video: Path) -> tuple[int, float, float]:
    """Frames, seconds, and the file's frame rate for a pure decode pass."""
    with FileSource(video) as src:
        t0 = time.perf_counter()
        n = sum(1 for _ in src)
        return n, time.perf_counter() - t0, src.fps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", type=Path)
    ap.add_argument("-c", "--config", type=Path, required=True)
    ap.add_argument("--model", help="manifest model (default: the config's)")
    ap.add_argument("--threads", type=int, help="onnxruntime threads (default: the config's)")
    ap.add_argument("--stride", type=int, help="detect every k-th frame (detector.stride_frames)")
    ap.add_argument("--gating", action="store_true", help="motion gating with default settings")
    args = ap.parse_args()

    config = load_config(args.config)
    update: dict[str, object] = {}
    if args.model:
        update["model"] = args.model
    if args.threads:
        update["threads"] = args.threads
    if args.stride:
        update["stride_frames"] = args.stride
    if args.gating:
        update["motion_gating"] = MotionGatingConfig()
    config = config.model_copy(update={"detector": config.detector.model_copy(update=update)})
    detector = Detector(config.detector)

    n1, d1, fps_video = decode_only(args.video)
    with tempfile.TemporaryDirectory() as out:
        s = replay(args.video, config, detector, Path(out))
    n2, d2, _ = decode_only(args.video)
    decode_fps = max(n1 / d1, n2 / d2)
    pipeline_fps = s.fps
    per_frame_ms = {k: 1000 * v / max(s.frames, 1) for k, v in (
        ("decode (reader thread)", s.decode_s), ("detect", s.times.detect_s), ("track", s.times.track_s),
        ("analytics", s.times.analytics_s), ("  of which ground+conflicts", s.times.conflicts_s))}
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"video            {args.video} ({n1} frames, {fps_video:g} fps, {n1 / fps_video:.1f} s)")
    print(f"model            {config.detector.model} {detector.input_w}x{detector.input_h}, "
          f"{config.detector.threads} thread(s), {', '.join(detector.providers)}")
    print(f"decode-only      {decode_fps:8.1f} fps")
    print(f"pipeline         {pipeline_fps:8.1f} fps  ({s.frames} frames in {s.wall_s:.2f} s, detector on "
          f"{s.detected_frames} = {100 * s.detected_frames / max(s.frames, 1):.0f} %)")
    print(f"ratio            {pipeline_fps / decode_fps:8.3f} x decode-only")
    print(f"real time        {s.x_real_time:8.2f} x")
    for stage, ms in per_frame_ms.items():
        print(f"  {stage:22} {ms:7.2f} ms/frame")
    frame_ms = 1000 * s.wall_s / max(s.frames, 1)
    share = 100 * per_frame_ms["  of which ground+conflicts"] / frame_ms
    print(f"ground+conflicts {share:8.2f} % of the per-frame time ({frame_ms:.2f} ms/frame)")
    print(f"near-misses      {dict(sorted(s.events.items()))}")
    print(f"peak RSS         {peak_rss_mb:8.1f} MB")
    print(f"counts           {dict(sorted(s.counts.items()))}")


if __name__ == "__main__":
    main()
