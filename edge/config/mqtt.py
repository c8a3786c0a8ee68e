"""MQTT publishing (``mqtt``, ``mqtt.tls``): broker, credentials, outbox budget and TTLs."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from edge.config.base import ReconnectBackoff, StrictModel

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
_TOPIC_LEVEL = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _is_loopback(host: str) -> bool:
    """True for a loopback name or address. No DNS look-up: validators are pure."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class MqttTlsConfig(StrictModel):
    ca_file: Path = Field(
        description="PEM file of the CA that signed the broker's certificate. It is pinned: system CAs are not "
        "trusted, and the broker's host name must match its certificate."
    )
    cert_file: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS; needs key_file.")
    key_file: Path | None = Field(None, description="Private key (PEM) of cert_file; keep it 0600.")

    @model_validator(mode="after")
    def _pair(self) -> MqttTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together: set both for mutual TLS, or neither")
        return self


class MqttConfig(ReconnectBackoff):
    """Broker, credentials, outbox and back-off (``reconnect_min_s``/``reconnect_max_s``: :class:`ReconnectBackoff`,
    with MQTT's own defaults and bounds)."""

    url: str | None = Field(
        None,
        description="Broker as mqtts://host:port (TLS) or mqtt://host:port (plaintext, this machine only). "
        "Alternative to host and port.",
    )
    host: str | None = Field(None, min_length=1, max_length=253, description="Broker host; alternative to url.")
    port: int | None = Field(None, ge=1, le=65535, description="Broker port; default 8883 with TLS, 1883 without.")
    prefix: str = Field(
        "traffic/v1", min_length=1, max_length=128,
        description="Topic prefix: topics are {prefix}/{device}/status and /health, {prefix}/{device}/{camera}/"
        "metrics and /events. Levels of letters, digits, '_', '.', '-'; no wildcards.",
    )
    client_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.-]{1,128}$",
        description="MQTT client id; default edge-{device_id}. Unique per broker: a second client with the same "
        "id disconnects the first.",
    )
    keepalive_s: int = Field(
        30, ge=5, le=3600, description="Ping period on an idle link; a dead link is noticed after about 1.5 x this."
    )
    connect_timeout_s: float = Field(
        10.0, gt=0, le=120, description="Give up one connection attempt (TCP, TLS, CONNACK) after this."
    )
    tls: MqttTlsConfig | None = Field(
        None, description="TLS with a pinned CA; required for any broker that is not on this machine."
    )
    username: str | None = Field(None, min_length=1, max_length=128, description="Login name on the broker.")
    password_file: Path | None = Field(
        None, description="File whose first line is the password (keep it 0600). Read at start, never logged."
    )
    password_env: str | None = Field(
        None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="Name of the environment variable holding the password; alternative to password_file.",
    )
    outbox_path: Path = Field(
        Path("/var/lib/edge/spool/outbox.sqlite3"),
        description="SQLite file of the store-and-forward outbox. Best on its own partition or quota.",
    )
    outbox_max_bytes: int = Field(
        64 * 2**20, ge=256 * 2**10, le=2**40,
        description="Disk budget of the outbox, write-ahead log included; on a smaller file system its free space "
        "is the limit. Plus a reserve file <outbox_path>-reserve of up to 1/16 of it (at least 32 KiB), freed "
        "when the disk fills so that acknowledged rows can always be deleted. When full, health messages are "
        "dropped first, then metrics, events last, oldest first within a kind; every drop is counted.",
    )
    event_ttl_s: float = Field(
        7 * 86_400.0, gt=0, le=365 * 86_400, description="An event still unsent after this is dropped (counted)."
    )
    metrics_ttl_s: float = Field(
        2 * 86_400.0, gt=0, le=365 * 86_400, description="A metrics window still unsent after this is dropped."
    )
    health_ttl_s: float = Field(
        3600.0, gt=0, le=365 * 86_400, description="A health message still unsent after this is dropped."
    )
    inflight_max: int = Field(
        20, ge=1, le=1000,
        description="Messages sent and not yet acknowledged at once. Bounds the duplicates after a reconnect; "
        "raising it drains a backlog faster over a slow link.",
    )
    reconnect_min_s: float = Field(
        1.0, gt=0, le=600,
        description="Lower bound of the first reconnect window. Each delay is drawn uniformly from 0.05 s up to a "
        "cap (full jitter): the first cap is the larger of this and 20 s, so that a fleet spreads its reconnects "
        "after a broker restart (at most 30 % in any one second); it doubles per failed attempt up to "
        "reconnect_max_s.",
    )
    reconnect_max_s: float = Field(60.0, gt=0, le=3600, description="Longest reconnect delay.")
    auth_retry_s: float = Field(
        300.0, ge=60, le=86_400,
        description="Delay before retrying after the broker refused the login or its certificate failed "
        "verification. That is a configuration fault: it raises the health alarm, and fast retries would only "
        "load the broker.",
    )
    health_interval_s: float = Field(
        60.0, ge=1, le=86_400, description="Period of health messages while connected; one also follows each connect."
    )
    home_assistant: bool = Field(
        False, description="Also publish Home Assistant MQTT discovery after every connect: a retained sensor config "
        "per camera and line (and per camera the processing rate and near-misses, and the outbox depth) under "
        "homeassistant/sensor/{device_id}/, each available while the retained status says online. The broker ACL "
        "must let the device write homeassistant/sensor/%u/+/config (deploy/mosquitto/edge.acl).",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"scheme must be mqtts:// (TLS) or mqtt:// (plaintext, loopback only), got {v!r}")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not hold credentials: set username and password_file instead")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"must be scheme://host[:port] only, got {v!r}")
        try:
            parts.port  # noqa: B018  (urlsplit checks the port range only when it is read)
        except ValueError as exc:
            raise ValueError(f"bad port in {v!r}: {exc}") from None
        if not parts.hostname:
            raise ValueError(f"has no host: {v!r}")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if "+" in v or "#" in v:
            raise ValueError(f"must not contain the MQTT wildcards '+' or '#', got {v!r}")
        if v.startswith("$"):
            raise ValueError(f"must not start with '$' (reserved for broker topics), got {v!r}")
        levels = v.split("/")
        if not all(_TOPIC_LEVEL.fullmatch(level) for level in levels):
            raise ValueError(
                f"must be '/'-separated levels of letters, digits, '_', '.', '-' with no empty level "
                f"(no leading, trailing or double '/'), e.g. traffic/v1; got {v!r}"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> MqttConfig:
        if (self.url is None) == (self.host is None):
            raise ValueError("set either url (e.g. mqtts://broker.example:8883) or host (with port), not both")
        if self.url is not None:
            scheme = urlsplit(self.url).scheme
            if self.port is not None:
                raise ValueError("port goes into the url (mqtts://host:port) when url is set")
            if scheme == "mqtts" and self.tls is None:
                raise ValueError("url is mqtts:// but tls is not set: set tls.ca_file to the CA of the broker")
            if scheme == "mqtt" and self.tls is not None:
                raise ValueError("url is plaintext mqtt:// but tls is set: use mqtts:// for a TLS broker")
        if not (self.tls is not None or _is_loopback(self.broker_host)):
            raise ValueError(
                f"broker {self.broker_host!r} is not on this machine and tls is not set: credentials and data would "
                "cross the network in plaintext. Set tls.ca_file to the CA that signed the broker's certificate "
                "(and use an mqtts:// url); plaintext is allowed for loopback only"
            )
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("set password_file or password_env, not both")
        if (self.password_file is not None or self.password_env is not None) and self.username is None:
            raise ValueError("a password needs a username: set username")
        return self

    @property
    def broker_host(self) -> str:
        if self.url is not None:
            return urlsplit(self.url).hostname or ""
        return self.host or ""

    @property
    def broker_port(self) -> int:
        if self.url is not None and (port := urlsplit(self.url).port) is not None:
            return port
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883

    def ttl_s(self, kind: Literal["event", "metrics", "health", "status"]) -> float:
        """Time to live of a message kind in the outbox (status: superseded by the next one, kept a day)."""
        return {"event": self.event_ttl_s, "metrics": self.metrics_ttl_s, "health": self.health_ttl_s,
                "status": 86_400.0}[kind]
