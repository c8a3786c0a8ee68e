"""`edge archive` against a real Mosquitto: nothing is lost through broker restarts and archive downtime, and
duplicates never double-count. Its table equals the set of records published."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from edge.city.config import ArchiveConfig
from edge.city.store import Archive, unpack
from edge.city.subscriber import ArchiveSubscriber
from edge.city.synth import Phase, SiteModel, Synthetic, generate
from edge.publish import MqttPublisher
from tests.mqtt_broker import DEVICE, DEVICE_PASSWORD, MONITOR, MONITOR_PASSWORD, Broker, wait_until

CAMERA = "north"


def _archive_config(broker: Broker, db: Path) -> ArchiveConfig:
    return ArchiveConfig.model_validate({
        "database": str(db),
        "mqtt": {"host": "localhost", "port": broker.tls_port, "tls": {"ca_file": str(broker.pki.ca_crt)},
                 "username": MONITOR, "password_env": "EDGE_TEST_MONITOR_PASSWORD", "client_id": "city-archive",
                 "keepalive_s": 5, "connect_timeout_s": 3, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0},
        "session_expiry_s": 600,
    })


class Running:
    """An ArchiveSubscriber on its own thread."""

    def __init__(self, config: ArchiveConfig) -> None:
        self.subscriber = ArchiveSubscriber(config)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.subscriber.run, args=(self.stop,), daemon=True)
        self.thread.start()
        assert self.subscriber.subscribed.wait(15), "the archive did not subscribe"

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive()


def _put(publisher: MqttPublisher, data: Synthetic, windows: slice) -> int:
    starts = {m.window_start for m in data.metrics[windows]}
    n = 0
    for m in data.metrics[windows]:
        n += publisher.put("metrics", m, CAMERA) is not None
    for s in data.speeds:
        if s.window_start in starts:
            n += publisher.put("metrics", s, CAMERA, leaf="speeds") is not None
    for e in data.events:
        if any(e.time.startswith(w[:16]) for w in starts):
            n += publisher.put("event", e, CAMERA) is not None
    return n


def _drained(publisher: MqttPublisher, timeout_s: float = 30.0) -> None:
    assert wait_until(lambda: publisher.outbox.depth == 0, timeout_s, 0.05), "the publisher did not drain"


def test_the_archive_holds_exactly_what_was_published(broker: Broker, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_TEST_MQTT_PASSWORD", DEVICE_PASSWORD)
    monkeypatch.setenv("EDGE_TEST_MONITOR_PASSWORD", MONITOR_PASSWORD)
    site = SiteModel(device=DEVICE, camera=CAMERA, window_s=60, vehicles_per_hour=400, conflicts_per_1000=40)
    data = generate(site, [Phase(datetime(2024, 5, 1, 7, tzinfo=UTC), 30 / 1440)], seed=11)  # 30 windows
    assert len(data.metrics) == 30 and data.events
    config = _archive_config(broker, tmp_path / "archive.sqlite3")
    archive = Running(config)  # the session exists before anything is published
    publisher = MqttPublisher(broker.publisher_config(tmp_path / "outbox.sqlite3"), DEVICE)
    publisher.start()
    try:
        _put(publisher, data, slice(0, 10))
        broker.stop()  # a broker restart (persistence on) while messages flow
        broker.start()
        _put(publisher, data, slice(10, 20))
        _drained(publisher)
        assert wait_until(lambda: archive.subscriber.counters["connects"] >= 2, 15, 0.05)  # it came back itself
        archive.close()  # the archive is down: the broker queues for its persistent session
        while_down = _put(publisher, data, slice(20, 30))
        duplicates = _put(publisher, data, slice(0, 10))  # a device that sends a stretch again
        publisher.outbox.put("metrics", f"traffic/v1/{DEVICE}/{CAMERA}/metrics", b'{"schema_version": 2, "frame": 1}')
        _drained(publisher)
        broker.wait_persisted()
        broker.kill()  # a crash of the broker after it saved the queue
        broker.start()
        archive = Running(config)
        expected = len(data.metrics) + len(data.speeds) + len(data.events)
        with Archive(config.database, readonly=True) as reader:
            def stored() -> int:
                counts = reader.counts()
                return counts.windows + counts.speeds + counts.events
            assert wait_until(lambda: stored() == expected and reader.counts().quarantined == 1, 30, 0.1), (
                f"{stored()} of {expected} records stored")
            assert wait_until(lambda: archive.subscriber.counters["duplicate"] >= duplicates, 15, 0.1)
            assert archive.subscriber.counters["inserted"] >= while_down  # delivered from the kept session
            _check_tables(reader, data)
    finally:
        publisher.stop(5)
        archive.close()
    counters = archive.subscriber.counters
    assert counters["store_errors"] == 0 and counters["connects"] >= 1


def _check_tables(reader: Archive, data: Synthetic) -> None:
    windows = {m: unpack(p) for m, p in reader.query("SELECT msg_id, payload FROM windows")}
    assert windows == {m.msg_id: m.to_json() for m in data.metrics}
    speeds = {m: unpack(p) for m, p in reader.query("SELECT msg_id, payload FROM speeds")}
    assert speeds == {s.msg_id: s.to_json() for s in data.speeds}
    events = {m: unpack(p) for m, p in reader.query("SELECT msg_id, payload FROM events")}
    assert events == {e.msg_id: e.to_json() for e in data.events}
    assert reader.query("SELECT SUM(count) FROM line_counts")[0][0] == sum(
        n for m in data.metrics for per in m.counts.values() for d in per.values() for n in d.values())
    assert reader.query("SELECT SUM(vehicles_entering) FROM windows")[0][0] == sum(
        m.conflicts.vehicles_entering for m in data.metrics if m.conflicts is not None)
    ((reason,),) = reader.query("SELECT reason FROM quarantine")
    assert "window_metrics.schema.json" in reason


def test_edge_archive_runs_until_sigterm(broker: Broker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command as systemd would run it: it stores what arrives and stops cleanly on SIGTERM."""
    monkeypatch.setenv("EDGE_TEST_MQTT_PASSWORD", DEVICE_PASSWORD)
    config = _archive_config(broker, tmp_path / "archive.sqlite3")
    assert config.mqtt is not None
    (tmp_path / "archive.yaml").write_text(yaml.safe_dump(json.loads(config.model_dump_json(exclude_none=True))))
    env = {**os.environ, "EDGE_TEST_MONITOR_PASSWORD": MONITOR_PASSWORD}
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "archive", "-c", str(tmp_path / "archive.yaml")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        assert proc.stdout is not None
        assert "edge archive:" in proc.stdout.readline()
        assert "subscribed" in proc.stdout.readline()  # the session exists: what is published now is kept
        data = generate(SiteModel(device=DEVICE, camera=CAMERA, window_s=60),
                        [Phase(datetime(2024, 5, 1, 7, tzinfo=UTC), 3 / 1440)], seed=2)
        publisher = MqttPublisher(broker.publisher_config(tmp_path / "outbox.sqlite3"), DEVICE)
        publisher.start()
        _put(publisher, data, slice(0, 3))
        _drained(publisher)
        publisher.stop(5)

        def stored() -> int:
            if not config.database.exists():
                return 0
            with Archive(config.database, readonly=True) as reader:
                return reader.counts().windows
        assert wait_until(lambda: stored() == 3, 15, 0.1)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "edge archive: stopped" in out and "'inserted'" in out
