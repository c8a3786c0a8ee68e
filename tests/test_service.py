"""``edge run`` end to end: a file standing in for a camera, a real Mosquitto, SIGTERM at the end."""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import signal
import sqlite3
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
from edge.errors import ConfigError, EdgeError
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
        # one health shape on the topic (issue 18 item 7): the one after connect carries the cameras too
        health = [m.json() for m in col.messages(f"{PREFIX}/{DEVICE}/health")]
        assert health and all(set(h["cameras"]) == {"north"} for h in health)
        assert len({frozenset(h) - {"cpu_temp_c", "alarm"} for h in health}) == 1
    finally:
        col.stop()


def test_a_failed_attestation_stops_the_service_before_it_starts(tmp_path: Path) -> None:
    """Issue 14 item 2: the service ran on although its attestation said FAILED; now it does not start."""
    config = parse_config({
        "device_id": "dev", "detector": {"model_dir": str(tmp_path / "no-models")},
        "mqtt": {"url": "mqtt://127.0.0.1:9", "outbox_path": str(tmp_path / "outbox.sqlite3")},
        "cameras": [{"name": "north", "source": {"kind": "file", "path": str(tmp_path / "none.mp4")}}],
    })
    (tmp_path / "c.yaml").write_text("{}")
    service = Service(config, tmp_path / "c.yaml", NoDetector())
    assert not service.attestation["ok"]
    with pytest.raises(EdgeError, match=r"the attestation failed, so the service does not start .*model_sha256"):
        service.start()
    assert not any(w.alive for w in service.workers)
    assert service.publisher.counters().connect_attempts == 0  # never went on line


def outbox_rows(path: Path, kind: str = "metrics") -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM q_{kind}").fetchone()[0])


def test_edge_run_flushes_and_exits_cleanly_on_sighup(broker: Broker, tmp_path: Path) -> None:
    """Issue 14 item 11: SIGHUP takes the SIGTERM path (partial window flushed, exit 0) and says in the log
    that a reload means restarting the service; before, the default action killed the process."""
    col = Collector(broker.plain_port, client_id="collector-hup").start()
    try:
        config = device_config(broker, tmp_path, realtime=True, loop=True)
        data = yaml.safe_load(config.read_text())
        data["mqtt"]["health_interval_s"] = 1  # the service's health says how many frames it processed
        config.write_text(yaml.safe_dump(data))
        env = {**os.environ, "EDGE_TEST_MQTT_PASSWORD": DEVICE_PASSWORD}
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "-c", str(config)], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def frames() -> int:
            return max([int(m.json()["cameras"]["north"]["frames"]) for m in col.messages(f"{DEVICE}/health")
                        if "cameras" in m.json()] or [0])

        try:
            assert wait_until(lambda: frames() >= 20, 60)
            proc.send_signal(signal.SIGHUP)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, err
        assert "SIGHUP received: flushing and exiting cleanly" in err and "restarting the service" in err
        assert "edge run: stopped" in out
        metrics_topic = f"{PREFIX}/{DEVICE}/north/metrics"
        assert wait_until(lambda: any(m.json()["partial"] for m in col.messages(metrics_topic)), 10)
        recs = [m.json() for m in col.messages(metrics_topic)]
        assert recs[-1]["partial"] is True and sum(r["health"]["frames"] for r in recs) >= 20
        assert outbox_rows(tmp_path / "outbox.sqlite") == 0  # drained before the exit
        assert wait_until(lambda: col.messages(f"{DEVICE}/status")[-1].json().get("state") == "offline", 10)
    finally:
        col.stop()


def overpass_publish_config(broker: Broker, tmp_path: Path) -> Path:
    """The highway overpass config as camera ``north`` of the test device, publishing to ``broker``."""
    data = yaml.safe_load((REPO / "config" / "highway-overpass.yaml").read_text())
    data["device_id"] = DEVICE
    data["cameras"][0]["name"] = "north"
    data["detector"] = {"model_dir": str(shared_path("models"))}
    data["mqtt"] = broker.publisher_config(tmp_path / "outbox.sqlite").model_dump(mode="json", exclude_none=True)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


