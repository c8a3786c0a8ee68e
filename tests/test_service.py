"""``edge run`` end to end: a file standing in for a camera, a real Mosquitto, SIGTERM at the end."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import yaml

from edge.config import EdgeConfig, FileSourceConfig, load_config, parse_config
from edge.detect import Detector
from edge.errors import ConfigError
from edge.payloads import NearMissEvent, WindowMetrics, WindowSpeeds
from edge.protocol import PROTOCOL
from edge.service import CameraWorker, Service
from edge.types import MOTOR_VEHICLE_CLASSES, Detections
from tests.conftest import REPO, shared_path
from tests.mqtt_broker import (
    DEVICE,
    DEVICE_PASSWORD,
    PREFIX,
    Broker,
    Collector,
    wait_until,
)


def device_config(broker: Broker, tmp_path: Path, **source: object) -> Path:
    mqtt = broker.publisher_config(tmp_path / "outbox.sqlite").model_dump(mode="json", exclude_none=True)
    data = {
        "device_id": DEVICE,
        "detector": {"model_dir": str(shared_path("models"))},
        "mqtt": mqtt,
        "cameras": [{
            "name": "north",
            "source": {"kind": "file", "path": str(shared_path(
                "footage/otc-intersection/Testvideo_Cars-Cyclist_FR20_2020-01-01_00-00-00.mp4")), **source},
            "lines": yaml.safe_load((REPO / "config" / "otc-intersection.yaml").read_text())["cameras"][0]["lines"],
        }],
    }
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_edge_run_publishes_status_metrics_and_goes_offline_on_sigterm(broker: Broker, tmp_path: Path) -> None:
    col = Collector(broker.plain_port, client_id="collector-run").start()
    try:
        config = device_config(broker, tmp_path, realtime=True, loop=True)
        env = {**os.environ, "EDGE_TEST_MQTT_PASSWORD": DEVICE_PASSWORD}
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "-c", str(config)], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            status = f"{PREFIX}/{DEVICE}/status"
            assert wait_until(lambda: any(m.json().get("state") == "online" for m in col.messages(status)), 30)
            online = next(m.json() for m in col.messages(status) if m.json().get("state") == "online")
            assert online["attestation"]["protocol"]["id"] == PROTOCOL.id
            time.sleep(4)  # the 3 s clip plays in real time, then loops
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        assert "edge run: stopped" in out
        metrics_topic = f"{PREFIX}/{DEVICE}/north/metrics"
        # SIGTERM closes the partial window into the outbox and the publisher drains it before leaving
        assert wait_until(lambda: len(col.messages(metrics_topic)) >= 1, 10)
        # windows are aligned to wall-clock time, so a run that straddles a window boundary closes one full
        # window before the partial one
        recs = [m.json() for m in col.messages(metrics_topic)]
        assert 1 <= len(recs) <= 2
        assert recs[-1]["partial"] is True and all(r["partial"] is False for r in recs[:-1])
        frames = sum(r["health"]["frames"] for r in recs)
        assert frames >= 60  # more than one pass of the 60-frame clip, paced in real time
        assert frames <= 20 * 12  # ... and no faster than 20 fps
        assert wait_until(lambda: col.messages(status)[-1].json().get("state") == "offline", 10)
        assert "s3cret" not in err and DEVICE_PASSWORD not in err + out  # secrets never logged
    finally:
        col.stop()


class NoDetector:
    """A detector for tests that never reach inference."""

    input_size_px = (416, 416)

    def __call__(self, image: npt.NDArray[np.uint8]) -> Detections:
        raise AssertionError("inference is not expected in this test")


def test_run_refuses_a_config_without_mqtt_or_sources(tmp_path: Path) -> None:
    config = parse_config({"device_id": "d", "detector": {"model_dir": str(shared_path("models"))},
                           "cameras": [{"name": "c"}]})
    with pytest.raises(ConfigError, match="mqtt"):
        Service(config, tmp_path / "x.yaml", NoDetector())
    with pytest.raises(ConfigError, match="source"):
        CameraWorker(config, config.cameras[0], NoDetector(), None)  # type: ignore[arg-type]


def test_status_payload_stays_small_with_the_attestation(broker: Broker, tmp_path: Path) -> None:
    from edge.attest import attestation
    from edge.config import load_config

    path = device_config(broker, tmp_path)
    record = attestation(load_config(path), path)
    assert len(json.dumps(record)) < 4096
    assert isinstance(load_config(path), EdgeConfig)


def test_replay_publishes_the_same_records_it_writes(broker: Broker, tmp_path: Path) -> None:
    col = Collector(broker.plain_port, client_id="collector-replay").start()
    try:
        data = yaml.safe_load((REPO / "config" / "highway-overpass.yaml").read_text())
        data["device_id"] = DEVICE
        data["cameras"][0]["name"] = "north"
        data["detector"] = {"model_dir": str(shared_path("models"))}
        data["mqtt"] = broker.publisher_config(tmp_path / "outbox.sqlite").model_dump(mode="json", exclude_none=True)
        config = tmp_path / "c.yaml"
        config.write_text(yaml.safe_dump(data))
        env = {**os.environ, "EDGE_TEST_MQTT_PASSWORD": DEVICE_PASSWORD}
        proc = subprocess.run(
            [sys.executable, "-m", "edge.cli", "replay", str(shared_path("footage/highway-overpass/video1.avi")),
             "-c", str(config), "-o", str(tmp_path / "out"), "--publish", "--start-time", "2024-05-01T07:00:50Z"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr
        written = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
        assert len(written) == 2
        topic = f"{PREFIX}/{DEVICE}/north/metrics"
        assert wait_until(lambda: len(col.messages(topic)) >= 2, 10)
        received = sorted((m.json() for m in col.messages(topic)), key=lambda r: r["window_start"])
        assert [r["msg_id"] for r in received] == [r["msg_id"] for r in written]
        assert [r["counts"] for r in received] == [r["counts"] for r in written]
    finally:
        col.stop()


def test_watchdog_restarts_a_crashed_camera_within_its_budget(tmp_path: Path) -> None:
    from edge.service import RESTARTS_PER_HOUR

    config = parse_config({
        "device_id": DEVICE, "detector": {"model_dir": str(shared_path("models"))},
        "mqtt": {"url": "mqtt://127.0.0.1:9", "outbox_path": str(tmp_path / "outbox.sqlite3")},
        "cameras": [{"name": "north", "source": {"kind": "file", "path": str(tmp_path / "unplugged.mp4")}}],
    })
    config_path = tmp_path / "c.yaml"
    config_path.write_text("{}")
    service = Service(config, config_path, NoDetector())
    worker = service.workers[0]
    worker.start()
    assert wait_until(lambda: not worker.alive, 10)
    assert worker.error is not None and "unplugged.mp4" in str(worker.error)
    cameras = service.health().cameras
    assert cameras is not None
    assert cameras["north"].state == "crashed"
    now = 1000.0
    for _ in range(RESTARTS_PER_HOUR + 5):
        service.watchdog_tick(now)
        assert wait_until(lambda: not worker.alive, 10)
        now += 1
    assert worker.stats.restarts == RESTARTS_PER_HOUR  # then it stays down and the watchdog reports it
    assert service.watchdog_tick(now) is False
    service.watchdog_tick(now + 3601)  # an hour later the budget allows a restart again
    assert worker.stats.restarts == RESTARTS_PER_HOUR + 1
    assert wait_until(lambda: not worker.alive, 10)
    service.publisher.stop(0)


def test_device_health_carries_budget_drops_and_seconds_used(tmp_path: Path) -> None:
    from edge.clips.recorder import ClipRecorder
    from edge.clips.store import ClipStore

    config = parse_config({
        "device_id": "dev", "clips": {"enabled": True, "store_dir": str(tmp_path / "clips")},
        "mqtt": {"url": "mqtt://127.0.0.1:9", "outbox_path": str(tmp_path / "outbox.sqlite3")},
        "cameras": [{"name": "north", "source": {"kind": "file", "path": str(tmp_path / "none.mp4")}}],
    })
    (tmp_path / "c.yaml").write_text("{}")
    service = Service(config, tmp_path / "c.yaml", NoDetector())
    recorder = ClipRecorder(config.clips, "dev", "north", ClipStore(tmp_path / "clips", 1, 10**9))
    try:
        service.workers[0].recorder = recorder
        recorder.counters.dropped_budget = 4
        recorder.counters.dropped_busy = 1
        now = time.time()
        recorder.budget.reserve("north_x", now - 30, now - 20)
        cameras = service.health().cameras
        assert cameras is not None
        health = cameras["north"]
        assert (health.clips_dropped_budget, health.clips_dropped) == (4, 1)
        assert abs(health.clip_s_last_hour - 10.0) < 1e-3 and abs(health.clip_s_last_day - 10.0) < 1e-3
    finally:
        recorder.close()
        service.publisher.stop(0)


def test_sd_notify_speaks_the_systemd_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from edge.service import sd_notify

    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert sd_notify("READY=1")
        assert server.recv(64) == b"READY=1"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sd_notify("WATCHDOG=1") is False  # outside systemd: a no-op


class RecordingSink:
    """Keeps what a worker hands on instead of publishing it (a ``RecordSink``)."""

    def __init__(self) -> None:
        self.windows: list[WindowMetrics] = []

    def window(self, record: WindowMetrics) -> None:
        self.windows.append(record)

    def speeds(self, record: WindowSpeeds) -> None:
        pass

    def event(self, event: NearMissEvent) -> None:
        pass

    def close(self) -> None:
        pass


class ThreadNoting:
    """The real detector, noting which threads call it."""

    def __init__(self, detector: Detector) -> None:
        self.detector = detector
        self.input_size_px = detector.input_size_px
        self.threads: set[str] = set()

    def __call__(self, image: npt.NDArray[np.uint8]) -> Detections:
        self.threads.add(threading.current_thread().name)
        return self.detector(image)


@pytest.mark.parametrize("split", [False, True])
def test_worker_counts_the_overpass_with_detection_in_its_own_thread_or_not(split: bool) -> None:
    """A file as the camera: detection and analytics in one thread (2 cores) or two (more cores); both count
    the hand-counted crossings."""
    video = shared_path("footage/highway-overpass/video1.avi")
    with shared_path("footage/highway-overpass/ground_truth_L2.csv").open() as f:
        truth = len(list(csv.DictReader(f)))  # 31 hand-counted crossings, all "up"
    config = load_config(REPO / "config" / "highway-overpass.yaml")
    config = config.model_copy(update={"detector": config.detector.model_copy(
        update={"model_dir": shared_path("models")})})
    camera = config.cameras[0].model_copy(update={"source": FileSourceConfig(kind="file", path=video)})
    sink = RecordingSink()
    detector = ThreadNoting(Detector(config.detector))
    worker = CameraWorker(config, camera, detector, sink, split_analytics=split)
    worker.start()
    assert wait_until(lambda: not worker.alive, 120)
    assert worker.error is None and worker.finished
    assert worker.stats.frames == 500
    assert detector.threads == {"camera-overpass-detect" if split else "camera-overpass"}
    up = sum(n for w in sink.windows
             for cls, n in w.counts["L2"]["up"].items() if cls in MOTOR_VEHICLE_CLASSES)
    assert abs(up - truth) <= 0.05 * truth, up
