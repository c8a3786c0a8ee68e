"""edge.source against real files and a real ffmpeg stream server (no mocks of cv2).

Live tests serve a test pattern as MPEG-TS over TCP on loopback (RELIABILITY.md 3.3): SIGSTOP makes a
stall, SIGKILL an end of stream, and a fresh ffmpeg on the same port a camera coming back.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.config import FileSourceConfig, RtspSourceConfig, UsbSourceConfig
from edge.errors import SourceError
from edge.source import (
    FileSource,
    FrameSource,
    LiveSource,
    SourceState,
    backoff_delay_s,
    open_source,
)
from edge.types import Detections, analysis_size
from tests.clip_helpers import truncate_keyframe
from tests.conftest import missing, shared_path

#: Disconnect/reconnect cycles in the leak test. RELIABILITY.md B3 asks for 100 (about 2 min here);
#: 20 keeps the suite short and still shows a per-cycle leak of even one descriptor.
LEAK_CYCLES = int(os.environ.get("EDGE_LEAK_CYCLES", "20"))


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        missing("ffmpeg is not on PATH; install it (Debian: apt-get install ffmpeg)")
    return exe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.01) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()


def state_of(src: LiveSource) -> SourceState:
    """``src.state`` read fresh (a helper, so mypy does not narrow the property between reads)."""
    return src.state


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class StreamServer:
    """ffmpeg serving a live 25 fps test pattern as MPEG-TS on tcp://127.0.0.1:PORT (one client each)."""

    def __init__(self, exe: str) -> None:
        self.exe = exe
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None, "server already running"
        self.proc = subprocess.Popen(
            [
                self.exe, "-nostdin", "-loglevel", "error", "-re",
                "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
                "-f", "mpegts", f"{self.url}?listen=1",
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL our own ffmpeg (works while it is stopped too) and reap it."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def server() -> Iterator[StreamServer]:
    srv = StreamServer(_ffmpeg())
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture
def small_clip(tmp_path: Path) -> Path:
    """A 2 s, 160x120, 25 fps clip made by ffmpeg (no shared data needed)."""
    path = tmp_path / "clip.avi"
    subprocess.run(
        [
            _ffmpeg(), "-nostdin", "-loglevel", "error", "-f", "lavfi",
            "-i", "testsrc=size=160x120:rate=25", "-frames:v", "50", "-c:v", "mpeg4", str(path),
        ],
        check=True, timeout=60,
    )
    return path


# ------------------------------------------------------------------------------------------------ file
def test_file_source_yields_every_frame_with_media_time() -> None:
    path = shared_path("footage/highway-overpass/video1.avi")
    with FileSource(path) as src:
        assert src.size == (320, 240)
        assert src.frame_count == 500
        assert src.fps == pytest.approx(15.0, abs=0.01)
        frames = list(src)
    assert [f.index for f in frames] == list(range(500))
    for f in frames:
        assert f.image.shape == (240, 320, 3)
        assert f.image.dtype.name == "uint8"
        assert f.t_s == f.index / src.fps
        assert f.wall_time_s is None
    assert frames[1].image.tobytes() != frames[0].image.tobytes(), "frames must be distinct, not repeats"


def test_analysis_copies_are_small_and_map_back_to_source_pixels() -> None:
    # 1080p for a 416x416 model: divided by 4 (the largest whole factor keeping >= 416x234), never upscaled
    assert analysis_size((1920, 1080), (416, 416)) == (480, 270)
    assert analysis_size((1920, 1080), (640, 384)) == (640, 360)
    assert analysis_size((320, 240), (416, 416)) == (320, 240)
    with FileSource(shared_path("footage/bench/highway_1080p.mp4"), fit_px=(416, 416)) as src:
        assert src.size == (1920, 1080)
        frame = next(iter(src))
    assert frame.image.shape == (270, 480, 3) and frame.source_size == (1920, 1080)
    assert frame.to_source == (4.0, 4.0)
    box = Detections.from_lists([[10, 20, 30, 40]], [0.9], [0]).scaled(*frame.to_source)
    assert box.xyxy.tolist() == [[40, 80, 120, 160]]
    with FileSource(shared_path("footage/bench/highway_1080p.mp4")) as full:
        reference = next(iter(full)).image
    # an area average of the full frame, not a subsample: within a few grey levels of OpenCV's
    expected = cv2.resize(reference, (480, 270), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(frame.image.astype(int) - expected).mean() < 3


def test_file_source_stops_after_close() -> None:
    src = FileSource(shared_path("footage/highway-overpass/video1.avi"))
    it = iter(src)
    assert next(it).index == 0
    src.close()
    assert list(it) == []
    src.close()  # idempotent


#: 30.2 s at 12.5 fps (377 frames, time base 1/25000), a keyframe every 60 frames (4.8 s).
CARPARK = "footage/carpark-audio/car-detection.mp4"
CORRUPT_KEYFRAME_PTS = 120_000  # the second keyframe, frame 60


@pytest.fixture
def corrupt_clip(tmp_path: Path) -> Path:
    """The carpark clip with its second keyframe cut short: a real packet that does not decode."""
    path = tmp_path / "corrupt.mp4"
    truncate_keyframe(shared_path(CARPARK), path, CORRUPT_KEYFRAME_PTS)
    return path


def test_file_source_skips_a_corrupt_packet_counts_it_and_reads_on(corrupt_clip: Path) -> None:
    # Before: PyAV's InvalidDataError ended the replay at frame 60 of 377, with nothing counted.
    with FileSource(corrupt_clip) as src:
        frames = list(src)
        assert src.decode_errors >= 1
    assert frames[-1].pts is not None and frames[-1].pts >= 29 * 25_000  # the last second was read
    assert len(frames) > 300  # only the group of pictures behind the cut keyframe is lost
    assert [f.index for f in frames] == list(range(len(frames)))
    assert {f.session for f in frames} == {1}
    with FileSource(shared_path(CARPARK)) as clean:
        assert sum(1 for _ in clean) == 377
        assert clean.decode_errors == 0


def test_file_with_audio_track_is_read_without_opening_audio() -> None:
    path = shared_path("footage/carpark-audio/car-detection.mp4")
    probe = subprocess.run(
        [shutil.which("ffprobe") or "ffprobe", "-v", "error", "-show_entries", "stream=codec_type",
         "-of", "json", str(path)],
        check=True, capture_output=True, text=True, timeout=30,
    )
    kinds = [s["codec_type"] for s in json.loads(probe.stdout)["streams"]]
    assert "audio" in kinds, "the fixture must carry an audio track for this test to mean anything"

    with FileSource(path) as src:
        assert src.opened_stream_types == ("video",)
        assert src.size == (768, 432)
        n = sum(1 for f in src if f.image.shape == (432, 768, 3))
    assert n == 377


def test_missing_file_raises_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-video.mp4"
    with pytest.raises(SourceError, match="does not exist") as err:
        FileSource(missing)
    assert str(missing) in str(err.value)


@pytest.mark.parametrize("name", ["notes.txt", "fake.mp4"])
def test_non_video_file_raises_naming_the_path(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("this is not a video\n" * 50, encoding="utf-8")
    with pytest.raises(SourceError) as err:
        FileSource(path)
    assert str(path) in str(err.value)
    assert "ffprobe" in str(err.value), "the message must say how to check the file"


def test_directory_is_not_a_video(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="is not a file"):
        FileSource(tmp_path)


# --------------------------------------------------------------------------------------- pure helpers
def test_backoff_is_capped_exponential_with_full_jitter() -> None:
    rng = random.Random(1234)
    for attempt in range(1, 40):
        ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
        samples = [backoff_delay_s(attempt, 0.5, 8.0, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in samples)
        # Full jitter: spread over the whole range, not clustered at the ceiling.
        assert min(samples) < 0.1 * ceiling
        assert max(samples) > 0.9 * ceiling
    assert backoff_delay_s(10_000, 0.5, 8.0, rng) <= 8.0  # no overflow for huge attempt numbers


def test_backoff_is_reproducible_with_a_seed() -> None:
    a = [backoff_delay_s(n, 1.0, 30.0, random.Random(7)) for n in range(1, 10)]
    b = [backoff_delay_s(n, 1.0, 30.0, random.Random(7)) for n in range(1, 10)]
    assert a == b


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"read_timeout_s": 0.0}, "read_timeout_s"),
        ({"open_timeout_s": float("nan")}, "open_timeout_s"),
        ({"reconnect_min_s": 5.0, "reconnect_max_s": 1.0}, "reconnect_min_s"),
    ],
)
def test_live_source_rejects_bad_timing(kwargs: dict[str, Any], field: str) -> None:
    before = threading.active_count()
    with pytest.raises(ValueError, match=field):
        LiveSource("tcp://127.0.0.1:9", **kwargs)
    assert threading.active_count() == before, "no reader thread may start for rejected arguments"


def test_password_never_reaches_logs_or_target(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.source")
    port = _free_port()
    url = f"rtsp://admin:s3cret-pw@127.0.0.1:{port}/stream"
    with LiveSource(url, open_timeout_s=1, reconnect_min_s=0.05, reconnect_max_s=0.1) as src:
        assert _wait_until(lambda: src.open_failures >= 1, 5)
        assert src.target == f"rtsp://admin:***@127.0.0.1:{port}/stream"
    with LiveSource(f"rtsp://u:pw@[::1]:{port}/s", open_timeout_s=1, reconnect_min_s=0.05) as v6:
        assert v6.target == f"rtsp://u:***@[::1]:{port}/s"
        assert "s3cret-pw" not in {t.name for t in threading.enumerate()}.__repr__()
    assert caplog.records, "the source must log its state changes"
    assert "s3cret-pw" not in caplog.text


def test_open_source_builds_the_configured_source(small_clip: Path) -> None:
    src: FrameSource = open_source(FileSourceConfig(path=small_clip))  # both kinds satisfy FrameSource
    assert isinstance(src, FileSource)
    assert sum(1 for _ in src) == 50
    src.close()

    rtsp = RtspSourceConfig(url=f"tcp://127.0.0.1:{_free_port()}", open_timeout_s=1, reconnect_min_s=0.05)
    with open_source(rtsp, rng=random.Random(0)) as live:
        assert isinstance(live, LiveSource)
        assert live.state is SourceState.CONNECTING

    # No /dev/video* in CI: the USB path must still construct and retry, never raise.
    with open_source(UsbSourceConfig(device_index=63, reconnect_min_s=0.05, reconnect_max_s=0.1)) as usb:
        assert isinstance(usb, LiveSource)
        assert usb.target == "/dev/video63"
        assert _wait_until(lambda: usb.open_failures >= 1, 5)
        assert usb.state is SourceState.CONNECTING


# ------------------------------------------------------------------------------------------------ live
def test_live_reader_keeps_only_the_newest_frame(small_clip: Path) -> None:
    """A file read as a live target (RELIABILITY.md 3.3: the USB path is tested with a file): decoding
    outruns the consumer, so frames are dropped, and each end of file is a reconnect."""
    with LiveSource(str(small_clip), reconnect_min_s=0.02, reconnect_max_s=0.05, rng=random.Random(1)) as src:
        first = src.read(timeout_s=5)
        assert first is not None
        assert first.image.shape == (120, 160, 3)
        assert first.wall_time_s is not None
        assert abs(first.wall_time_s - time.time()) < 5
        assert 0 <= time.monotonic() - first.t_s < 5

        time.sleep(1.0)  # do not consume: the reader must overwrite, not queue
        assert src.dropped_frames > 0
        assert src.reconnects >= 1, "end of file must be treated as a lost stream and reopened"

        newest = src.read(timeout_s=1)
        assert newest is not None
        assert newest.index > 50, "indexes must keep increasing across reconnects (the clip has 50)"
        assert src.frames_read - 1 - newest.index < 50, "read() must return the newest frame, not an old one"

        seen = [newest.index]
        for _ in range(20):
            f = src.read(timeout_s=1)
            assert f is not None
            seen.append(f.index)
        assert seen == sorted(set(seen)), "no frame may be returned twice or out of order"
        age = src.last_frame_age_s
        assert age is not None
        assert age < 1.0
    assert state_of(src) is SourceState.CLOSED
    assert src.read(timeout_s=0.1) is None


def test_live_source_retries_a_closed_port_without_raising() -> None:
    threads_before = threading.active_count()
    src = LiveSource(
        f"tcp://127.0.0.1:{_free_port()}", open_timeout_s=1, read_timeout_s=1,
        reconnect_min_s=0.05, reconnect_max_s=0.2, rng=random.Random(3),
    )
    try:
        assert _wait_until(lambda: src.open_failures >= 3, 5), "it must keep retrying"
        assert src.state in {SourceState.CONNECTING, SourceState.RECONNECTING}
        assert src.read(timeout_s=0.2) is None
        assert src.frames_read == 0
        assert src.last_frame_age_s is None
    finally:
        t0 = time.monotonic()
        src.close()
        close_s = time.monotonic() - t0
    assert close_s < 2.0
    assert state_of(src) is SourceState.CLOSED
    assert threading.active_count() == threads_before


def test_silent_peer_open_gives_up_after_the_open_timeout() -> None:
    """A peer that accepts TCP but never sends (RELIABILITY.md 3.3). Without the open-time timeout
    parameter OpenCV blocks 30 s here."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # never accept(): the kernel completes the handshake, no byte ever comes
        port = listener.getsockname()[1]
        src = LiveSource(f"tcp://127.0.0.1:{port}", open_timeout_s=1, read_timeout_s=1,
                         reconnect_min_s=0.05, reconnect_max_s=0.1, rng=random.Random(4))
        try:
            t0 = time.monotonic()
            assert _wait_until(lambda: src.open_failures >= 1, 3.0)
            assert time.monotonic() - t0 <= 1.0 + 0.5 + 0.1  # open timeout + 0.5 s (B2) + poll slack
            assert src.state is SourceState.CONNECTING
        finally:
            t0 = time.monotonic()
            src.close()
            assert time.monotonic() - t0 < 1.0 + 1.5


def test_stall_is_detected_and_streaming_resumes(server: StreamServer) -> None:
    read_timeout_s = 2.0
    server.start()
    with LiveSource(server.url, open_timeout_s=3, read_timeout_s=read_timeout_s,
                    reconnect_min_s=0.1, reconnect_max_s=0.5, rng=random.Random(5)) as src:
        frames = [f for f in (src.read(timeout_s=10) for _ in range(10)) if f is not None]
        assert len(frames) == 10
        assert src.state is SourceState.STREAMING
        assert frames[0].image.shape == (240, 320, 3)

        server.signal(signal.SIGSTOP)
        t_stop = time.monotonic()
        assert _wait_until(lambda: src.state is not SourceState.STREAMING, read_timeout_s + 1.5)
        latency_s = time.monotonic() - t_stop
        assert latency_s <= read_timeout_s + 1.0, f"stall detected after {latency_s:.2f} s"
        assert src.stalls == 1
        assert state_of(src) is SourceState.RECONNECTING
        last_index = max(f.index for f in frames)
        while (f := src.read(timeout_s=0)) is not None:  # drain what arrived before the stall
            last_index = f.index
            # Frames OpenCV hands back with ok=True after the read timeout are stale decoder leftovers;
            # they must not be published as if captured now.
            assert f.t_s < t_stop + 1.0, "a stale frame from after the stall was published"

        # The stopped ffmpeg lost its client; bring the "camera" back as a fresh process.
        server.signal(signal.SIGCONT)
        server.kill()
        server.start()
        resumed = src.read(timeout_s=15)
        assert resumed is not None, "frames must resume after the camera comes back"
        assert resumed.index > last_index
        assert src.reconnects >= 1
        assert state_of(src) is SourceState.STREAMING


@pytest.mark.slow
def test_reconnect_cycles_leak_no_descriptors_or_threads(server: StreamServer) -> None:
    fds_before = _open_fds()
    threads_before = threading.active_count()
    server.start()
    src = LiveSource(server.url, open_timeout_s=3, read_timeout_s=2,
                     reconnect_min_s=0.05, reconnect_max_s=0.3, rng=random.Random(6))
    try:
        assert src.read(timeout_s=10) is not None
        for cycle in range(1, LEAK_CYCLES + 1):
            server.kill()
            server.start()

            def reconnected(c: int = cycle) -> bool:
                return src.reconnects >= c

            assert _wait_until(reconnected, 15), f"no reconnect in cycle {cycle}"
            assert src.read(timeout_s=5) is not None
        assert threading.active_count() == threads_before + 1  # just the reader
    finally:
        src.close()
    server.kill()
    assert src.reconnects == LEAK_CYCLES
    assert _open_fds() <= fds_before + 2
    assert threading.active_count() == threads_before


def test_live_source_skips_a_corrupt_packet_without_reconnecting(corrupt_clip: Path) -> None:
    """A damaged packet is counted and skipped; it is not a read failure that reopens the camera. (A
    local file as the camera: the reader streams it at decoding speed, then reopens it at its end.)"""
    with LiveSource(str(corrupt_clip), reconnect_min_s=2.0, reconnect_max_s=2.0, rng=random.Random(0)) as src:
        first_session: list[int] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            frame = src.read(timeout_s=1.0)
            if frame is not None and frame.session == 1:
                first_session.append(frame.index)
            elif frame is not None or src.reconnects:
                break
        assert src.decode_errors >= 1
        assert src.stalls == 0
    # frames of the first session go on past the corrupt packet (frame 60) to the end of the file
    assert first_session and max(first_session) > 300, first_session[-5:]
