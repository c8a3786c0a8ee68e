"""Privacy invariants of clips (P1-P3), with real footage, real encoders and ffprobe as the judge."""

from __future__ import annotations

import math
import os
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.clips.buffer import PacketRing
from edge.clips.recorder import WRITER_NICE, ClipRecorder, build_recorder
from edge.clips.store import ClipStore, clip_id
from edge.config import ClipsConfig, EdgeConfig
from edge.detect import Detector
from edge.errors import ClipError
from edge.replay import replay
from edge.source import FileSource, LiveSource
from edge.types import EncodedPacket, StreamInfo
from tests.clip_helpers import clip_files, probe_frames, probe_ok, probe_streams
from tests.conftest import repo_config, shared_path


def with_clips(config: EdgeConfig, **clips: object) -> EdgeConfig:
    return config.model_copy(update={"clips": ClipsConfig.model_validate({"enabled": True, **clips})})


@pytest.fixture(scope="module")
def carpark(model_dir: Path) -> EdgeConfig:
    return repo_config("carpark.yaml", model_dir)


def test_clips_from_a_source_with_audio_have_one_video_stream(carpark: EdgeConfig, tmp_path: Path) -> None:
    video = shared_path("footage/carpark-audio/car-detection.mp4")
    assert "audio" in probe_streams(video), "the fixture must carry audio for this test to mean anything"
    config = with_clips(carpark, pre_roll_s=2, post_roll_s=2)
    summary = replay(video, config, Detector(config.detector), tmp_path, force_events_s=(3.0, 20.0))
    assert summary.clips is not None
    assert summary.clips.written == 2
    clips = clip_files(tmp_path / "clips")
    assert len(clips) == 2
    for clip in clips:
        assert probe_streams(clip) == ["video"]


def test_1080p_bench_copy_with_audio_gives_video_only_clips(model_dir: Path, tmp_path: Path) -> None:
    video = shared_path("footage/bench/carpark_1080p_audio.mp4")
    assert "audio" in probe_streams(video)
    config = with_clips(repo_config("carpark-1080p.yaml", model_dir), pre_roll_s=1, post_roll_s=1)
    replay(video, config, Detector(config.detector), tmp_path, max_frames=60, force_events_s=(2.0,))
    (clip,) = clip_files(tmp_path / "clips")
    assert probe_streams(clip) == ["video"]
    assert clip.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "clips").stat().st_mode & 0o777 == 0o700


def test_clip_frames_equal_the_event_windows(carpark: EdgeConfig, tmp_path: Path) -> None:
    """Sum of clip frames = sum of event windows x fps (+-1 per clip); overlapping events merge."""
    video = shared_path("footage/carpark-audio/car-detection.mp4")
    fps = 12.5
    pre, post = 2.0, 1.5
    # 4.0 and 5.0 overlap -> one clip [2.0, 6.5]; 12.0 -> [10.0, 13.5]; 20.0 -> [18.0, 21.5]
    events = (4.0, 5.0, 12.0, 20.0)
    windows = [(2.0, 6.5), (10.0, 13.5), (18.0, 21.5)]
    config = with_clips(carpark, pre_roll_s=pre, post_roll_s=post, redaction=None)
    summary = replay(video, config, Detector(config.detector), tmp_path, force_events_s=events)
    clips = clip_files(tmp_path / "clips")
    assert len(clips) == len(windows)
    frames = [probe_frames(c) for c in clips]
    for got, (start, end) in zip(frames, windows, strict=True):
        assert abs(got - (end - start) * fps) <= 1 + 1e-9, (got, start, end)
    assert summary.clips is not None
    assert summary.clips.frames_written == sum(frames)


def test_merged_events_never_exceed_the_clip_limit(carpark: EdgeConfig, tmp_path: Path) -> None:
    video = shared_path("footage/carpark-audio/car-detection.mp4")
    config = with_clips(carpark, pre_roll_s=2, post_roll_s=2, max_clip_s=6, redaction=None)
    # a chain of overlapping events from 3 s to 14 s would make one 15 s clip without the cap
    replay(video, config, Detector(config.detector), tmp_path, force_events_s=tuple(3.0 + i for i in range(12)))
    clips = clip_files(tmp_path / "clips")
    assert len(clips) >= 2
    for clip in clips:
        assert probe_frames(clip) <= math.floor(6 * 12.5) + 1


