"""Random SIGKILLs of `edge run` and of the broker (>= 50, seeded): nothing the edge committed is lost.

    EDGE_MODEL_DIR=../shared/models python tools/fault_kill.py [--kills 50] [--seed 14] [--cameras 2]

Runs a real Mosquitto (persistence on, autosave every second) and ``edge run`` itself: the device config has
``--cameras`` cameras, each a looping file source paced in real time, 60 s windows (the protocol minimum)
and a health record every second. A QoS 1 subscriber with a persistent session records what a consumer
receives. A seeded RNG waits ``--every-s`` seconds (uniform), then SIGKILLs either the edge process or the
broker and restarts it after a short random pause, ``--kills`` times. At the end both run until the edge
is stopped with SIGTERM (its partial windows are flushed and the outbox drained), then what the edge
committed is compared with what arrived.

"Produced" is every row ``Outbox.put`` committed: the edge process is ``edge run`` (``edge.cli.main``) with
one hook that appends each committed row's kind, id and ``msg_id`` to a file after ``put`` returned, the
same promise that ``tests/mqtt_broker.py publish`` records. Status rows are left out of the tally (a new
``online`` supersedes an unsent one by design). Metric windows are also compared by (camera,
window_start). Printed: kills (edge / broker), produced, received, lost, duplicates, the outbox's
integrity check and depth at the end. Exits 1 if anything was lost. Needs mosquitto.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from local_broker import LocalBroker as Broker
from local_broker import free_port
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
CLIP = SHARED / "footage" / "otc-intersection" / "Testvideo_Cars-Cyclist_FR20_2020-01-01_00-00-00.mp4"
DEVICE = "cam-0001"
PREFIX = "traffic/v1"


def wait(pred: Any, timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
    return True


class Subscriber:
    """QoS 1, persistent session: every delivery of every message under the device's topics."""

    def __init__(self, port: int) -> None:
        self._lock = threading.Lock()
        self.deliveries: Counter[str] = Counter()  # msg_id -> times received
        self.windows: set[tuple[str, str]] = set()  # (camera, window_start) of metric windows
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="fault-kill-subscriber", protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{PREFIX}/{DEVICE}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect("127.0.0.1", port, keepalive=5, clean_start=False, properties=props)
        self.client.loop_start()

    def _on_message(self, client: Any, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        record = json.loads(msg.payload)
        with self._lock:
            self.deliveries[str(record["msg_id"])] += 1
            if msg.topic.endswith("/metrics"):
                self.windows.add((str(record["camera"]), str(record["window_start"])))

    def snapshot(self) -> tuple[Counter[str], set[tuple[str, str]]]:
        with self._lock:
            return Counter(self.deliveries), set(self.windows)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class Produced:
    rows: dict[str, str]  # msg_id -> kind, every row put() committed (status left out)
    windows: set[tuple[str, str]]  # (camera, window_start) of the committed metric windows


def read_produced(ids_file: Path) -> Produced:
    rows: dict[str, str] = {}
    windows: set[tuple[str, str]] = set()
    for line in ids_file.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by the SIGKILL: that row's put had not been reported yet
        if rec["kind"] == "status":
            continue
        rows[rec["msg_id"]] = rec["kind"]
        if rec["kind"] == "metrics" and rec["topic"].endswith("/metrics"):
            windows.add((rec["camera"], rec["window_start"]))
    return Produced(rows, windows)


# ------------------------------------------------------------------------------------- the edge process
def child(config: Path, ids_file: Path) -> int:
    """``edge run -c config``, with each committed outbox row appended to ``ids_file`` after put returned."""
    import faulthandler

    from edge import cli
    from edge.publish import outbox

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a stop that hangs dumps its threads to the log
    fd = os.open(ids_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    put = outbox.Outbox.put

    def recording_put(self: outbox.Outbox, kind: Any, topic: str, payload: bytes) -> int | None:
        row = put(self, kind, topic, payload)
        if row is not None:
            rec = json.loads(payload)
            note = {"t": round(time.time(), 3), "kind": kind, "id": row, "topic": topic, "msg_id": rec.get("msg_id"),
                    "camera": rec.get("camera"), "window_start": rec.get("window_start")}
            os.write(fd, (json.dumps(note) + "\n").encode())  # one write: a SIGKILL cuts no line in two
        return row

    outbox.Outbox.put = recording_put  # type: ignore[method-assign]
    return cli.main(["run", "-c", str(config)])


def device_config(work: Path, port: int, cameras: int) -> Path:
    lines = yaml.safe_load((REPO / "config" / "otc-intersection.yaml").read_text())["cameras"][0]["lines"]
    data = {
        "device_id": DEVICE,
        "detector": {"model_dir": os.environ.get("EDGE_MODEL_DIR", str(SHARED / "models"))},
        "mqtt": {"url": f"mqtt://127.0.0.1:{port}", "outbox_path": str(work / "outbox.sqlite3"), "keepalive_s": 5,
                 "reconnect_min_s": 0.2, "reconnect_max_s": 2.0, "health_interval_s": 1},
        "cameras": [{"name": f"cam{i}", "source": {"kind": "file", "path": str(CLIP), "realtime": True, "loop": True},
                     "lines": lines} for i in range(cameras)],
    }
    path = work / "device.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


class Edge:
    """``python tools/fault_kill.py child``: started, SIGKILLed and restarted as systemd would."""

    def __init__(self, config: Path, ids_file: Path, log: Path) -> None:
        self.cmd = [sys.executable, str(Path(__file__).resolve()), "child", str(config), str(ids_file)]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def terminate(self, timeout_s: float = 60) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            print(f"the edge did not stop within {timeout_s:g} s after SIGTERM; its threads are in {self.log}",
                  file=sys.stderr)
            self.proc.send_signal(signal.SIGUSR1)
            time.sleep(1)
            self.proc.kill()
            return self.proc.wait(10)


# ------------------------------------------------------------------------------------------ the faults
def chaos(args: argparse.Namespace, broker: Broker, edge: Edge, sub: Subscriber, ids_file: Path) -> Counter[str]:
    """``args.kills`` seeded SIGKILLs of the edge or the broker, each restarted after a short pause."""
    rng = random.Random(args.seed)
    kills: Counter[str] = Counter()
    t0 = time.monotonic()
    for k in range(args.kills):
        time.sleep(rng.uniform(*args.every_s))
        if edge.proc is not None and edge.proc.poll() is not None:
            kills["edge exited by itself"] += 1  # not ours: restart it as systemd would, and say so
            edge.start()
        target = "edge" if rng.random() < args.edge_share else "broker"
        pause = rng.uniform(0.0, 1.0) if target == "edge" else rng.uniform(0.2, 2.0)
        victim: Edge | Broker = edge if target == "edge" else broker
        victim.kill()
        time.sleep(pause)
        victim.start()
        kills[target] += 1
        if (k + 1) % 10 == 0:
            got, _ = sub.snapshot()
            made = read_produced(ids_file).rows
            print(f"{time.monotonic() - t0:6.1f} s: {k + 1} kills ({kills['edge']} edge, {kills['broker']} broker), "
                  f"{len(made)} rows committed, {len(set(made) & set(got))} of them received so far", flush=True)
    return kills


def outbox_state(path: Path) -> tuple[str, dict[str, int]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        check = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'q_%'")]
        depth = {t[2:]: int(conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]) for t in tables}
    return check, depth


def report(kills: Counter[str], produced: Produced, sub: Subscriber, outbox: tuple[str, dict[str, int]],
           stop_rc: int | None, starts: int) -> int:
    got, windows = sub.snapshot()
    rows = produced.rows
    received = set(rows) & set(got)
    lost = sorted(set(rows) - received)
    by_kind = Counter(rows.values())
    lost_kind = Counter(rows[m] for m in lost)
    dup = sum(n - 1 for m, n in got.items() if m in rows and n > 1)
    print(f"kills             {kills['edge'] + kills['broker']} ({kills['edge']} edge, {kills['broker']} broker)"
          + (f", edge exited by itself {kills['edge exited by itself']}" if kills["edge exited by itself"] else ""))
    print(f"edge starts       {starts}; final SIGTERM exit code {stop_rc}")
    print(f"produced          {len(rows)} rows committed to the outbox: "
          + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())))
    print(f"received          {len(received)} of them ({sum(got[m] for m in received)} deliveries)")
    print(f"lost              {len(lost)}" + (f" ({dict(lost_kind)}; e.g. {lost[:3]})" if lost else ""))
    print(f"duplicates        {dup}")
    print(f"metric windows    produced {len(produced.windows)} (camera, window_start) keys, received "
          f"{len(produced.windows & windows)}, lost {len(produced.windows - windows)}")
    print(f"outbox at the end integrity {outbox[0]}, rows left {outbox[1]}")
    return 1 if lost or produced.windows - windows or outbox[0] != "ok" else 0


