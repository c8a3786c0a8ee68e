"""Damaged recordings as a user meets them: a corrupt region in the middle of an MP4, a file cut short.

Each damaged file is made here from a real clip by overwriting or cutting *bytes* (not by re-muxing), so
the container's index still promises every frame while the data does not hold them.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest

from edge.clips.recorder import ClipCounters
from edge.config import parse_config
from edge.detect import DetectorTimes
from edge.pipeline import StageTimes
from edge.replay import ReplaySummary, format_summary
from edge.service import Service
from edge.source import FileSource, short_of
from edge.types import Detections
from tests.conftest import REPO, missing, shared_path

#: 30.2 s at 12.5 fps, 377 frames, time base 1/25000 (a frame every 2000 ticks), index (moov) at the start,
#: a keyframe every 60 frames, with an AAC track interleaved in the mdat.
CARPARK = "footage/carpark-audio/car-detection.mp4"
TICKS_PER_FRAME = 2000
TIME_BASE = Fraction(1, 25_000)


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        missing("ffmpeg is not on PATH; install it (Debian: apt-get install ffmpeg)")
    return exe


def first_seconds(dst: Path, seconds: float, *, faststart: bool) -> Path:
    """The first ``seconds`` of the car-park clip, streams copied (no re-encoding); the index at the start
    (``faststart``, as the original) or at the end (as most recorders write it)."""
    flags = ["-movflags", "+faststart"] if faststart else []
    subprocess.run([_ffmpeg(), "-nostdin", "-loglevel", "error", "-y", "-i", str(shared_path(CARPARK)),
                    "-t", f"{seconds:g}", "-map", "0", "-c", "copy", *flags, str(dst)], check=True, timeout=60)
    return dst


def corrupt_region(src: Path, dst: Path, from_frame: int, n_bytes: int) -> None:
    """``src`` with ``n_bytes`` of random garbage written over the mdat from the video packet of frame
    ``from_frame`` on (a damaged region of a disk or card): the index is intact, the data is not."""
    with av.open(str(src)) as container:
        video = container.streams.video[0]
        pos = next(p.pos for p in container.demux(video) if p.pts == from_frame * TICKS_PER_FRAME)
    assert pos is not None
    data = bytearray(src.read_bytes())
    data[pos:pos + n_bytes] = random.Random(0).randbytes(n_bytes)
    dst.write_bytes(bytes(data))


def cut_bytes(src: Path, dst: Path, fraction: float) -> None:
    """The first ``fraction`` of the bytes of ``src``: a recording cut short (power loss, a full card)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])


@pytest.fixture
def clean_10s(tmp_path: Path) -> Path:
    return first_seconds(tmp_path / "clean.mp4", 10, faststart=True)


