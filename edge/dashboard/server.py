"""HTTP server of the reference dashboard: one static page, its settings, the contract's schemas, history.

Routes (GET and HEAD only; anything else is 404 or 501):

``/``                   the page (``static/index.html``)
``/static/...``         the page's own files and the vendored libraries, loaded into memory at start
``/config.json``        what the page needs to connect: broker URL, topic prefix, a user name to prefill
``/schemas/NAME``       the five JSON Schemas exactly as committed in ``contract/schemas``
``/history.json``       windows of the last hours from the archive (:mod:`edge.dashboard.archive`), if any

The server holds no credential and never talks to the broker: the page connects itself, with the
viewer's own read-only login. Every response carries a Content-Security-Policy that lets the page load
only from this server and connect only to this server and the broker, so the page works (and can only
work) with the network cut off from everything but the two. ``'unsafe-eval'`` is in ``script-src``
because Ajv compiles the schemas into functions at run time.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import ssl
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

from edge import __version__
from edge.errors import ConfigError

log = logging.getLogger(__name__)

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
#: contract/ of the source tree (an editable install or a checkout); ``--contract`` points elsewhere.
DEFAULT_CONTRACT_DIR: Final = Path(__file__).resolve().parents[2] / "contract"
#: Message kind (the topic's last level) -> JSON Schema file in contract/schemas.
SCHEMAS: Final = MappingProxyType({
    "status": "device_status.schema.json",
    "health": "device_health.schema.json",
    "metrics": "window_metrics.schema.json",
    "speeds": "window_speeds.schema.json",
    "events": "near_miss_event.schema.json",
})
_TYPES: Final = MappingProxyType({
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".json": "application/json", ".svg": "image/svg+xml", ".md": "text/markdown; charset=utf-8",
    ".txt": "text/plain; charset=utf-8"})
_TOPIC_LEVEL: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LOOPBACK: Final = frozenset({"localhost", "ip6-localhost"})


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def broker_origin(url: str) -> str:
    """``scheme://host[:port]`` of a ws:// or wss:// broker URL (for the page's connect-src), checked:
    wss:// anywhere, ws:// on this machine only (a login must not cross the network in plaintext)."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ConfigError(f"--broker must be a wss:// (or, on this machine, ws://) WebSockets URL, got {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("--broker must not hold credentials: each viewer logs in on the page")
    if not parts.hostname:
        raise ConfigError(f"--broker has no host: {url!r}")
    if parts.scheme == "ws" and not _is_loopback(parts.hostname):
        raise ConfigError(f"--broker {url!r} is plaintext ws:// to another machine: viewers' passwords would cross "
                          "the network in the clear; use wss:// (deploy/mosquitto/edge.conf has a TLS listener)")
    return f"{parts.scheme}://{parts.netloc}"


@dataclass(frozen=True)
class DashboardSettings:
    """What ``edge dashboard`` is told; checked on construction (:class:`~edge.errors.ConfigError`)."""

    broker_url: str
    prefix: str = "traffic/v1"
    username: str | None = None  # prefilled in the login form; the password is typed by the viewer
    archive: Path | None = None
    history_hours: float = 6.0
    history_end: datetime | None = None  # default: now (for archives of old footage)
    stale_after_s: float = 180.0  # an online device silent for longer is shown as silent
    reconnect_s: float = 2.0
    contract_dir: Path = field(default=DEFAULT_CONTRACT_DIR)

    def __post_init__(self) -> None:
        broker_origin(self.broker_url)
        levels = self.prefix.split("/")
        if not all(_TOPIC_LEVEL.fullmatch(level) for level in levels):
            raise ConfigError(f"--prefix must be '/'-separated levels of letters, digits, '_', '.', '-' (no "
                              f"wildcards), e.g. traffic/v1; got {self.prefix!r}")
        if not 0 < self.history_hours <= 168:
            raise ConfigError(f"--hours must be within (0, 168], got {self.history_hours:g}")
        if self.stale_after_s <= 0 or self.reconnect_s <= 0:
            raise ConfigError("--stale-after and the reconnect period must be positive")
        if self.archive is not None and not self.archive.exists():
            raise ConfigError(f"--archive {self.archive} does not exist: give the city archive (the SQLite file of "
                              "`edge archive`) or a folder of metrics records (*.jsonl)")

    def page_config(self) -> dict[str, Any]:
        """``/config.json``: everything the page needs, and nothing secret."""
        return {
            "broker_url": self.broker_url, "prefix": self.prefix, "username": self.username,
            "stale_after_s": self.stale_after_s, "reconnect_s": self.reconnect_s,
            "history": {"hours": self.history_hours, "archive": self.archive is not None},
            "schemas": {kind: f"schemas/{name}" for kind, name in SCHEMAS.items()},
            "version": __version__,
        }


def content_security_policy(broker_url: str) -> str:
    return ("default-src 'none'; script-src 'self' 'unsafe-eval'; worker-src blob:; style-src 'self'; img-src 'self'; "
            f"connect-src 'self' {broker_origin(broker_url)}; form-action 'none'; base-uri 'none'; "
            "frame-ancestors 'none'")


def _load_static(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by its URL path (``/static/...``), read once."""
    return {"/static/" + p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.name.startswith(".")}


def _load_schemas(contract_dir: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for name in SCHEMAS.values():
        path = contract_dir / "schemas" / name
        try:
            found[f"/schemas/{name}"] = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"--contract {contract_dir}: cannot read schemas/{name} ({exc.strerror}); point it at "
                              "the repository's contract/ folder (written by tools/gen_contract.py)") from None
    return found


class DashboardServer(ThreadingHTTPServer):
    """The dashboard's HTTP server; ``port=0`` picks a free port (see :attr:`url`)."""

    daemon_threads = True

    def __init__(self, settings: DashboardSettings, host: str = "127.0.0.1", port: int = 8080,
                 tls: ssl.SSLContext | None = None) -> None:
        if tls is not None and settings.broker_url.startswith("ws://"):
            raise ConfigError("an https page cannot open a plaintext ws:// broker connection: use wss://")
        self.settings = settings
        self.csp = content_security_policy(settings.broker_url)
        self.files = {**_load_static(STATIC_DIR), **_load_schemas(settings.contract_dir)}
        self.files["/"] = self.files["/static/index.html"]
        self.files["/config.json"] = json.dumps(settings.page_config(), indent=1).encode()
        self.scheme = "https" if tls is not None else "http"
        super().__init__((host, port), _Handler)
        if tls is not None:
            # the handshake then happens in the request's thread, so a slow client cannot stall accept()
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if isinstance(host, str) and ":" in host else str(host)
        return f"{self.scheme}://{shown}:{port}/"

    def history(self) -> bytes:
        from edge.dashboard.archive import load_history

        s = self.settings
        if s.archive is None:
            return json.dumps({"source": None, "points": []}).encode()
        return json.dumps(load_history(s.archive, s.history_hours, s.history_end)).encode()


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "edge-dashboard"
    sys_version = ""

    def do_GET(self) -> None:  # the name http.server calls
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, *, head: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/index.html":
            path = "/"
        if path == "/history.json":
            body: bytes | None = self.server.history()
        else:
            body = self.server.files.get(path)
        if body is None:
            self._reply(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8", head=head)
            return
        kind = _TYPES.get(Path(path).suffix, "text/html; charset=utf-8" if path == "/" else "application/octet-stream")
        self._reply(HTTPStatus.OK, body, kind, head=head)

    def _reply(self, status: HTTPStatus, body: bytes, content_type: str, *, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", self.server.csp)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # http.server's signature
        log.debug("%s %s", self.address_string(), format % args)