# ------------------------------------------------------------------------------------------ buffer
def _info() -> StreamInfo:
    return StreamInfo("h264", b"", 1920, 1080, 1, 90_000, 25.0)


def test_ring_keeps_whole_gops_covering_the_pre_roll() -> None:
    ring = PacketRing(keep_s=2.0, max_bytes=10**9)
    ring.start(_info())
    step = 3600  # 25 fps at 90 kHz
    for i in range(25 * 20):  # 20 s, a keyframe every second
        ring.push(EncodedPacket(b"x" * 100, i * step, i * step, keyframe=i % 25 == 0))
    snap = ring.snapshot(start_pts=(499 - 50) * step, end_pts=499 * step)
    assert snap is not None
    assert snap.packets[0].keyframe
    assert snap.packets[0].pts is not None and snap.packets[0].pts <= (499 - 50) * step
    assert ring.bytes <= 100 * 25 * 4  # never more than pre-roll + one GOP + the open GOP


def test_ring_byte_budget_is_never_exceeded() -> None:
    ring = PacketRing(keep_s=60.0, max_bytes=50_000)
    ring.start(_info())
    for i in range(2000):
        ring.push(EncodedPacket(b"x" * 1000, i * 3600, i * 3600, keyframe=i % 25 == 0))
        assert ring.bytes <= 50_000
    assert ring.overflow_drops > 0
    assert ring.peak_bytes <= 50_000


def test_ring_waits_for_a_keyframe_after_a_new_session() -> None:
    ring = PacketRing(keep_s=5.0, max_bytes=10**6)
    ring.start(_info())
    ring.push(EncodedPacket(b"p", 0, 0, keyframe=False))
    assert ring.bytes == 0
    ring.push(EncodedPacket(b"k", 1, 1, keyframe=True))
    assert ring.bytes == 1


# --------------------------------------------------------------------------------------- redaction
def test_redaction_fails_closed_when_frames_have_no_boxes(tmp_path: Path) -> None:
    """Frames the pipeline never saw (no boxes) beyond the carry window: the clip is not written."""
    video = shared_path("footage/carpark-audio/car-detection.mp4")
    config = ClipsConfig(enabled=True, pre_roll_s=2, post_roll_s=1, redaction={"carry_frames": 2})
    store = ClipStore(tmp_path / "clips", 1, 10**9)
    calls: list[int] = []
    recorder = ClipRecorder(config, "dev", "cam", store, redact=lambda image, boxes: calls.append(len(boxes)))
    with FileSource(video, on_packet=recorder.ring) as source:
        for frame in source:
            if frame.index % 10 == 0:  # the pipeline only saw every 10th frame
                recorder.observe(frame, np.zeros((0, 4), np.float32))
            if frame.index == 60:
                recorder.trigger("e1", frame, 0.0)
            if frame.index > 90:
                break
    recorder.close()
    assert recorder.counters.dropped_redaction == 1
    assert recorder.counters.written == 0
    assert clip_files(tmp_path / "clips") == []


def test_redaction_blurs_boxes_in_the_written_clip(tmp_path: Path) -> None:
    video = shared_path("footage/carpark-audio/car-detection.mp4")
    config = ClipsConfig(enabled=True, pre_roll_s=1, post_roll_s=1, redaction={"carry_frames": 0})
    store = ClipStore(tmp_path / "clips", 1, 10**9)
    seen: list[int] = []

    def redact(image: np.ndarray, boxes: np.ndarray) -> None:
        image[:, :] = 0  # stand-in blur: a black frame is easy to find again
        seen.append(len(boxes))

    recorder = ClipRecorder(config, "dev", "cam", store, redact=redact)
    with FileSource(video, on_packet=recorder.ring) as source:
        for frame in source:
            recorder.observe(frame, np.array([[0, 0, 10, 10]], np.float32))
            if frame.index == 40:
                recorder.trigger("e1", frame, 0.0)
            if frame.index > 70:
                break
    recorder.close()
    (clip,) = clip_files(tmp_path / "clips")
    assert recorder.counters.written == 1
    assert len(seen) == probe_frames(clip)
    with FileSource(clip) as decoded:
        assert max(int(f.image.max()) for f in decoded) <= 16  # every frame went through redaction


