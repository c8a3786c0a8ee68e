"""The deploy example's Mosquitto (deploy/mosquitto) on free ports, the dashboard server, a headless Chromium.

* :class:`DeployBroker` renders ``deploy/mosquitto/edge.conf`` with the test CA, temporary password files and
  free loopback ports, uses the two ACL files verbatim, and adds one test-only listener: plaintext on
  loopback, anonymous, for ``edge replay --mqtt URL`` (which has no login) and ``edge run`` stand-ins.
  The substitutions are checked, so a change of the example's shape fails here instead of being skipped.
* :func:`chromium` starts Debian's chromium through Debian's chromedriver (selenium; no browser download),
  headless, with every non-loopback host unresolvable and a dead proxy for anything else: the page gets
  only what the dashboard server and the broker give it. The broker's test certificate is accepted by its
  public key (``--ignore-certificate-errors-spki-list``), nothing else is.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from paho.mqtt.enums import CallbackAPIVersion

from tests.conftest import REPO, missing
from tests.mqtt_broker import DEVICE, DEVICE_PASSWORD, Broker, free_port, tool

DEPLOY = REPO / "deploy" / "mosquitto"
DASHBOARD_USER = "dashboard"
DASHBOARD_PASSWORD = "viewer-secret-1"  # test-only credentials of a throw-away broker
HA_USER = "homeassistant"


@dataclass
class DeployBroker(Broker):
    """deploy/mosquitto/edge.conf on free ports: ``tls_port`` (devices), ``ws_port`` (browsers, TLS WebSockets),
    ``readers_port`` (other readers, TLS) and ``plain_port`` (test only: anonymous, loopback)."""

    ws_port: int = field(default_factory=free_port)
    readers_port: int = field(default_factory=free_port)

    def _passwd(self, path: Path, users: list[tuple[str, str]]) -> None:
        for i, (user, pw) in enumerate(users):
            create = ["-c"] if i == 0 else []
            subprocess.run([tool("mosquitto_passwd") or "mosquitto_passwd", *create, "-b", str(path), user, pw],
                           check=True, capture_output=True, timeout=30)

    def _configure(self) -> Path:
        conf = self.workdir / "mosquitto.conf"
        if conf.exists():
            return conf
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        self._passwd(self.workdir / "edge.passwd", [(DEVICE, DEVICE_PASSWORD), ("cam-0002", DEVICE_PASSWORD)])
        self._passwd(self.workdir / "dashboard.passwd", [(DASHBOARD_USER, DASHBOARD_PASSWORD),
                                                         (HA_USER, DASHBOARD_PASSWORD)])
        text = (DEPLOY / "edge.conf").read_text()
        subs = {
            "/etc/mosquitto/edge.passwd": str(self.workdir / "edge.passwd"),
            "/etc/mosquitto/dashboard.passwd": str(self.workdir / "dashboard.passwd"),
            "/etc/mosquitto/edge.acl": str(DEPLOY / "edge.acl"),
            "/etc/mosquitto/dashboard.acl": str(DEPLOY / "dashboard.acl"),
            "/etc/mosquitto/certs/city-ca.crt": str(self.pki.ca_crt),
            "/etc/mosquitto/certs/broker.crt": str(self.pki.server_crt),
            "/etc/mosquitto/certs/broker.key": str(self.pki.server_key),
            "/etc/mosquitto/certs/dashboard.crt": str(self.pki.server_crt),
            "/etc/mosquitto/certs/dashboard.key": str(self.pki.server_key),
            "/var/lib/mosquitto/": f"{self.workdir / 'data'}/",
            "autosave_interval 60": "autosave_interval 1",
        }
        for old, new in subs.items():
            if old not in text:
                raise AssertionError(f"deploy/mosquitto/edge.conf no longer has {old!r}: update {__file__}")
            text = text.replace(old, new)
        for port, free in ((8883, self.tls_port), (8884, self.ws_port), (8885, self.readers_port)):
            text, n = re.subn(rf"^listener {port}$", f"listener {free} 127.0.0.1", text, flags=re.MULTILINE)
            if n != 1:
                raise AssertionError(f"deploy/mosquitto/edge.conf: no single `listener {port}` line")
        conf.write_text(
            "# rendered from deploy/mosquitto/edge.conf by tests/dashboard_support.py\nuser root\n" + text +
            "\n# test only: the devices' side for `edge replay --mqtt mqtt://127.0.0.1:PORT` (no login)\n"
            f"listener {self.plain_port} 127.0.0.1\nallow_anonymous true\n"
            "log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            "connection_messages true\n"
        )
        return conf


def spki_sha256(cert: Path) -> str:
    """Base64 SHA-256 of a certificate's public key, as Chromium's --ignore-certificate-errors-spki-list wants."""
    key = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def ws_client(port: int, username: str, password: str, ca: Path, client_id: str) -> mqtt.Client:
    """A paho client for the TLS WebSockets listener (what a browser uses), not yet connected."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, transport="websockets")
    client.tls_set(ca_certs=str(ca))
    client.username_pw_set(username, password)
    return client


def chromium_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        missing("chromium and chromedriver not found: the dashboard is tested in Debian's headless browser; install "
                "them with `apt-get install chromium chromium-driver` (tools/test.sh does)")
    return browser, driver


def chromium(spki: str, width: int = 1400, height: int = 2200) -> Any:
    """A headless Chromium (selenium WebDriver) that can reach loopback only."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing("selenium is not installed: `pip install -e '.[dev]'`")
    browser, driver = chromium_paths()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                f"--window-size={width},{height}", "--force-device-scale-factor=1", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-default-apps", "--metrics-recording-only", "--no-default-browser-check",
                # network cut off from everything but this machine: no name resolves, anything else hits a dead proxy
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1", "--proxy-server=http://127.0.0.1:9",
                f"--ignore-certificate-errors-spki-list={spki}"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    return webdriver.Chrome(options=opts, service=Service(executable_path=driver))
