"""A headless Chromium driven over the DevTools protocol on a pipe: print the report to PDF, take screenshots, and
(in the tests) watch its console and network.

``--remote-debugging-pipe`` makes Chromium read protocol commands from file descriptor 3 and write replies and
events to descriptor 4, each message JSON ended by a NUL byte: no port is opened, no driver binary or Python
package is needed, and nothing is downloaded (Debian: ``apt-get install chromium``). Chromium runs with a
throw-away profile; as root it needs ``--no-sandbox`` (the report has no script).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from edge.errors import EdgeError

_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    for name in _NAMES:
        if found := shutil.which(name):
            return found
    return None


def _child_fds(read_fd: int, write_fd: int) -> None:
    """In the child before exec: the command pipe on 3, the reply pipe on 4 (via free high numbers first, so
    neither overwrites the other)."""
    import fcntl

    r = fcntl.fcntl(read_fd, fcntl.F_DUPFD, 10)
    w = fcntl.fcntl(write_fd, fcntl.F_DUPFD, 10)
    os.dup2(r, 3)
    os.dup2(w, 4)


class Chromium:
    """One headless Chromium with one page. ``events`` collects every protocol event received."""

    def __init__(self, executable: str | None = None, *, width: int = 1100, height: int = 900,
                 timeout_s: float = 60.0) -> None:
        exe = executable or find_chromium()
        if exe is None:
            raise EdgeError("no Chromium found (Debian/Ubuntu: apt-get install chromium)")
        self.timeout_s = timeout_s
        self.events: list[dict[str, Any]] = []
        self._profile = tempfile.mkdtemp(prefix="edge-chromium-")
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()
        args = [exe, "--headless", "--remote-debugging-pipe", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--hide-scrollbars", f"--user-data-dir={self._profile}",
                f"--window-size={width},{height}", *(["--no-sandbox"] if os.geteuid() == 0 else [])]
        self._proc = subprocess.Popen(args, pass_fds=(cmd_r, res_w, 3, 4), stdin=subprocess.DEVNULL,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      preexec_fn=lambda: _child_fds(cmd_r, res_w))
        os.close(cmd_r)
        os.close(res_w)
        self._buf = b""
        self._id = 0
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session: str = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        for fd in (self._cmd_w, self._res_r):
            os.close(fd)
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------------------- protocol
    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._res_r], [], [], left)[0]:
                raise EdgeError(f"Chromium did not answer within {self.timeout_s:g} s")
            chunk = os.read(self._res_r, 1 << 20)
            if not chunk:
                raise EdgeError("Chromium closed the DevTools pipe (it exited)")
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        value: dict[str, Any] = json.loads(message)
        return value

    def call(self, method: str, params: dict[str, Any] | None = None, *, page: bool = False) -> dict[str, Any]:
        """Send one command (to the page's session with ``page``) and return its result."""
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if page:
            message["sessionId"] = self.session
        os.write(self._cmd_w, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise EdgeError(f"Chromium: {method} failed: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self.events.append(reply)

    def wait_event(self, method: str, since: int = 0) -> dict[str, Any]:
        """The first event ``method`` at or after position ``since`` of :attr:`events`, waiting for it."""
        deadline = time.monotonic() + self.timeout_s
        for event in self.events[since:]:
            if event.get("method") == method:
                return event
        while True:
            event = self._read(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event

    def open(self, path: Path, *, watch: bool = True) -> None:
        """Load a local file and wait for its load event; with ``watch`` the console, log and network are
        recorded in :attr:`events` from the first request on."""
        for domain in (("Page", "Runtime", "Log", "Network") if watch else ("Page",)):
            self.call(f"{domain}.enable", page=True)
        since = len(self.events)
        self.call("Page.navigate", {"url": path.resolve().as_uri()}, page=True)
        self.wait_event("Page.loadEventFired", since)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, page=True)
        return result.get("result", {}).get("value")

    def screenshot(self, clip: dict[str, float] | None = None) -> bytes:
        """A PNG of the page, or of ``clip`` (x, y, width, height in CSS pixels of the whole page)."""
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": True}
        if clip is not None:
            params["clip"] = {**clip, "scale": 1}
        return base64.b64decode(self.call("Page.captureScreenshot", params, page=True)["data"])

    def pdf(self) -> bytes:
        result = self.call("Page.printToPDF", {"printBackground": True, "preferCSSPageSize": False,
                                               "displayHeaderFooter": False}, page=True)
        return base64.b64decode(result["data"])


def print_pdf(html: Path) -> Path:
    """``report.pdf`` beside ``html``, printed by a headless Chromium."""
    with Chromium() as browser:
        browser.open(html, watch=False)
        data = browser.pdf()
    pdf = html.with_suffix(".pdf")
    pdf.write_bytes(data)
    return pdf