def test_store_recovery_removes_partials_and_orphans(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    store = ClipStore(root, 1, 10**9)
    store.close()
    (root / f".{clip_id('cam_x', T0_UTC_S)}.partial.mp4").write_bytes(b"half a clip")
    (root / f"{clip_id('cam_x', T0_UTC_S)}.mp4").write_bytes(b"not indexed")
    store = ClipStore(root, 1, 10**9)
    assert clip_files(root) == []
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith("index.sqlite")) == []


def test_a_store_dir_with_files_the_store_did_not_write_is_refused_and_left_alone(tmp_path: Path) -> None:
    """Issue 14 item 2: a store_dir holding a password file and a CA lost both at start-up. Now nothing is
    deleted: the store refuses the folder, and `edge validate-config` says so before anything starts."""
    import subprocess
    import sys

    import yaml

    root = tmp_path / "clips"
    root.mkdir()
    (root / "mqtt-password").write_text("secret")
    (root / "ca.pem").write_text("-----BEGIN CERTIFICATE-----")
    with pytest.raises(ClipError, match=r"ca\.pem, mqtt-password\); it needs a folder of its own"):
        ClipStore(root, 1, 10**9)
    assert sorted(p.name for p in root.iterdir()) == ["ca.pem", "mqtt-password"]
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({"device_id": "dev", "cameras": [{"name": "cam"}],
                                      "clips": {"enabled": True, "store_dir": str(root)}}))
    run = subprocess.run([sys.executable, "-m", "edge.cli", "validate-config", str(config)],
                         capture_output=True, text=True, check=False)
    assert run.returncode == 1 and "clips.store_dir:" in run.stderr and "ca.pem" in run.stderr, run.stderr
    assert sorted(p.name for p in root.iterdir()) == ["ca.pem", "mqtt-password"]


def test_encrypted_clips_decrypt_only_with_the_city_key(carpark: EdgeConfig, tmp_path: Path) -> None:
    import subprocess
    import sys

    keys = tmp_path / "keys"
    subprocess.run([sys.executable, "-m", "edge.cli", "clips", "keygen", "--out", str(keys)], check=True,
                   capture_output=True)
    config = with_clips(carpark, pre_roll_s=1, post_roll_s=1,
                        encryption={"public_key_file": str(keys / "clips-public.pem")})
    summary = replay(shared_path("footage/carpark-audio/car-detection.mp4"), config, Detector(config.detector),
                     tmp_path / "out", force_events_s=(4.0, 12.0))
    assert summary.clips is not None
    assert summary.clips.written == 2
    clips = clip_files(tmp_path / "out" / "clips")
    assert len(clips) == 2
    for clip in clips:
        data = clip.read_bytes()
        assert data[4:8] != b"ftyp"
        assert b"ftyp" not in data and b"moov" not in data
        assert not probe_ok(clip)
        plain = tmp_path / f"{clip.name}.mp4"
        cmd = [sys.executable, "-m", "edge.cli", "clips", "decrypt", str(clip), str(plain), "--key",
               str(keys / "clips-private.pem"), "--device", config.device_id]
        subprocess.run(cmd, check=True, capture_output=True)
        assert probe_streams(plain) == ["video"]
        assert abs(probe_frames(plain) - 2 * 12.5) <= 1  # 2 s window at 12.5 fps, +-1
    tampered = tmp_path / "tampered.enc"
    flipped = bytearray(clips[0].read_bytes())
    flipped[len(flipped) // 2] ^= 0x01
    tampered.write_bytes(bytes(flipped))
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "clips", "decrypt", str(tampered), str(tmp_path / "t.mp4"),
                           "--key", str(keys / "clips-private.pem"), "--device", config.device_id,
                           "--clip-id", clips[0].name.split(".")[0]], capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert not (tmp_path / "t.mp4").exists()