def test_replay_drains_on_sigterm_as_on_ctrl_c(broker: Broker, tmp_path: Path) -> None:
    """Issue 14 item 11: SIGTERM mid-replay flushes the partial window and the publisher drains it (as
    KeyboardInterrupt does); before, the default action killed the process with the window unsent."""
    col = Collector(broker.plain_port, client_id="collector-replay-term").start()
    try:
        config = overpass_publish_config(broker, tmp_path)
        env = {**os.environ, "EDGE_TEST_MQTT_PASSWORD": DEVICE_PASSWORD}
        # 3 s into the 33 s video a window closes and is published: proof that the replay is under way
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "replay", str(shared_path("footage/highway-overpass/video1.avi")),
             "-c", str(config), "-o", str(tmp_path / "out"), "--publish", "--start-time", "2024-05-01T07:00:57Z"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        topic = f"{PREFIX}/{DEVICE}/north/metrics"
        try:
            assert wait_until(lambda: len(col.messages(topic)) >= 1, 120)
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 143, err
        assert "SIGTERM received: stopping the replay" in err
        assert wait_until(lambda: len(col.messages(topic)) >= 2, 10)
        first, last = (m.json() for m in col.messages(topic)[:2])
        assert (first["window_start"], first["partial"]) == ("2024-05-01T07:00:00Z", False)
        assert (last["window_start"], last["partial"]) == ("2024-05-01T07:01:00Z", True)
        assert 0 < first["health"]["frames"] + last["health"]["frames"] < 500  # stopped mid-run, flushed
        assert outbox_rows(tmp_path / "outbox.sqlite") == 0  # the publisher drained it before the exit
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
        config = overpass_publish_config(broker, tmp_path)
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


def crashing_service(tmp_path: Path, cameras: tuple[str, ...] = ("north",), seed: int = 3) -> Service:
    """A service whose cameras are files that do not exist: each worker crashes as soon as it starts."""
    config = parse_config({
        "device_id": DEVICE, "detector": {"model_dir": str(shared_path("models"))},
        "mqtt": {"url": "mqtt://127.0.0.1:9", "outbox_path": str(tmp_path / "outbox.sqlite3")},
        "cameras": [{"name": name, "source": {"kind": "file", "path": str(tmp_path / f"unplugged-{name}.mp4")}}
                    for name in cameras],
    })
    config_path = tmp_path / "c.yaml"
    config_path.write_text("{}")
    return Service(config, config_path, NoDetector(), rng=random.Random(seed))


class StubWorker(CameraWorker):
    """A camera the watchdog sees as streaming while ``up`` (no thread, no frames); ``start`` does nothing."""

    up = True

    @property
    def alive(self) -> bool:
        return self.up

    def start(self) -> None:
        pass


def tick_through(service: Service, start: float, end: float, step: float = 0.25) -> tuple[list[float], list[bool]]:
    """Fake-time watchdog ticks from ``start`` to ``end``: the times a worker was restarted, and each tick's
    verdict (True: systemd gets WATCHDOG=1). Waits for each restarted (crashing) worker to end."""
    restarted: list[float] = []
    fed: list[bool] = []
    now = start
    while now < end:
        before = sum(w.stats.restarts for w in service.workers)
        fed.append(service.watchdog_tick(now))
        if sum(w.stats.restarts for w in service.workers) > before:
            restarted.append(now)
            assert wait_until(lambda: not any(w.alive for w in service.workers if not isinstance(w, StubWorker)), 10)
        now += step
    return restarted, fed


def camera_state(service: Service, name: str) -> str:
    cameras = service.health().cameras
    assert cameras is not None
    return cameras[name].state


def test_watchdog_backs_off_and_a_dead_camera_does_not_starve_systemd_while_another_is_healthy(
    tmp_path: Path,
) -> None:
    """Issue 14 item 6: restarts 0.5-1 s, 1-2 s, 2-4 s ... apart up to 30-60 s (jittered), never 10 in 10 s;
    with its budget spent the camera is reported "failed" and WATCHDOG=1 goes on while the other camera is
    healthy; once every camera is dead the watchdog is no longer fed."""
    from edge.service import RESTARTS_PER_HOUR

    service = crashing_service(tmp_path, ("north", "south"))
    north = service.workers[0]
    south = StubWorker(service.config, service.config.cameras[1], NoDetector(), north.sink)
    service.workers[1] = south
    north.start()
    assert wait_until(lambda: not north.alive, 10)
    t0 = 1000.0
    restarted, fed = tick_through(service, t0, t0 + 1000)
    assert len(restarted) == RESTARTS_PER_HOUR
    assert len([t for t in restarted if t < t0 + 10]) <= 4  # before: 10 restarts in the first 10 ticks
    gaps = [b - a for a, b in zip([t0, *restarted], restarted, strict=False)]
    for i, gap in enumerate(gaps):
        cap = min(60.0, 2.0**i)
        assert cap / 2 <= gap <= cap + 0.5, (i, gaps)  # exponential, capped, jittered (+ up to 2 ticks)
    assert len({round(g, 2) for g in gaps[-4:]}) > 1  # jitter: the capped gaps differ
    assert all(fed)  # south streams all along: systemd is fed although north is down for good
    assert (camera_state(service, "north"), camera_state(service, "south")) == ("failed", "streaming")
    assert north.stats.restarts == RESTARTS_PER_HOUR

    south.up = False  # now south dies too: it is retried with back-off, then given up on as well
    _, fed = tick_through(service, t0 + 1000, t0 + 2000)
    assert south.stats.restarts == RESTARTS_PER_HOUR
    assert fed[0] is True and fed[-1] is False  # every camera dead: no WATCHDOG=1, systemd restarts us
    assert camera_state(service, "south") == "failed"
    service.publisher.stop(0)