@pytest.fixture
def corrupt_10s(clean_10s: Path, tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.mp4"
    corrupt_region(clean_10s, path, from_frame=30, n_bytes=60_000)
    return path


@pytest.fixture
def truncated_carpark(tmp_path: Path) -> Path:
    """The first 30 % of the car-park clip's bytes; its index (at the start) still lists 377 frames."""
    path = tmp_path / "truncated.mp4"
    cut_bytes(shared_path(CARPARK), path, 0.30)
    return path


# ------------------------------------------------------------------------------------------- the source
def test_a_clean_clip_reads_every_frame_it_lists_without_errors(clean_10s: Path) -> None:
    with FileSource(clean_10s) as src:
        frames = list(src)
        assert src.expected_frames == src.frame_count == len(frames) == src.frames_read
        assert src.decode_errors == 0
        assert src.media_s == pytest.approx(len(frames) / src.fps)
    assert [f.t_s for f in frames] == [float(f.pts * TIME_BASE) for f in frames if f.pts is not None]


def test_media_time_after_a_corrupt_region_comes_from_the_pts(clean_10s: Path, corrupt_10s: Path) -> None:
    """Before: ``t_s = index / fps``, so every frame after the lost ones was dated too early (39 lost frames
    at 15 fps moved later windows by 2.6 s)."""
    with FileSource(clean_10s) as clean:
        reference = {f.pts or 0: f.t_s for f in clean}
    with FileSource(corrupt_10s) as src:
        frames = list(src)
        assert src.decode_errors >= 1
        expected = src.frame_count
    assert expected == len(reference) and len(frames) < expected  # frames were lost ...
    assert frames[-1].pts == max(reference)  # ... and reading went on to the end of the file
    assert [f.index for f in frames] == list(range(len(frames)))
    after = [f for f in frames if f.index != (f.pts or 0) // TICKS_PER_FRAME]
    assert after, "the damage must cost frames for this test to mean anything"
    for f in frames:
        assert f.pts is not None and f.t_s == reference[f.pts], f"frame {f.index} (pts {f.pts}) at {f.t_s} s"


def test_a_truncated_file_is_counted_and_reported(truncated_carpark: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING", logger="edge.source"), FileSource(truncated_carpark) as src:
        n = sum(1 for _ in src)
        assert (n, src.expected_frames) == (116, 377)
        assert src.decode_errors == 1  # the early end, for the camera health
    assert any("116 of the 377 frames" in r.getMessage() for r in caplog.records)


def test_shortfall_threshold_is_one_percent() -> None:
    assert not short_of(99, 100) and short_of(98, 100)
    assert not short_of(5, None) and not short_of(100, 100)


# --------------------------------------------------------------------------------------- `edge replay`
def replay_cli(video: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGE_MODEL_DIR": str(shared_path("models"))}
    return subprocess.run([sys.executable, "-m", "edge.cli", "replay", str(video), "-c",
                           str(REPO / "config" / "carpark.yaml"), "-o", str(out), "-q"],
                          capture_output=True, text=True, timeout=300, env=env, check=False)


def test_replay_of_a_truncated_mp4_says_frames_expected_and_read_and_warns(truncated_carpark: Path,
                                                                           tmp_path: Path) -> None:
    """Issue 18 item 1: 116 of 377 frames with exit 0 and no word; the shortfall showed only with -v."""
    proc = replay_cli(truncated_carpark, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "frames 116 read of 377 expected | decode errors 1" in proc.stdout
    assert "WARNING: read 116 of the 377 frames the container lists (69.2 % missing)" in proc.stdout
    assert "WARNING" in proc.stderr and "116 of the 377 frames" in proc.stderr  # the log says it too
    assert (tmp_path / "out" / "metrics.jsonl").read_text().strip()  # what was read is still counted


def test_replay_of_an_mp4_with_a_corrupt_region_counts_the_errors_and_warns(corrupt_10s: Path,
                                                                            tmp_path: Path) -> None:
    proc = replay_cli(corrupt_10s, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    summary = next(line for line in proc.stdout.splitlines() if line.startswith("frames "))
    read, expected, errors = (int(summary.split()[i]) for i in (1, 4, 9))
    assert expected == 125 and read < expected and errors >= 1, summary
    assert "decode error(s): damaged video data was skipped" in proc.stdout
    assert "does not decode" in proc.stderr  # the log names the packet


def test_replay_of_a_clean_clip_has_no_warning(clean_10s: Path, tmp_path: Path) -> None:
    proc = replay_cli(clean_10s, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "frames 125 read of 125 expected | decode errors 0" in proc.stdout
    assert "WARNING" not in proc.stdout + proc.stderr


def test_replay_of_an_mp4_cut_before_its_index_is_a_clear_error(tmp_path: Path) -> None:
    """Index (moov) at the end, as recorders write it: the cut file cannot be opened at all."""
    whole = first_seconds(tmp_path / "whole.mp4", 10, faststart=False)
    cut = tmp_path / "cut.mp4"
    cut_bytes(whole, cut, 0.5)
    proc = replay_cli(cut, tmp_path / "out")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"error: cannot open {cut}: the MP4 has no index (moov box)" in proc.stderr
    assert "truncated" in proc.stderr


def test_summary_lists_expected_frames_decode_errors_and_clip_drops() -> None:
    clips = ClipCounters(started=3, written=1, dropped_corrupt=1, dropped_reconnect=1)
    base = {"video": Path("v.mp4"), "video_s": 10.0, "wall_s": 1.0, "decode_s": 0.5, "times": StageTimes(),
            "detector_times": DetectorTimes(), "counts": {}, "lines": [], "windows": 1, "clips": clips}
    clean = format_summary(ReplaySummary(frames=125, frames_expected=125, **base))  # type: ignore[arg-type]
    assert "frames 125 read of 125 expected | decode errors 0" in clean and "WARNING" not in clean
    assert "corrupt data 1, reconnect 1" in clean
    one_percent = format_summary(ReplaySummary(frames=99, frames_expected=100, **base))  # type: ignore[arg-type]
    assert "WARNING" not in one_percent
    short = format_summary(ReplaySummary(frames=98, frames_expected=100, **base))  # type: ignore[arg-type]
    assert "WARNING: read 98 of the 100 frames" in short
    errors = format_summary(ReplaySummary(frames=100, frames_expected=100, decode_errors=2, **base))  # type: ignore[arg-type]
    assert "WARNING: 2 decode error(s)" in errors
    unknown = format_summary(ReplaySummary(frames=7, **base))  # type: ignore[arg-type]
    assert "frames 7 read of unknown expected" in unknown and "WARNING" not in unknown


# ------------------------------------------------------------------------------------------ device health
class EmptyDetector:
    input_size_px = (416, 416)

    def __call__(self, image: npt.NDArray[np.uint8]) -> Detections:
        return Detections.empty()


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_camera_health_counts_the_decode_errors_of_its_source(damage: str, truncated_carpark: Path,
                                                              corrupt_10s: Path, tmp_path: Path) -> None:
    video = truncated_carpark if damage == "truncated" else corrupt_10s
    config = parse_config({
        "device_id": "dev", "mqtt": {"url": "mqtt://127.0.0.1:9", "outbox_path": str(tmp_path / "outbox.sqlite3")},
        "cameras": [{"name": "north", "source": {"kind": "file", "path": str(video)}}],
    })
    (tmp_path / "c.yaml").write_text("{}")
    service = Service(config, tmp_path / "c.yaml", EmptyDetector())
    worker = service.workers[0]
    try:
        worker.start()
        deadline = time.monotonic() + 120
        while not worker.finished and time.monotonic() < deadline:
            time.sleep(0.1)
        assert worker.finished, worker.error
        cameras = service.health().cameras
        assert cameras is not None
        health = cameras["north"]
        if damage == "truncated":
            assert (health.frames, health.decode_errors) == (116, 1)
        else:
            assert health.decode_errors >= 2  # the packets skipped, and the frames missing at the end
        assert '"decode_errors"' in service.health().model_dump_json()
    finally:
        worker.stop()
        service.publisher.stop(0)
