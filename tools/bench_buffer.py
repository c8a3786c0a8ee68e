"""Memory of the pre-event buffer: encoded packets of a 1080p stream with a 5 s pre-roll (bar: < 64 MB).

    python tools/bench_buffer.py [VIDEO] [--pre-roll-s 5]

Feeds every packet of the file through the same tap the pipeline uses and reports the buffer's peak
bytes, the seconds it covered, and what raw BGR frames for the same pre-roll would have needed.
"""

from __future__ import annotations

import argparse
import resource
from pathlib import Path

from edge.clips.buffer import PacketRing
from edge.source import FileSource

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "footage" / "bench" / "highway_1080p.mp4"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("video", type=Path, nargs="?", default=DEFAULT)
    ap.add_argument("--pre-roll-s", type=float, default=5.0)
    ap.add_argument("--budget-mb", type=float, default=64.0)
    args = ap.parse_args()
    ring = PacketRing(keep_s=args.pre_roll_s + 3.0, max_bytes=int(args.budget_mb * 1024**2))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with FileSource(args.video, on_packet=ring) as src:
        frames = sum(1 for _ in src)
        w, h = src.size
        fps = src.fps
    mb = 1024**2
    raw = args.pre_roll_s * fps * w * h * 3
    print(f"video               {args.video.name}: {w}x{h}, {fps:g} fps, {frames} frames")
    print(f"buffer keeps        {args.pre_roll_s:g} s pre-roll + 3 s margin, whole groups of pictures")
    print(f"buffer peak         {ring.peak_bytes / mb:8.2f} MB (budget {args.budget_mb:g} MB, "
          f"overflow drops {ring.overflow_drops})")
    print(f"raw BGR equivalent  {raw / mb:8.2f} MB for {args.pre_roll_s:g} s")
    print(f"process peak RSS    {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.1f} MB "
          f"(before decoding {rss0 / 1024:.1f} MB)")
    print("PASS" if ring.peak_bytes < 64 * mb else "FAIL")


if __name__ == "__main__":
    main()
