"""Soak benchmark: accelerated replay looping against a real Mosquitto that is restarted, for N minutes.

    EDGE_MODEL_DIR=../shared/models python tools/soak.py [--minutes 30] [--restart-every-s 300] [--outage-s 20]

Each loop replays the clip (as fast as the machine allows) into its own 60 s window and publishes the
records through the outbox; every ``--restart-every-s`` the broker is SIGKILLed and restarted after
``--outage-s``. A QoS 1 subscriber with a persistent session counts what arrives. Printed at the end:
records produced and received (unique, duplicates), lost, outbox drain time, and RSS after warm-up and at
the end with its slope in MB/h. Needs mosquitto (apt-get install mosquitto).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from local_broker import LocalBroker as Broker
from local_broker import free_port
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import MqttConfig, load_config
from edge.detect import Detector
from edge.publish.mqtt import MqttPublisher
from edge.replay import replay

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Subscriber:
    def __init__(self, port: int, topic: str) -> None:
        self.seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soak-subscriber", protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.reconnect_delay_set(1, 2)
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        msg_id = json.loads(msg.payload)["msg_id"]
        with self._lock:
            self.seen[msg_id] = self.seen.get(msg_id, 0) + 1

    def unique(self) -> set[str]:
        with self._lock:
            return set(self.seen)

    def deliveries(self) -> int:
        with self._lock:
            return sum(self.seen.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--restart-every-s", type=float, default=300.0)
    ap.add_argument("--outage-s", type=float, default=20.0)
    ap.add_argument("--warmup-s", type=float, default=300.0, help="RSS is compared from this point on")
    default_video = REPO.parent / "shared" / "footage" / "highway-overpass" / "video1.avi"
    ap.add_argument("--video", type=Path, default=default_video)
    ap.add_argument("-c", "--config", type=Path, default=REPO / "config" / "highway-overpass.yaml")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edge-soak-"))
    port = free_port()
    broker = Broker(work / "broker", port)
    broker.start()
    config = load_config(args.config)
    detector = Detector(config.detector)
    mqtt_cfg = MqttConfig(url=f"mqtt://127.0.0.1:{port}", outbox_path=work / "outbox.sqlite3", keepalive_s=5,
                          reconnect_min_s=0.2, reconnect_max_s=2.0)
    publisher = MqttPublisher(mqtt_cfg, config.device_id)
    publisher.start()
    sub = Subscriber(port, f"{mqtt_cfg.prefix}/{config.device_id}/+/metrics")
    produced: set[str] = set()
    base = datetime(2024, 1, 1, tzinfo=UTC)
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    next_kill = t0 + args.restart_every_s
    rss: list[tuple[float, float]] = []
    loops = restarts = 0
    down_until: float | None = None
    while time.monotonic() < end:
        out = work / "out"
        s = replay(args.video, config, detector, out, start_time=base + timedelta(minutes=loops),
                   publisher=publisher)
        produced |= {json.loads(x)["msg_id"] for x in (out / "metrics.jsonl").read_text().splitlines()}
        loops += 1
        now = time.monotonic()
        rss.append((now - t0, rss_mb()))
        if down_until is None and now >= next_kill:
            broker.kill()
            down_until = now + args.outage_s
        if down_until is not None and now >= down_until:
            broker.start()
            restarts += 1
            down_until = None
            next_kill = now + args.restart_every_s
        if loops % 20 == 0:
            print(f"{(now - t0) / 60:5.1f} min: {loops} loops, {len(produced)} records, outbox depth "
                  f"{publisher.outbox.depth}, RSS {rss[-1][1]:.1f} MB, {s.fps:.0f} fps", flush=True)
    if down_until is not None:
        broker.start()
        restarts += 1
    t_end = time.monotonic()
    while publisher.outbox.depth and time.monotonic() - t_end < 60:
        time.sleep(0.2)
    drain_s = time.monotonic() - t_end
    deadline = time.monotonic() + 30
    while not produced <= sub.unique() and time.monotonic() < deadline:
        time.sleep(0.2)
    received = sub.unique() & produced
    warm = [r for t, r in rss if t >= args.warmup_s] or [r for _, r in rss]
    hours = (rss[-1][0] - args.warmup_s) / 3600 if rss[-1][0] > args.warmup_s else 1.0
    print(f"duration          {(t_end - t0) / 60:.1f} min, {loops} replay loops, broker restarts {restarts}")
    print(f"records           produced {len(produced)}, received {len(received)} unique, "
          f"{sub.deliveries() - len(sub.unique())} duplicates, lost {len(produced - received)}")
    print(f"outbox            drained {drain_s:.1f} s after the last loop")
    print(f"RSS               start {rss[0][1]:.1f} MB; after {args.warmup_s:g} s warm-up {warm[0]:.1f} MB, "
          f"end {warm[-1]:.1f} MB, max {max(warm):.1f} MB, slope {(warm[-1] - warm[0]) / hours:+.1f} MB/h")
    publisher.stop(5)
    sub.client.loop_stop()
    broker.kill()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