def run(args: argparse.Namespace, work: Path) -> int:
    broker = Broker(work / "broker", free_port())
    broker.start()
    sub = Subscriber(broker.port)
    ids_file = work / "committed.jsonl"
    ids_file.touch()
    edge = Edge(device_config(work, broker.port, args.cameras), ids_file, work / "edge.log")
    edge.start()
    try:
        if not wait(lambda: bool(sub.snapshot()[0]), 120):
            print(f"the edge published nothing within 120 s; see {edge.log}", file=sys.stderr)
            return 2
        kills = chaos(args, broker, edge, sub, ids_file)
        time.sleep(args.settle_s)  # both up: the edge reconnects and sends its backlog
        t_stop = time.monotonic()
        stop_rc = edge.terminate()  # partial windows flushed, outbox drained (edge run --flush-timeout 10)
        print(f"final SIGTERM: the edge exited with {stop_rc} after {time.monotonic() - t_stop:.1f} s", flush=True)
        produced = read_produced(ids_file)
        wait(lambda: set(produced.rows) <= set(sub.snapshot()[0]), args.drain_s, 0.2)
        return report(kills, produced, sub, outbox_state(work / "outbox.sqlite3"), stop_rc, edge.starts)
    finally:
        edge.kill()
        sub.stop()
        broker.kill()


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "child":
        return child(Path(sys.argv[2]), Path(sys.argv[3]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--every-s", type=float, nargs=2, default=(2.5, 5.5), metavar=("MIN", "MAX"),
                    help="seconds between kills, drawn uniformly")
    ap.add_argument("--edge-share", type=float, default=0.5, help="chance that a kill hits the edge, not the broker")
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--settle-s", type=float, default=5.0, help="both up for this long before the final SIGTERM")
    ap.add_argument("--drain-s", type=float, default=30.0, help="wait this long for the last deliveries")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, outbox, committed rows)")
    args = ap.parse_args()
    if not CLIP.exists():
        print(f"missing {CLIP} (the shared footage)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="edge-fault-kill-"))
    print(f"work folder {work}; seed {args.seed}, {args.kills} kills", flush=True)
    try:
        return run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