def test_watchdog_restarts_a_crashed_camera_within_its_budget(tmp_path: Path) -> None:
    from edge.service import RESTARTS_PER_HOUR

    service = crashing_service(tmp_path)
    worker = service.workers[0]
    worker.start()
    assert wait_until(lambda: not worker.alive, 10)
    assert worker.error is not None and "unplugged-north.mp4" in str(worker.error)
    assert camera_state(service, "north") == "crashed"
    t0 = 1000.0
    restarted, fed = tick_through(service, t0, t0 + 1000, step=0.5)
    assert worker.stats.restarts == RESTARTS_PER_HOUR  # then it stays down and the watchdog reports it
    assert fed[0] is True and fed[-1] is False  # its only camera is dead: let systemd restart the service
    assert camera_state(service, "north") == "failed"
    # an hour after the first restart the budget allows one again, after the (capped) back-off
    more, _ = tick_through(service, restarted[0] + 3600.5, restarted[0] + 3700, step=0.5)
    assert worker.stats.restarts == RESTARTS_PER_HOUR + 1 and len(more) == 1
    assert camera_state(service, "north") == "crashed"
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


def test_an_unreachable_broker_and_a_file_that_ends_are_said_and_the_run_ends(tmp_path: Path) -> None:
    """Issue 18 item 3, as a user meets it: `edge run` against a broker that is not there says so at the
    default log level, says when its file camera ends, and exits by itself once every file has ended; the
    windows wait in the outbox."""
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = {
        "device_id": DEVICE, "detector": {"model_dir": str(shared_path("models"))},
        "mqtt": {"url": f"mqtt://127.0.0.1:{port}", "outbox_path": str(tmp_path / "outbox.sqlite3")},
        "cameras": [{"name": "north", "source": {"kind": "file", "path": str(shared_path(
            "footage/otc-intersection/Testvideo_Cars-Cyclist_FR20_2020-01-01_00-00-00.mp4"))}}],
    }
    config = tmp_path / "device.yaml"
    config.write_text(yaml.safe_dump(data))
    run = subprocess.run([sys.executable, "-m", "edge.cli", "run", "-c", str(config), "--flush-timeout", "1"],
                         cwd=REPO, capture_output=True, text=True, timeout=90, check=False)
    assert run.returncode == 0, run.stderr
    assert f"WARNING edge.publish.mqtt: MQTT: connect to 127.0.0.1:{port} failed" in run.stderr
    assert "file " in run.stderr and "ended after 60 frames" in run.stderr
    assert "every camera's file has ended: stopping" in run.stderr and "edge run: stopped" in run.stdout
    assert outbox_rows(tmp_path / "outbox.sqlite3") == 1  # the partial window, kept for the broker


def test_a_broker_that_stays_away_is_warned_about_every_five_minutes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from edge.config import MqttConfig
    from edge.publish import mqtt as mqtt_module

    clock = [1000.0]
    monkeypatch.setattr("edge.publish.mqtt.time.monotonic", lambda: clock[0])
    pub = mqtt_module.MqttPublisher(MqttConfig(url="mqtt://127.0.0.1:9", outbox_path=tmp_path / "o.sqlite3"), DEVICE)
    caplog.set_level(logging.INFO, logger="edge.publish.mqtt")
    for step_s in (0, 10, 100, 200, 10, 300):  # attempts at 0, 10, 110, 310, 320, 620 s
        clock[0] += step_s
        pub._unreachable("connect to 127.0.0.1:9 failed: refused")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3  # the first attempt, then 310 s and 620 s
    assert "still unreachable after 4 attempts over 5 min" in warnings[1]
    pub.outbox.close()
