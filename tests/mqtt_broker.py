"""A real Mosquitto for the MQTT tests, a capturing subscriber, and a publisher process to kill.

* :func:`make_pki` builds a throw-away CA, a server certificate for localhost/127.0.0.1, a client
  certificate (CN = the device) and a rogue CA with openssl, per test session. No key is committed.
* :class:`Broker` runs ``mosquitto -c <tmp conf>`` on free loopback ports with a persistence folder
  (``autosave_interval 1``), a password file, an ACL and three listeners: plaintext (the test
  subscriber only), TLS + password, and mutual TLS. It polls the ports instead of sleeping, and stops
  its own process only: terminate, wait, kill.
* :class:`Collector` is a QoS 1 subscriber with a persistent session: what it records is what a consumer
  receives.
* ``python -m tests.mqtt_broker publish ...`` runs an :class:`~edge.publish.MqttPublisher` that puts
  metrics at a fixed rate and appends each ``msg_id`` to a file once ``put`` has returned, so a test can
  SIGKILL it and still know what it promised to deliver.

Mosquitto runs with ``user root`` in this test-only config: started as root it would otherwise switch
to the ``mosquitto`` user, which cannot read the 0600 files the test writes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import MqttConfig
from edge.payloads import WindowHealth, WindowMetrics, iso_utc, window_msg_id

PREFIX = "traffic/v1"
DEVICE = "cam-0001"
DEVICE_PASSWORD = "device-secret-1"  # test-only credentials of a throw-away broker
MONITOR = "monitor"
MONITOR_PASSWORD = "monitor-secret-1"
#: Cameras the ACL lets DEVICE publish for; any other camera's topics are refused (PUBACK 135).
ALLOWED_CAMERAS = ("north", "south")
_BASE = datetime(2024, 5, 1, tzinfo=UTC)


def tool(name: str) -> str | None:
    """Path of a system tool; Debian puts mosquitto in /usr/sbin, which is not on every PATH."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def missing_tools() -> list[str]:
    return [name for name in ("mosquitto", "mosquitto_passwd", "openssl") if tool(name) is None]


def wait_until(pred: Callable[[], bool], timeout_s: float, interval_s: float = 0.02) -> bool:
    """Poll ``pred`` until it holds or ``timeout_s`` passes; return its last value."""
    deadline = time.monotonic() + timeout_s
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_metrics(seq: int, camera: str = "north", device: str = DEVICE, lines: int = 1) -> WindowMetrics:
    """A one-second window numbered ``seq``: unique msg_id and window_start per (camera, seq)."""
    start = iso_utc(_BASE + timedelta(seconds=seq))
    counts = {f"line-{i}": {"in": {"car": seq % 7, "bus": 0}, "out": {"car": 1, "person": 2}} for i in range(lines)}
    return WindowMetrics.model_validate({
        "msg_id": window_msg_id(device, camera, start), "device": device, "camera": camera, "window_start": start,
        "window_s": 1, "partial": False, "counts": counts,
        "health": WindowHealth(frames=25, dropped_frames=0, fps=25.0),
    })


# ------------------------------------------------------------------------------------------------- PKI
@dataclass(frozen=True)
class Pki:
    ca_crt: Path
    server_crt: Path
    server_key: Path
    client_crt: Path
    client_key: Path
    rogue_ca_crt: Path


