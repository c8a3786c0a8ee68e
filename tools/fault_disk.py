"""Fault run: a full tmpfs outbox recovers on its own once the broker returns (issue 14, items 3 and 4).

    sudo EDGE_MODEL_DIR=../shared/models python tools/fault_disk.py [--size-mb 2] [--factor 2] [--filler]

Mounts a small tmpfs (root only), starts a real Mosquitto on a free loopback port and a QoS 1 subscriber
with a persistent session, runs an :class:`~edge.publish.MqttPublisher` whose outbox lives on the tmpfs
(with the default 64 MB budget: the file system, not the budget, is the limit), and stops the broker.
It then puts metrics, health and near-miss events (3 health : 2 metrics : 1 event) until the outbox has
to drop, and ``--factor`` times as many again. ``--filler`` also fills whatever the outbox left free with
a file of its own (another program taking the last byte: SQLITE_FULL), and leaves it there. The broker
is restarted and the run waits for the outbox to drain.

Passes when: no put raised and nothing was lost to a write error; the outbox really had to drop; no
event was dropped; health lost a larger share than metrics; after the restart the outbox drains to 0
and every event stored and every metric window stored and not dropped later reaches the subscriber,
exactly. Prints a table and exits 1 on failure, 2 if it cannot run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from local_broker import LocalBroker as Broker
from local_broker import free_port
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge.config import MqttConfig
from edge.payloads import MessageKind, NearMissEvent, WindowHealth, WindowMetrics, iso_utc, window_msg_id
from edge.publish.mqtt import MqttPublisher
from edge.publish.outbox import OutboxStats

DEVICE = "cam-fault"
KINDS: tuple[MessageKind, ...] = ("event", "metrics", "health")
PATTERN: tuple[MessageKind, ...] = ("health", "metrics", "health", "event", "health", "metrics")
_BASE = datetime(2024, 5, 1, tzinfo=UTC)


@contextlib.contextmanager
def tmpfs(where: Path, size_mb: float) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(size_mb * 1024)}k,mode=0700", "tmpfs", str(where)],
                   check=True, capture_output=True, text=True, timeout=30)
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True, timeout=30, check=False).returncode:
            subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30, check=False)


class Subscriber:
    """QoS 1, persistent session: counts unique msg_ids per topic leaf (metrics, events, health)."""

    def __init__(self, port: int, topic: str) -> None:
        self._lock = threading.Lock()
        self.seen: dict[str, set[str]] = {"metrics": set(), "events": set(), "health": set()}
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fault-disk-sub", protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        leaf = msg.topic.rsplit("/", 1)[-1]
        if leaf in self.seen:
            with self._lock:
                self.seen[leaf].add(str(json.loads(msg.payload)["msg_id"]))

    def ids(self, leaf: str) -> set[str]:
        with self._lock:
            return set(self.seen[leaf])

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def window(seq: int) -> WindowMetrics:
    start = iso_utc(_BASE + timedelta(seconds=seq))
    counts = {f"line-{i}": {"in": {"car": seq % 7, "bus": 1}, "out": {"car": 1, "person": 2}} for i in range(4)}
    return WindowMetrics.model_validate({
        "msg_id": window_msg_id(DEVICE, "north", start), "device": DEVICE, "camera": "north", "window_start": start,
        "window_s": 1, "partial": False, "counts": counts,
        "health": WindowHealth(frames=25, dropped_frames=0, fps=25.0),
    })


def near_miss(i: int) -> NearMissEvent:
    return NearMissEvent(
        msg_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"fault-disk/event/{i}")), device=DEVICE, camera="north",
        time=iso_utc(_BASE + timedelta(seconds=i, milliseconds=500)), conflict_type="crossing", severity="high",
        road_users=("car", "bicycle"), speeds_mps=(8.5, 4.25), vulnerable=True, ttc_s=1.1, pet_s=None, drac_mps2=3.2,
        location_m=(12, -3),
    )


@dataclass
class Run:
    stored: dict[str, set[str]] = field(default_factory=lambda: {k: set() for k in KINDS})
    puts: int = 0
    raised: int = 0
    min_free: int = 1 << 62
    at_restart: OutboxStats | None = None
    drain_s: float | None = None

    def put(self, pub: MqttPublisher, kind: MessageKind) -> None:
        self.puts += 1
        payload = window(self.puts) if kind == "metrics" else near_miss(self.puts) if kind == "event" else pub.health()
        try:
            if pub.put(kind, payload, None if kind == "health" else "north") is not None:
                self.stored[kind].add(payload.msg_id)
        except Exception as exc:  # a put must never raise for a runtime fault
            self.raised += 1
            print(f"put raised {type(exc).__name__}: {exc}", file=sys.stderr)


def fill(run: Run, pub: MqttPublisher, fs: Path, factor: float) -> None:
    """Put messages until the outbox drops, then ``factor`` times as many again."""
    first_drop = None
    while first_drop is None or run.puts < first_drop * (1 + factor):
        run.put(pub, PATTERN[run.puts % len(PATTERN)])
        run.min_free = min(run.min_free, shutil.disk_usage(fs).free)
        if first_drop is None and pub.outbox.stats().total("dropped_full"):
            first_drop = run.puts
        if run.puts > 200_000:
            raise RuntimeError("the outbox never had to drop: is the file system really small?")


def fill_the_rest(fs: Path) -> int:
    """Another program takes every free byte; returns how many it got."""
    fd = os.open(fs / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    written = 0
    try:
        with contextlib.suppress(OSError):
            while True:
                written += os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return written


def wait_drained(run: Run, pub: MqttPublisher, sub: Subscriber, timeout_s: float) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if pub.outbox.depth == 0 and not expected_missing(run, pub, sub):
            run.drain_s = time.monotonic() - t0
            return
        time.sleep(0.1)


def metrics_due(run: Run, s: OutboxStats) -> int:
    """Metric windows stored and not dropped later: ``dropped_full`` also counts new windows refused at put
    (never stored), which are ``produced - stored``."""
    k = s.kinds["metrics"]
    stored = len(run.stored["metrics"])
    return stored - (k.dropped_full - (k.produced - stored))


def expected_missing(run: Run, pub: MqttPublisher, sub: Subscriber) -> int:
    """Events stored and not delivered, plus metric windows stored, not dropped and not delivered."""
    events = len(run.stored["event"] - sub.ids("events"))
    metrics = metrics_due(run, pub.outbox.stats()) - len(sub.ids("metrics") & run.stored["metrics"])
    return events + max(0, metrics)


def verdict(run: Run, pub: MqttPublisher, sub: Subscriber) -> list[str]:
    s = pub.outbox.stats()
    r = run.at_restart or s
    k = s.kinds
    failures = []
    if run.raised or s.total("dropped_error"):
        failures.append(f"{run.raised} puts raised, {s.total('dropped_error')} lost to write errors")
    if not r.total("dropped_full"):
        failures.append("the outbox never had to drop: the disk was not full")
    if k["event"].dropped_full:
        failures.append(f"{k['event'].dropped_full} events dropped while metrics or health could have gone")
    share = {kind: k[kind].dropped_full / max(1, k[kind].produced) for kind in ("metrics", "health")}
    if k["metrics"].dropped_full and share["health"] <= share["metrics"]:
        failures.append(f"health lost {share['health']:.0%}, metrics {share['metrics']:.0%}: health must go first")
    if run.drain_s is None:
        failures.append(f"not drained: outbox depth {pub.outbox.depth}, {expected_missing(run, pub, sub)} missing")
    if run.stored["event"] - sub.ids("events"):
        failures.append(f"{len(run.stored['event'] - sub.ids('events'))} stored events never delivered")
    delivered = len(sub.ids("metrics") & run.stored["metrics"])
    if delivered != metrics_due(run, s):
        failures.append(f"metrics delivered {delivered} != {metrics_due(run, s)} stored and not dropped")
    return failures


def table(run: Run, pub: MqttPublisher, sub: Subscriber, fs_bytes: int, filler: int) -> str:
    s = pub.outbox.stats()
    r = run.at_restart or s
    leaf = {"event": "events", "metrics": "metrics", "health": "health"}
    rows = [f"{'kind':8} {'produced':>9} {'stored':>7} {'dropped':>8} {'in outbox':>10} {'delivered':>10}"]
    for kind in KINDS:
        k = s.kinds[kind]
        rows.append(f"{kind:8} {k.produced:9d} {len(run.stored[kind]):7d} {k.dropped_full:8d} "
                    f"{r.kinds[kind].depth:10d} {len(sub.ids(leaf[kind]) & run.stored[kind]):10d}")
    drain = "not drained" if run.drain_s is None else f"{run.drain_s:.1f} s"
    rows += [
        f"file system {fs_bytes / 2**20:.1f} MiB; lowest free during the outage {run.min_free / 1024:.0f} KiB; "
        f"filler {filler / 1024:.0f} KiB",
        f"outbox at restart: {r.depth} messages, {r.size_bytes / 1024:.0f} KiB (db + WAL); time to drain {drain}",
        "(in outbox: when the broker came back; produced counts the publisher's own health records too)",
    ]
    return "\n".join(rows)


def scenario(args: argparse.Namespace, work: Path) -> int:
    with tmpfs(work / "fs", args.size_mb) as fs:
        broker = Broker(work / "broker", free_port(), max_queued_messages=1_000_000)
        broker.start()
        cfg = MqttConfig(url=f"mqtt://127.0.0.1:{broker.port}", outbox_path=fs / "outbox.sqlite3", keepalive_s=5,
                         reconnect_min_s=0.2, reconnect_max_s=1.0)
        sub = Subscriber(broker.port, f"{cfg.prefix}/{DEVICE}/#")
        pub = MqttPublisher(cfg, DEVICE)
        pub.start()
        try:
            deadline = time.monotonic() + 15
            while not pub.connected and time.monotonic() < deadline:
                time.sleep(0.05)
            broker.stop()
            run = Run()
            fill(run, pub, fs, args.factor)
            filler = fill_the_rest(fs) if args.filler else 0
            for _ in range(30 if args.filler else 0):  # puts on a disk someone else filled
                run.put(pub, PATTERN[run.puts % len(PATTERN)])
            run.at_restart = pub.outbox.stats()
            broker.start()
            wait_drained(run, pub, sub, args.timeout_s)
            time.sleep(0.5)  # last PUBACKs
            print(table(run, pub, sub, shutil.disk_usage(fs).total, filler))
            failures = verdict(run, pub, sub)
        finally:
            pub.stop(2)
            sub.stop()
            broker.stop()
    for f in failures:
        print(f"FAIL: {f}")
    print("PASS" if not failures else "FAILED")
    return 1 if failures else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=float, default=2.0, help="tmpfs size")
    ap.add_argument("--factor", type=float, default=2.0, help="puts past the first drop, as a multiple of those "
                    "before it")
    ap.add_argument("--filler", action="store_true", help="also fill the rest of the disk with another file")
    ap.add_argument("--timeout-s", type=float, default=60.0, help="longest wait for the outbox to drain")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("fault_disk.py mounts a tmpfs: run it as root", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="edge-fault-disk-"))
    try:
        return scenario(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