def test_retention_by_age_then_bytes_oldest_first(tmp_path: Path) -> None:
    from edge.clips.store import ClipRecord

    root = tmp_path / "clips"
    store = ClipStore(root, retention_days=2, max_bytes=2500)
    day = 86_400.0
    for i, (created, size) in enumerate([(0.0, 1000), (1.5 * day, 1000), (2.0 * day, 1000), (2.5 * day, 1000)]):
        partial = store.partial_path(f"c{i}", ".mp4")
        partial.write_bytes(b"x" * size)
        store.commit(partial, ClipRecord(f"c{i}", f"c{i}.mp4", "cam", created, created + 5, ("e",), 1, size,
                                         "0" * 64, False, created))
    assert store.enforce_retention(now_s=2.6 * day) == 2  # c0 too old; then c1 to get under 2500 bytes
    assert [r.id for r in store.records()] == ["c2", "c3"]
    assert sorted(p.name for p in clip_files(root)) == ["c2.mp4", "c3.mp4"]
    assert (store.purged_age, store.purged_bytes) == (1, 1)
    store.close()


def test_attestation_names_protocol_hashes_and_checks(model_dir: Path, tmp_path: Path) -> None:
    import hashlib
    import json
    import subprocess
    import sys

    import yaml

    from edge.protocol import PROTOCOL
    from tests.conftest import REPO

    data = yaml.safe_load((REPO / "config" / "carpark.yaml").read_text())
    data["detector"] = {"model_dir": str(model_dir)}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "attest", "-c", str(config)], capture_output=True,
                          text=True, check=False)
    record = json.loads(proc.stdout)
    assert record["protocol"]["id"] == PROTOCOL.id
    assert record["config_sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    assert record["model"]["sha256"] == "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"
    checks = {c["name"]: c["ok"] for c in record["checks"]}
    assert checks["model_sha256"] is True
    assert checks["audio_disabled"] is True
    assert record["effective_limits"]["max_clip_s"] <= PROTOCOL.limits.max_clip_s
    assert record["effective_limits"]["clip_budget_s_per_hour"] == PROTOCOL.limits.max_clip_s_per_hour
    assert record["effective_limits"]["clip_budget_s_per_day"] == PROTOCOL.limits.max_clip_s_per_day
    assert checks["core_dumps_disabled"] is True  # set at start-up, as the service does
    assert record["ok"] is True
    assert proc.returncode == 0


def test_the_clip_writer_runs_below_the_camera_loop(tmp_path: Path) -> None:
    # Metrics before clips: re-encoding must not take CPU from counting on a 2-core device.
    recorder = ClipRecorder(ClipsConfig(enabled=True), "dev", "cam", ClipStore(tmp_path / "clips", 1, 10**9))
    try:
        tid = recorder._writer.native_id
        assert tid is not None
        deadline = time.monotonic() + 5
        while os.getpriority(os.PRIO_PROCESS, tid) != WRITER_NICE and time.monotonic() < deadline:
            time.sleep(0.01)
        assert os.getpriority(os.PRIO_PROCESS, tid) == WRITER_NICE > os.getpriority(os.PRIO_PROCESS, 0)
    finally:
        recorder.close()


# -------------------------------------------------------------------------- P3: clip-seconds budget
CARPARK = "footage/carpark-audio/car-detection.mp4"  # 30.2 s at 12.5 fps
T0_UTC_S = 1_700_000_000.0


def _record_events(store_dir: Path, config: ClipsConfig, events_s: tuple[float, ...], t0_utc_s: float = T0_UTC_S,
                   ) -> tuple[dict[float, str | None], ClipRecorder]:
    """Run the carpark video through a recorder (no pipeline) and trigger an event at each media time;
    return what ``trigger`` answered per event and the closed recorder."""
    recorder = ClipRecorder(config, "dev", "cam", ClipStore(store_dir, 1, 10**9))
    answers: dict[float, str | None] = {}
    with FileSource(shared_path(CARPARK), on_packet=recorder.ring) as source:
        for frame in source:
            recorder.observe(frame, np.zeros((0, 4), np.float32))
            for t in events_s:
                if t not in answers and frame.t_s >= t:
                    answers[t] = recorder.trigger(f"e{t:g}", frame, t0_utc_s + frame.t_s)
    recorder.close()
    return answers, recorder


def _kept_s(store_dir: Path) -> list[tuple[float, float]]:
    store = ClipStore(store_dir, 1, 10**9)
    try:
        return sorted((r.start_utc_s, r.end_utc_s) for r in store.records())
    finally:
        store.close()


def test_clip_budget_keeps_one_10_s_clip_of_a_12_s_budget_and_refuses_the_rest(tmp_path: Path) -> None:
    config = ClipsConfig(enabled=True, pre_roll_s=5, post_roll_s=5, budget_s_per_hour=12, redaction=None)
    # 6 s opens [1, 11]; 9 s would extend it to 14 s (13 s > 12); 20 and 26 s would be new 10 s clips
    answers, recorder = _record_events(tmp_path / "clips", config, (6.0, 9.0, 20.0, 26.0))
    assert answers[6.0] is not None
    assert [answers[t] for t in (9.0, 20.0, 26.0)] == [None, None, None]
    assert recorder.counters.started == recorder.counters.written == 1
    assert recorder.counters.dropped_budget == 3
    (clip,) = clip_files(tmp_path / "clips")
    assert clip.name.startswith(answers[6.0])
    frames = probe_frames(clip)
    assert frames == 125  # 10 s at 12.5 fps: dropped whole, never a longer clip cut to 12 s
    kept = _kept_s(tmp_path / "clips")
    assert sum(e - s for s, e in kept) <= 12.0
    assert abs(sum(e - s for s, e in kept) - frames / 12.5) < 1e-3  # the index holds the real seconds
    assert abs(recorder.counters.written_s - frames / 12.5) < 1e-3


def test_clip_budget_survives_a_restart_and_retention_and_rolls_after_an_hour(tmp_path: Path) -> None:
    config = ClipsConfig(enabled=True, pre_roll_s=5, post_roll_s=5, budget_s_per_hour=12, redaction=None)
    store_dir = tmp_path / "clips"
    first, _ = _record_events(store_dir, config, (6.0,))
    assert first[6.0] is not None
    # a restart: a new recorder on the same store, 100 s later, in the same hour
    again, recorder = _record_events(store_dir, config, (6.0, 20.0), T0_UTC_S + 100)
    assert again == {6.0: None, 20.0: None}
    assert recorder.counters.dropped_budget == 2
    assert len(clip_files(store_dir)) == 1
    # retention deleting the clip (byte budget) gives no seconds back
    store = ClipStore(store_dir, 1, max_bytes=1)
    assert store.enforce_retention() == 1
    store.close()
    assert clip_files(store_dir) == []
    deleted, _ = _record_events(store_dir, config, (20.0,), T0_UTC_S + 200)
    assert deleted == {20.0: None}
    # an hour and more later the hour's budget is free again, the day's still has room
    later, _ = _record_events(store_dir, config, (6.0, 20.0), T0_UTC_S + 3700)
    assert later[6.0] is not None and later[20.0] is None
    # ... and the day's budget binds as well: 12 s a day allows no second clip on the same day
    day_config = config.model_copy(update={"budget_s_per_hour": 120.0, "budget_s_per_day": 12.0})
    day, _ = _record_events(store_dir, day_config, (6.0,), T0_UTC_S + 7 * 3600)
    assert day == {6.0: None}


def test_no_frame_is_stored_in_two_clips_when_an_event_follows_a_closed_clip(carpark: EdgeConfig,
                                                                             tmp_path: Path) -> None:
    """4.0 s makes [2.0, 5.5]; 6.0 s comes after that clip was handed to the writer and would start at
    4.0 s: it must start after 5.5 s, so the clips hold the 5.5 s of [2.0, 7.5] once, not 7 s."""
    video = shared_path(CARPARK)
    config = with_clips(carpark, pre_roll_s=2, post_roll_s=1.5, redaction=None)
    summary = replay(video, config, Detector(config.detector), tmp_path, force_events_s=(4.0, 6.0))
    assert summary.clips is not None and summary.clips.written == 2
    kept = _kept_s(tmp_path / "clips")
    assert len(kept) == 2
    (s1, e1), (s2, e2) = kept
    assert s2 >= e1 - 1e-6, kept  # disjoint time ranges in the index
    assert abs((e2 - s1) - 5.5) <= 0.1, kept
    total = sum(probe_frames(c) for c in clip_files(tmp_path / "clips"))
    assert abs(total - 5.5 * 12.5) <= 1, total  # each frame of [2.0, 7.5] once (the old way: 88 frames)
    assert abs(summary.clips.written_s - total / 12.5) < 1e-3


def test_replay_reports_the_budget_in_summary_and_window_health(carpark: EdgeConfig, tmp_path: Path) -> None:
    import json

    from edge.replay import format_summary

    config = with_clips(carpark, pre_roll_s=2, post_roll_s=2, budget_s_per_hour=5, redaction=None)
    summary = replay(shared_path(CARPARK), config, Detector(config.detector), tmp_path,
                     force_events_s=(4.0, 10.0, 16.0, 22.0))
    assert summary.clips is not None
    assert (summary.clips.written, summary.clips.dropped_budget) == (1, 3)
    text = format_summary(summary)
    assert "budget 3" in text and f"{summary.clips.written_s:.1f} s kept" in text
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert sum(r["health"]["clips_started"] for r in records) == 1
    assert sum(r["health"]["clips_dropped_budget"] for r in records) == 3


def test_window_tally_gives_each_window_the_clips_of_its_own_frames(tmp_path: Path) -> None:
    """A window closes on the first frame of the next one, before that frame's events: they belong to
    the next window."""
    from edge.clips.recorder import WindowClipTally
    from edge.payloads import WindowHealth, WindowMetrics

    recorder = ClipRecorder(ClipsConfig(enabled=True), "dev", "cam", ClipStore(tmp_path / "clips", 1, 10**9))
    try:
        tally = WindowClipTally(recorder)

        def window(start: str) -> WindowMetrics:
            return WindowMetrics(msg_id=start, device="dev", camera="cam", window_start=start, window_s=60,
                                 partial=False, counts={}, health=WindowHealth(frames=1, dropped_frames=0, fps=1.0))

        tally.before_frame()
        recorder.counters.started += 2  # two clips in the first window's frames
        recorder.counters.dropped_budget += 1
        tally.before_frame()  # the next frame closes the first window, then asks for clips itself
        recorder.counters.dropped_budget += 5
        (first,) = tally.stamp([window("2024-05-01T07:00:00Z")])
        assert isinstance(first, WindowMetrics)
        assert (first.health.clips_started, first.health.clips_dropped_budget) == (2, 1)
        (last,) = tally.stamp([window("2024-05-01T07:01:00Z")], final=True)
        assert isinstance(last, WindowMetrics)
        assert (last.health.clips_started, last.health.clips_dropped_budget) == (0, 5)
        (off,) = WindowClipTally(None).stamp([window("2024-05-01T07:00:00Z")])
        assert isinstance(off, WindowMetrics) and off.health.clips_started is None
    finally:
        recorder.close()


# ------------------------------------------------------------------- faults: corrupt data, reconnects
NO_BOXES = np.zeros((0, 4), np.float32)
CARPARK_KEYFRAME_PTS = 120_000  # the carpark clip's second keyframe (4.8 s; time base 1/25000)


class CutKeyframe:
    """The recorder's packet tap with one keyframe cut to an eighth of its bytes on its way into the
    pre-event buffer: the buffer holds a real corrupt packet, while the source decodes the intact one."""

    def __init__(self, ring: PacketRing, keyframe_pts: int) -> None:
        self.ring = ring
        self.keyframe_pts = keyframe_pts

    def start(self, info: StreamInfo) -> None:
        self.ring.start(info)

    def push(self, packet: EncodedPacket) -> None:
        if packet.keyframe and packet.pts == self.keyframe_pts:
            packet = EncodedPacket(packet.data[: len(packet.data) // 8], packet.pts, packet.dts, keyframe=True)
        self.ring.push(packet)


def _feed(recorder: ClipRecorder, events_s: tuple[float, ...], tap: CutKeyframe | None = None,
          ) -> dict[float, str | None]:
    """The carpark clip through ``recorder`` (no pipeline), an event at each media time."""
    answers: dict[float, str | None] = {}
    with FileSource(shared_path(CARPARK), on_packet=tap or recorder.ring) as source:
        for frame in source:
            recorder.observe(frame, NO_BOXES)
            for t in events_s:
                if t not in answers and frame.t_s >= t:
                    answers[t] = recorder.trigger(f"e{t:g}", frame, T0_UTC_S + frame.t_s)
    return answers


def _close_within(recorder: ClipRecorder, limit_s: float, **kwargs: float) -> bool:
    """``recorder.close(**kwargs)`` in a thread; fails the test if it has not returned after ``limit_s``."""
    returned: list[bool] = []
    closer = threading.Thread(target=lambda: returned.append(recorder.close(**kwargs)), daemon=True)
    closer.start()
    closer.join(limit_s)
    assert returned, f"ClipRecorder.close() still blocked after {limit_s} s"
    return returned[0]


def test_a_corrupt_packet_drops_its_clip_and_the_writer_writes_the_next_ones(tmp_path: Path) -> None:
    # Before: PyAV's InvalidDataError (a ValueError) killed the writer thread; the next two clips filled
    # its queue, and close() blocked for ever putting its stop mark into it.
    config = ClipsConfig(enabled=True, pre_roll_s=1, post_roll_s=1, redaction=None)
    recorder = ClipRecorder(config, "dev", "cam", ClipStore(tmp_path / "clips", 1, 10**9))
    # [5, 7] s decodes from the cut keyframe at 4.8 s; [14, 16] and [21, 23] from intact ones
    answers = _feed(recorder, (6.0, 15.0, 22.0), CutKeyframe(recorder.ring, CARPARK_KEYFRAME_PTS))
    assert _close_within(recorder, 60) is True
    c = recorder.counters
    assert (c.started, c.dropped_corrupt, c.written, c.failed) == (3, 1, 2, 0)
    assert c.dropped_faults == 1  # what the device health reports as clips_dropped
    kept = [p.name for p in clip_files(tmp_path / "clips")]
    assert len(kept) == 2
    assert all(any(name.startswith(str(answers[t])) for name in kept) for t in (15.0, 22.0))


def test_close_returns_in_bounded_time_while_the_writer_is_stuck(tmp_path: Path) -> None:
    release = threading.Event()

    def stuck_encrypt(data: bytes, dst: Path, clip_id: str) -> None:  # a writer stuck on a slow disk
        release.wait(60)
        dst.write_bytes(data)

    config = ClipsConfig(enabled=True, pre_roll_s=1, post_roll_s=1, redaction=None)
    recorder = ClipRecorder(config, "dev", "cam", ClipStore(tmp_path / "clips", 1, 10**9), encrypt=stuck_encrypt)
    _feed(recorder, (3.0, 8.0, 13.0, 18.0, 23.0))
    t0 = time.monotonic()
    assert _close_within(recorder, 10, timeout_s=1.0) is False  # the writer is still busy: says so, returns
    assert time.monotonic() - t0 < 3.0
    assert recorder.counters.dropped_busy >= 1
    release.set()
    assert _close_within(recorder, 60) is True  # once unstuck it finishes the queue and stops
    c = recorder.counters
    assert c.written + c.dropped_busy == c.started == 5


def test_a_reconnect_closes_the_open_clip_with_the_packets_of_its_own_session(tmp_path: Path) -> None:
    """The camera reconnects (here: a local file as the camera, reopened at its end) while a clip is
    open. Before: the clip was cut from the buffer after the new session had emptied it (no frame, or
    the new session's frames at the old pts). Now: it holds the frames of its own session, from its
    start through the last frame the pipeline saw there."""
    video = shared_path(CARPARK)
    with FileSource(video) as clean:
        session_pts = [int(f.pts) for f in clean if f.pts is not None]
    pre_s, trigger_pts = 2.0, 22 * 25_000
    config = ClipsConfig(enabled=True, pre_roll_s=pre_s, post_roll_s=10, redaction=None)  # ends past the file
    recorder = ClipRecorder(config, "dev", "cam", ClipStore(tmp_path / "clips", 1, 10**9))
    triggered: int | None = None
    last_seen: int | None = None
    new_session_frames = 0
    with LiveSource(str(video), reconnect_min_s=0.5, reconnect_max_s=0.5, rng=random.Random(0),
                    on_packet=recorder.ring) as src:
        deadline = time.monotonic() + 60
        while new_session_frames < 5 and time.monotonic() < deadline:
            frame = src.read(timeout_s=1.0)
            if frame is None or frame.pts is None:
                continue
            recorder.observe(frame, NO_BOXES)
            if frame.session > 1:
                new_session_frames += 1
                continue
            last_seen = frame.pts
            if triggered is None and frame.pts >= trigger_pts:
                triggered = frame.pts
                assert recorder.trigger("e1", frame, T0_UTC_S) is not None
    assert _close_within(recorder, 60) is True
    assert triggered is not None and last_seen is not None and new_session_frames == 5
    c = recorder.counters
    assert (c.written, c.failed, c.dropped_reconnect) == (1, 0, 0)
    (clip,) = clip_files(tmp_path / "clips")
    expected = [p for p in session_pts if triggered - round(pre_s * 25_000) <= p <= last_seen]
    assert probe_frames(clip) == len(expected) == c.frames_written


def test_cameras_sharing_a_store_sweep_only_their_own_partials(tmp_path: Path) -> None:
    root = tmp_path / "clips"
    other = ClipStore(root, 1, 10**9, camera="cam_2")  # another camera, running, on the same folder
    writing = other.partial_path(clip_id("cam_2", T0_UTC_S), ".mp4.enc")
    writing.write_bytes(b"being written")
    renamed = root / f"{clip_id('cam_2', T0_UTC_S + 60)}.mp4"  # renamed, its index row not in yet
    renamed.write_bytes(b"being committed")
    own_partial = root / f".{clip_id('cam', T0_UTC_S)}.partial.mp4"
    own_partial.write_bytes(b"left by a crash of cam")
    own_orphan = root / f"{clip_id('cam', T0_UTC_S + 1)}.mp4"
    own_orphan.write_bytes(b"not indexed")
    recorder = build_recorder(ClipsConfig(enabled=True, store_dir=root), "dev", "cam")  # cam starts up
    recorder.close()
    recorder.store.close()
    assert writing.exists() and renamed.exists()  # "cam" is a prefix of "cam_2": still not its files
    assert not own_partial.exists() and not own_orphan.exists()
    other.close()
    ClipStore(root, 1, 10**9, camera="cam_2").close()  # cam_2 restarts: now its leftovers go
    assert not writing.exists() and not renamed.exists()



def test_ring_keeps_an_ended_session_only_for_a_held_clip_and_within_the_byte_budget() -> None:
    def session(n: int) -> StreamInfo:
        return StreamInfo("h264", b"", 1920, 1080, 1, 90_000, 25.0, session=n)

    ring = PacketRing(keep_s=5.0, max_bytes=10_000)
    ring.start(session(1))
    for i in range(50):
        ring.push(EncodedPacket(b"x" * 100, i * 3600, i * 3600, keyframe=i % 25 == 0))
    ring.start(session(2))  # no clip held session 1: it is gone
    assert ring.packets(1) is None and ring.bytes == 0
    for i in range(50):
        ring.push(EncodedPacket(b"y" * 100, i * 3600, i * 3600, keyframe=i % 25 == 0))
    ring.hold(25 * 3600)
    ring.start(session(3))  # the held clip keeps session 2's packets, pts and all
    kept = ring.packets(2)
    assert kept is not None and {p.data for p in kept.packets} == {b"y" * 100}
    assert ring.newest_pts(2) == 49 * 3600 and ring.newest_pts() is None
    ring.push(EncodedPacket(b"z" * 100, 0, 0, keyframe=True))
    assert ring.bytes == 5000 + 100  # both sessions count against the budget
    snap = ring.snapshot(25 * 3600, 30 * 3600, session=2)
    assert snap is not None and snap.info.session == 2 and snap.packets[0].data == b"y" * 100
    for i in range(1, 60):  # the new session grows: the old one goes before the budget is exceeded
        ring.push(EncodedPacket(b"z" * 100, i * 3600, i * 3600, keyframe=i % 25 == 0))
        assert ring.bytes <= 10_000
    assert ring.packets(2) is None and ring.overflow_drops >= 1


def test_a_pre_roll_reaching_before_the_first_frame_starts_the_clip_at_it(model_dir: Path, tmp_path: Path) -> None:
    """An event 1 s into a file with a 5 s pre-roll: the clip starts at the first frame, and is named after it
    (the config's origin, the epoch here), not after a time 4 s before the recording (1969; issue 18 item 9)."""
    video = shared_path("footage/bench/carpark_1080p_audio.mp4")
    config = with_clips(repo_config("carpark-1080p.yaml", model_dir), pre_roll_s=5, post_roll_s=1)
    replay(video, config, Detector(config.detector), tmp_path, max_frames=60, force_events_s=(1.0,))
    (clip,) = clip_files(tmp_path / "clips")
    assert clip.name.startswith("lane-1080p_19700101T000000_000Z"), clip.name