def _openssl(*args: str, cwd: Path) -> None:
    openssl = tool("openssl") or "openssl"
    subprocess.run([openssl, *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _signed(cwd: Path, ca: str, name: str, subject: str, ext: str | None) -> None:
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", subject, cwd=cwd)
    extra = ["-extfile", ext] if ext else []
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", "2", *extra, cwd=cwd)


def make_pki(d: Path) -> Pki:
    """A CA, a server certificate (DNS:localhost, IP:127.0.0.1), a client certificate, and a rogue CA."""
    d.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "rogue"):
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
                 "-days", "2", "-subj", f"/CN=test-{ca}", cwd=d)
    (d / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _signed(d, "ca", "server", "/CN=localhost", "san.ext")
    _signed(d, "ca", "client", f"/CN={DEVICE}", None)
    return Pki(d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key", d / "rogue.crt")


# ---------------------------------------------------------------------------------------------- broker
@dataclass
class Broker:
    """One Mosquitto process with fixed ports and persistence, so it can be killed and restarted."""

    workdir: Path
    pki: Pki
    plain_port: int = field(default_factory=free_port)
    tls_port: int = field(default_factory=free_port)
    mtls_port: int = field(default_factory=free_port)
    max_packet_size: int = 16384  # the broker's limit, announced in CONNACK (set_max_packet_size to change it)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def _configure(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        if conf.exists():
            return conf
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        passwd = self.workdir / "passwd"
        for i, (user, pw) in enumerate([(DEVICE, DEVICE_PASSWORD), (MONITOR, MONITOR_PASSWORD),
                                        ("cam-0002", DEVICE_PASSWORD)]):
            create = ["-c"] if i == 0 else []
            subprocess.run([tool("mosquitto_passwd") or "mosquitto_passwd", *create, "-b", str(passwd), user, pw],
                           check=True, capture_output=True, timeout=30)
        cams = "".join(f"pattern write {PREFIX}/%u/{cam}/#\n" for cam in ALLOWED_CAMERAS)
        (self.workdir / "acl").write_text(
            f"user {MONITOR}\ntopic read {PREFIX}/#\n\n"
            f"pattern write {PREFIX}/%u/status\npattern write {PREFIX}/%u/health\n{cams}"
        )
        tls = (f"cafile {self.pki.ca_crt}\ncertfile {self.pki.server_crt}\nkeyfile {self.pki.server_key}\n"
               "tls_version tlsv1.2\n")
        conf.write_text(
            "# test-only broker\n"
            "user root\n"
            "per_listener_settings false\n"
            f"persistence true\npersistence_location {self.workdir / 'data'}/\nautosave_interval 1\n"
            f"allow_anonymous false\npassword_file {passwd}\nacl_file {self.workdir / 'acl'}\n"
            f"max_queued_messages 100000\nmax_packet_size {self.max_packet_size}\n"
            "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "connection_messages true\nlog_timestamp_format %H:%M:%S\n"
            f"listener {self.plain_port} 127.0.0.1\n"
            f"listener {self.tls_port} 127.0.0.1\n{tls}"
            f"listener {self.mtls_port} 127.0.0.1\n{tls}require_certificate true\nuse_identity_as_username true\n"
        )
        return conf

    def set_max_packet_size(self, limit: int) -> None:
        """Change the packet limit for the next :meth:`start` (a broker restart, as an operator would do)."""
        conf = self._configure()
        conf.write_text(conf.read_text().replace(f"max_packet_size {self.max_packet_size}\n",
                                                 f"max_packet_size {limit}\n"))
        self.max_packet_size = limit

    def start(self, timeout_s: float = 10.0) -> None:
        """Start and wait until it listens. Readiness comes from the broker's own log line (written once
        every listener is open), not from probe connections, which would add lines to the log that the
        tests read."""
        conf = self._configure()
        offset = self.log_offset()
        log = self.log_path.open("ab")
        proc = subprocess.Popen([tool("mosquitto") or "mosquitto", "-c", str(conf)],
                                stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.proc = proc
        running = wait_until(lambda: proc.poll() is not None or " running" in self.log_since(offset), timeout_s, 0.02)
        if not running or proc.poll() is not None:
            text = self.log_text()
            self.stop()
            raise RuntimeError(f"mosquitto did not start; its log:\n{text}")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash or power loss of the broker would look."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_offset(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def wait_persisted(self, timeout_s: float = 5.0) -> None:
        """Wait for a whole autosave, so that sessions and queued messages made so far survive a SIGKILL.

        Mosquitto logs "Saving in-memory database" before it writes the file, and a SIGKILL during the
        write leaves the previous file (or none); the broker's one thread logs the next save only after
        the last one finished, so the second line since now proves a complete save."""
        offset = self.log_offset()
        if not wait_until(lambda: self.log_since(offset).count("Saving in-memory database") >= 2, timeout_s, 0.05):
            raise RuntimeError(f"mosquitto did not autosave within {timeout_s} s")

    def publisher_config(self, outbox: Path, **overrides: Any) -> MqttConfig:
        """A device config for the TLS + password listener, with test-friendly back-off."""
        data: dict[str, Any] = {
            "host": "localhost", "port": self.tls_port, "tls": {"ca_file": str(self.pki.ca_crt)},
            "username": DEVICE, "password_env": "EDGE_TEST_MQTT_PASSWORD", "outbox_path": str(outbox),
            "outbox_max_bytes": 8 * 2**20, "keepalive_s": 5, "connect_timeout_s": 3,
            "reconnect_min_s": 0.2, "reconnect_max_s": 1.0,
        }
        data.update(overrides)
        return MqttConfig.model_validate(data)


# ------------------------------------------------------------------------------------------- collector
@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    expiry_s: int | None
    t: float  # time.monotonic() at receipt

    def json(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.payload)
        return value


class Collector:
    """QoS 1 subscriber with a persistent session (it survives a broker restart with persistence)."""

    def __init__(self, port: int, client_id: str = "collector", topic: str = f"{PREFIX}/#") -> None:
        self.port = port
        self.topic = topic
        self._lock = threading.Lock()
        self._messages: list[Received] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(MONITOR, MONITOR_PASSWORD)
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, rc: ReasonCode,
                    props: Properties | None) -> None:
        if not rc.is_failure:
            client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[ReasonCode],
                      props: Properties | None) -> None:
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        expiry = getattr(msg.properties, "MessageExpiryInterval", None)
        got = Received(msg.topic, bytes(msg.payload), bool(msg.retain), msg.qos, expiry, time.monotonic())
        with self._lock:
            self._messages.append(got)

    def start(self) -> Collector:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 600
        self.client.connect_async("127.0.0.1", self.port, keepalive=5, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("collector did not subscribe within 10 s")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def messages(self, suffix: str = "") -> list[Received]:
        with self._lock:
            return [m for m in self._messages if m.topic.endswith(suffix)]

    def msg_ids(self, suffix: str) -> list[str]:
        return [str(m.json()["msg_id"]) for m in self.messages(suffix)]

    def statuses(self) -> list[tuple[str, bool, float]]:
        """(state, retained, time) of every status message received."""
        return [(str(m.json()["state"]), m.retain, m.t) for m in self.messages("/status")]


# --------------------------------------------------------------------------------- publisher process
def publisher_command(config: MqttConfig, ids_file: Path, *, rate_hz: float, seq_start: int = 0,
                      count: int = 1_000_000, camera: str = "north") -> list[str]:
    return [sys.executable, "-m", "tests.mqtt_broker", "publish", "--config", config.model_dump_json(),
            "--ids-file", str(ids_file), "--rate-hz", str(rate_hz), "--seq-start", str(seq_start),
            "--count", str(count), "--camera", camera]


def _publish_main(args: argparse.Namespace) -> int:
    from edge.publish import MqttPublisher

    config = MqttConfig.model_validate_json(args.config)
    publisher = MqttPublisher(config, DEVICE)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    publisher.start()
    period = 1.0 / args.rate_hz if args.rate_hz > 0 else 0.0
    with open(args.ids_file, "a", buffering=1, encoding="utf-8") as ids:
        next_t = time.monotonic()
        for seq in range(args.seq_start, args.seq_start + args.count):
            if stop.is_set() or period == 0:
                break
            m = make_metrics(seq, args.camera)
            if publisher.put("metrics", m, m.camera) is not None:
                ids.write(m.msg_id + "\n")  # after put() returned: the message is on disk
            next_t += period
            stop.wait(max(0.0, next_t - time.monotonic()))
    stop.wait()
    drained = publisher.stop(flush_timeout_s=5)
    return 0 if drained else 3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.mqtt_broker")
    sub = ap.add_subparsers(dest="cmd", required=True)
    pub = sub.add_parser("publish", help="run a publisher that puts metrics until SIGTERM")
    pub.add_argument("--config", required=True, help="MqttConfig as JSON")
    pub.add_argument("--ids-file", required=True)
    pub.add_argument("--rate-hz", type=float, default=20.0)
    pub.add_argument("--seq-start", type=int, default=0)
    pub.add_argument("--count", type=int, default=1_000_000)
    pub.add_argument("--camera", default="north")
    args = ap.parse_args(argv)
    os.environ.setdefault("EDGE_TEST_MQTT_PASSWORD", DEVICE_PASSWORD)
    return _publish_main(args)


if __name__ == "__main__":
    raise SystemExit(main())
