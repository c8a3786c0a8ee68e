"""RELIABILITY.md A7: a fleet's reconnects after a broker restart must not come in lock-step.

    python tools/fault_jitter.py [--clients 20] [--down-s 0.5] [--max-share 0.30] [--seed N]

Starts a real Mosquitto on a free loopback port, connects ``--clients`` :class:`MqttPublisher` instances
(each with its own outbox in a temporary folder, the production back-off defaults: reconnect_min_s 1,
reconnect_max_s 60), SIGKILLs the broker, restarts it after ``--down-s``, and records each client's first
reconnect attempt after the kill (the publisher's own connection attempts, time-stamped as they start).
Prints the attempts per second after the kill, the largest share in any one second (and in any sliding
1 s window), and when the clients were connected again. Exits 1 if the largest per-second share exceeds
``--max-share`` (A7: at most 30 %), 2 if a client did not reconnect. Needs mosquitto.
"""

from __future__ import annotations

import argparse
import logging
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from local_broker import LocalBroker as Broker
from local_broker import free_port

from edge.config import MqttConfig
from edge.publish.mqtt import MqttPublisher


class TimedPublisher(MqttPublisher):
    """A publisher that notes the monotonic time at which each of its connection attempts starts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.attempt_times: list[float] = []

    def _connect(self, client: Any) -> bool | None:
        self.attempt_times.append(time.monotonic())
        return super()._connect(client)


def histogram(offsets: list[float]) -> tuple[Counter[int], float, float]:
    """Attempts per whole second after the kill, the largest per-second share, the largest share in any
    sliding 1 s window."""
    per_second = Counter(int(t) for t in offsets)
    ts = sorted(offsets)
    j = best = 0
    for i, t in enumerate(ts):
        while ts[j] < t - 1.0:
            j += 1
        best = max(best, i - j + 1)
    n = max(1, len(offsets))
    return per_second, max(per_second.values(), default=0) / n, best / n


def run(args: argparse.Namespace, work: Path) -> int:
    broker = Broker(work / "broker", free_port())
    broker.start()
    pubs = []
    for i in range(args.clients):
        cfg = MqttConfig(url=f"mqtt://127.0.0.1:{broker.port}", outbox_path=work / f"outbox-{i:02d}.sqlite3",
                         client_id=f"jitter-{i:02d}", keepalive_s=5)
        rng = random.Random(args.seed * 1000 + i) if args.seed is not None else None
        pubs.append(TimedPublisher(cfg, f"jitter-{i:02d}", rng=rng))
    try:
        for p in pubs:
            p.start()
        if not _wait(lambda: all(p.connected for p in pubs), 30):
            print("not every client connected to the first broker", file=sys.stderr)
            return 2
        time.sleep(0.5)  # all settled on their first connection
        t_kill = time.monotonic()
        broker.kill()
        time.sleep(args.down_s)
        broker.start()
        t_up = time.monotonic() - t_kill
        reconnected = _wait(lambda: all(p.counters().connects >= 2 for p in pubs), args.timeout_s)
        firsts = [min((t for t in p.attempt_times if t > t_kill), default=float("nan")) - t_kill for p in pubs]
        return report(args, firsts, t_up, reconnected, pubs, t_kill)
    finally:
        for p in pubs:
            p.stop(0.5)
        broker.kill()


def report(args: argparse.Namespace, firsts: list[float], t_up: float, reconnected: bool,
           pubs: list[TimedPublisher], t_kill: float) -> int:
    seen = [t for t in firsts if t == t]  # not NaN
    per_second, share, sliding = histogram(seen)
    print(f"{args.clients} clients, broker SIGKILLed at t=0 and listening again at t={t_up:.2f} s "
          f"(reconnect_min_s {pubs[0].config.reconnect_min_s:g}, reconnect_max_s {pubs[0].config.reconnect_max_s:g})")
    print("first reconnect attempt after the kill, per second:")
    for second in range(max(per_second, default=0) + 1):
        n = per_second.get(second, 0)
        print(f"  [{second:3d}, {second + 1:3d}) s  {n:3d}  {'#' * n}")
    print(f"first attempts: min {min(seen):.2f} s, median {sorted(seen)[len(seen) // 2]:.2f} s, "
          f"max {max(seen):.2f} s" if seen else "first attempts: none")
    print(f"max share in one second: {share:.0%} (sliding 1 s window: {sliding:.0%}); bar <= {args.max_share:.0%}")
    attempts = sum(len([t for t in p.attempt_times if t > t_kill]) for p in pubs)
    print(f"reconnected: {'all' if reconnected else 'NOT all'} {sum(p.counters().connects >= 2 for p in pubs)}"
          f"/{len(pubs)}; {attempts} attempts in all after the kill")
    if not reconnected or len(seen) < len(pubs):
        return 2
    return 1 if share > args.max_share else 0


def _wait(pred: Any, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--down-s", type=float, default=0.5, help="broker outage before the restart")
    ap.add_argument("--max-share", type=float, default=0.30, help="A7: most clients in any one second")
    ap.add_argument("--seed", type=int, help="seed the clients' back-off (client i gets seed * 1000 + i)")
    ap.add_argument("--timeout-s", type=float, default=180.0, help="give up waiting for the reconnects")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)  # 20 clients x "connection lost" would bury the histogram
    work = Path(tempfile.mkdtemp(prefix="edge-jitter-"))
    try:
        return run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
