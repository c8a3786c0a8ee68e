"""A loopback Mosquitto for the fault and soak tools: anonymous, persistent (a subscriber's session and its
queued messages survive a SIGKILL of the broker), started and killed at will. Needs mosquitto."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBroker:
    """Mosquitto on ``127.0.0.1:port`` with its data and config under ``workdir``; its errors and warnings go
    to ``workdir/mosquitto.log``."""

    def __init__(self, workdir: Path, port: int, max_queued_messages: int = 100_000) -> None:
        self.port = port
        (workdir / "data").mkdir(parents=True)
        self.log = workdir / "mosquitto.log"
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {workdir / 'data'}/\nautosave_interval 1\n"
                             f"max_queued_messages {max_queued_messages}\n"
                             "log_dest stderr\nlog_type error\nlog_type warning\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 10.0) -> None:
        exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/bin") or "mosquitto"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([exe, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"mosquitto did not start; see {self.log}")

    def kill(self) -> None:
        """SIGKILL: no clean shutdown, as a crash or a power cut."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        """SIGTERM: Mosquitto saves its persistence file and exits."""
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
