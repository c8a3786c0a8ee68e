"""MQTT publisher: one thread owns the paho client and drains the outbox to the broker.

The only module that imports paho. Other threads never touch the client: they call ``put``, which
writes to the :class:`~edge.publish.outbox.Outbox` and returns (paho is not fully thread-safe, and a
publish must never stall the camera loop).

The sender thread
    * connects (MQTT v5, TLS with the pinned CA, username/password or client certificate) with its own
      back-off with full jitter (RELIABILITY.md A7): each delay is drawn uniformly between
      :data:`RECONNECT_FLOOR_S` and a cap, the cap is ``max(reconnect_min_s, RECONNECT_SPREAD_S)`` for
      the first attempt and doubles per failed attempt up to ``reconnect_max_s``. The first attempt is
      drawn from a wide window already, so a fleet that loses its broker at the same instant does not
      come back in lock-step (20 clients over a 20 s window: at most 30 % in any one second);
    * sets the last will, a retained ``offline`` status (QoS 1), and after every CONNACK puts a retained
      ``online`` status and a health message in the outbox; an ``online`` that the outbox could not take
      (disk full, I/O error) is tried again every :data:`ONLINE_RETRY_S` until it is stored; with
      ``discovery`` (Home Assistant, :mod:`edge.publish.homeassistant`) it also publishes those retained
      configs once per CONNACK, straight to the client: they are rebuilt from the config for every
      connection, so the outbox has nothing to keep (a refused one raises the alarm);
    * publishes outbox rows QoS 1, status first and then in id order, with at most ``inflight_max`` (and
      at most the broker's Receive Maximum) unacknowledged, MessageExpiryInterval set to the time left
      of the row's TTL, and deletes a row only when its PUBACK reports success;
    * on a disconnect forgets what paho holds in memory (``drop_out_messages``) and sends every
      unacknowledged row again from the outbox after reconnecting: the outbox is the only truth.

Policies
    * CONNACK "Bad user name or password", "Not authorized", "Banned", "Bad authentication method",
      "Client identifier not valid", and a broker certificate that fails verification against
      ``tls.ca_file``, are configuration faults: they set :attr:`MqttPublisher.alarm` and the next attempt
      waits at least ``auth_retry_s`` (>= 60 s), so a wrong password never becomes a hot loop. TLS
      failures never fall back to plaintext.
    * PUBACK failures that cannot succeed on a resend ("Not authorized" (135), "Topic name invalid",
      "Payload format invalid") delete the row as ``rejected``, count an error and set the alarm:
      resending would block every later message behind it. Other PUBACK failures (e.g. "Quota exceeded")
      count an error, keep the row, and pause publishing for one back-off step.
    * A message larger than the broker's Maximum Packet Size (announced in CONNACK) is not sent (the
      broker would cut the connection for it) and never deleted for its size: it is held in the outbox
      (:meth:`~edge.publish.outbox.Outbox.hold`) and tried again after the next reconnect, when the
      broker's limit may have been raised; a PUBACK "Packet too large" (149) is handled the same way.
      Each connection that meets such messages logs one error and sets the alarm; the health record's
      ``mqtt.too_large`` counts the messages held on the latest connection that met any.
    * :meth:`MqttPublisher.stop` sends what it can within its timeout, then disconnects with reason
      "Disconnect with Will Message", so the broker publishes the retained ``offline`` on a clean stop too.
    * ``on_disconnect`` may fire twice for one loss (paho #870); handling it is idempotent.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import ssl
import stat
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.config import MqttConfig
from edge.errors import ConfigError, PublishError
from edge.payloads import (
    DeviceHealth,
    DeviceStatus,
    MessageKind,
    MqttHealth,
    OutboxHealth,
    Payload,
    iso_utc,
)
from edge.publish.homeassistant import DiscoveryMessage
from edge.publish.outbox import KINDS, Outbox, OutboxRow

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: CONNACK reason codes that a retry cannot fix: the configuration (or the broker's) must change.
CONNACK_CONFIG_FAULTS: Final = frozenset({0x85, 0x86, 0x87, 0x8A, 0x8C})
#: PUBACK reason codes for which a resend of the same message cannot succeed.
PUBACK_PERMANENT: Final = frozenset({0x87, 0x90, 0x99})
#: PUBACK "Packet too large": the message is kept and tried again after the next reconnect.
PUBACK_TOO_LARGE: Final = 0x95
_DISCONNECT_WITH_WILL: Final = 0x04
_PUBLISH_OVERHEAD_BYTES: Final = 64  # PUBLISH header and properties around the topic and payload
_TICK_S: Final = 0.05  # longest wait in the network loop while idle: the latency of a new row
#: Width of the first reconnect window (capped by ``reconnect_max_s``): wide enough that the clients of a
#: fleet that lost the broker together spread out (uniform over 20 s: 20 clients put more than 30 % into
#: one second in 0.06 % of cases, against 42 % over 5 s).
RECONNECT_SPREAD_S: Final = 20.0
#: While the broker stays unreachable, a WARNING this often (the first failed attempt warns at once).
UNREACHABLE_WARN_S: Final = 300.0
RECONNECT_FLOOR_S: Final = 0.05  # the shortest reconnect delay: never a hot loop, even at the low end
ONLINE_RETRY_S: Final = 1.0  # an ``online`` status the outbox refused is tried again after this
#: Permission bits of a password file that let another user read or change it (a warning) ...
_SECRET_SHARED_BITS: Final = 0o077
_SECRET_WORLD_WRITABLE: Final = 0o002  # ... and the one that lets anyone replace it (refused)


@dataclass(frozen=True, slots=True)
class PublisherCounters:
    published: int  # PUBLISH packets sent, resends included
    acked: int  # successful PUBACKs
    errors: int  # PUBACK failures plus failed connection attempts
    connect_attempts: int
    connects: int  # successful CONNACKs
    disconnects: int  # connection losses after a successful CONNACK

    @property
    def reconnects(self) -> int:
        return max(0, self.connects - 1)


class MqttPublisher:
    """Store-and-forward MQTT publisher for one device. Thread-safe ``put``; one internal sender thread.

    Construction reads the password and TLS files (raising :class:`~edge.errors.ConfigError` naming the
    field when one cannot be read) and opens the outbox; :meth:`start` starts the sender thread.
    ``outbox`` may be passed in (tests use a fake clock); it is then not closed by :meth:`stop`.
    ``attestation`` (the record of :func:`edge.attest.attestation`) goes out with every ``online`` status;
    ``discovery`` (:func:`edge.publish.homeassistant.discovery_messages`) after every CONNACK.
    """

    def __init__(
        self,
        config: MqttConfig,
        device_id: str,
        *,
        outbox: Outbox | None = None,
        attestation: Mapping[str, Any] | None = None,
        rng: random.Random | None = None,
        discovery: Sequence[DiscoveryMessage] = (),
    ) -> None:
        self.config = config
        self.discovery = tuple(discovery)
        self._discovery_mids: set[int] = set()  # Home Assistant configs sent on this connection, not yet acked
        self._discovery_refused = False  # the broker refused one on this connection
        self.attestation = dict(attestation) if attestation is not None else None
        self.device_id = device_id
        self.client_id = config.client_id or f"edge-{device_id}"
        self._status_topic = f"{config.prefix}/{device_id}/status"
        self._password = read_password(config)
        self._tls = _tls_context(config)
        self._own_outbox = outbox is None
        self.outbox = outbox if outbox is not None else Outbox(
            config.outbox_path, config.outbox_max_bytes, {k: config.ttl_s(k) for k in KINDS}
        )
        self._rng = rng or random.Random()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()  # interrupts a back-off wait; cleared after each wake-up
        self._flush_deadline = math.inf
        self._drained = False
        self._stopped = False
        # Written by the sender thread only; other threads read them (a stale read is harmless).
        self._alarms: dict[str, str] = {}
        self._published = self._acked = self._errors = 0
        self._attempts = self._connects = self._disconnects = 0
        self._connected = False
        self._next_attempt_s = 0.0  # monotonic time of the next connection attempt
        self._attempt = 0  # failed attempts since the last success: the back-off step
        self._last_expire_s = self._last_health_s = 0.0
        #: What goes on the health topic, after each connect and every ``health_interval_s``: the publisher's
        #: own figures, or a fuller report built on them (``edge run``: with its cameras). One builder, so
        #: one shape on the topic.
        self.health_report: Callable[[], DeviceHealth] = self.health
        self._online_due_s: float | None = None  # monotonic time to (re)try putting ``online``; None: done
        self._down_since_s: float | None = None  # first failed attempt since the last success (monotonic)
        self._last_down_warning_s = 0.0
        self._failed_attempts = 0
        # Callback results, handed from paho callbacks (run inside client.loop on the sender thread).
        self._connack: tuple[ReasonCode, Properties | None] | None = None
        self._link_lost = False
        self._pubacks: list[tuple[int, ReasonCode]] = []
        self._inflight: dict[int, OutboxRow] = {}  # mid -> row
        self._window = config.inflight_max
        self._max_packet_bytes: int | None = None  # the broker's Maximum Packet Size, from CONNACK
        self._too_large = 0  # messages held as too large, on the latest connection that met any
        self._too_large_seen = False  # this connection has held one (and logged it)

    # ----------------------------------------------------------------------------------------- topics
    def topic(self, kind: MessageKind, camera: str | None = None) -> str:
        """``{prefix}/{device}/status`` and ``/health``; ``{prefix}/{device}/{camera}/metrics`` and ``/events``."""
        if kind in ("status", "health"):
            return f"{self.config.prefix}/{self.device_id}/{kind}"
        return self.camera_topic(camera, "events" if kind == "event" else "metrics")

    def camera_topic(self, camera: str | None, leaf: Literal["metrics", "speeds", "events"]) -> str:
        if not camera or any(c in camera for c in "/+#"):
            raise ValueError(f"{leaf} need a camera name without '/', '+' or '#', got {camera!r}")
        return f"{self.config.prefix}/{self.device_id}/{camera}/{leaf}"

    # ------------------------------------------------------------------------------- producer interface
    def put(self, kind: MessageKind, payload: Payload, camera: str | None = None, *,
            leaf: Literal["speeds"] | None = None) -> int | None:
        """Queue one payload (any thread; a short disk write, no network): the outbox id, or None if it
        was dropped (counted). ``camera`` is required for metrics and events; ``leaf="speeds"`` sends a
        metrics-kind payload (kept and dropped like metrics) to ``{camera}/speeds`` instead."""
        topic = self.camera_topic(camera, leaf) if leaf is not None else self.topic(kind, camera)
        data = payload.to_json().encode()
        return self.outbox.put(kind, topic, data)

    # ---------------------------------------------------------------------------------------- control
    def start(self) -> None:
        if self._thread is not None:
            raise PublishError("MqttPublisher.start() called twice")
        self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.client_id}", daemon=True)
        self._thread.start()

    def stop(self, flush_timeout_s: float = 5.0) -> bool:
        """Send what the outbox holds for up to ``flush_timeout_s``, then disconnect so that the broker
        publishes the retained ``offline`` status. Returns True when the outbox was drained. Idempotent.

        Afterwards ``put`` raises :class:`~edge.errors.PublishError` (the outbox is closed) unless the
        outbox was passed in; what is left in it is sent by the next run."""
        if self._stopped:
            return self._drained
        self._stopped = True
        self._flush_deadline = time.monotonic() + flush_timeout_s
        self._stop.set()
        self._wake.set()
        if self._thread is None:
            self._drained = self.outbox.depth == 0
        else:
            self._thread.join(flush_timeout_s + self.config.connect_timeout_s + 5.0)
            if self._thread.is_alive():
                log.error("MQTT sender thread did not stop in time")
        if self._own_outbox:
            self.outbox.close()
        return self._drained

    # ----------------------------------------------------------------------------------------- health
    @property
    def alarm(self) -> str | None:
        """Open configuration faults, readable from any thread; None when there are none."""
        alarms = dict(self._alarms)
        return "; ".join(alarms[k] for k in sorted(alarms)) or None

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def next_attempt_in_s(self) -> float:
        """Seconds until the next connection attempt (0 when connected or due)."""
        return 0.0 if self._connected else max(0.0, self._next_attempt_s - time.monotonic())

    def counters(self) -> PublisherCounters:
        return PublisherCounters(self._published, self._acked, self._errors, self._attempts, self._connects,
                                 self._disconnects)

    def health(self) -> DeviceHealth:
        """The health payload: outbox figures, delivery counters and the alarm."""
        s = self.outbox.stats()
        c = self.counters()
        alarm = self.alarm
        return DeviceHealth(
            msg_id=str(uuid.uuid4()),
            device=self.device_id,
            time=iso_utc(datetime.now(UTC)),
            alarm=alarm[:200] if alarm else None,
            outbox=OutboxHealth(
                depth=s.depth, size_bytes=s.size_bytes, max_bytes=s.max_bytes, oldest_age_s=round(s.oldest_age_s, 3),
                dropped_full={k: v.dropped_full for k, v in s.kinds.items()},
                dropped_ttl={k: v.dropped_ttl for k, v in s.kinds.items()},
                rejected={k: v.rejected for k, v in s.kinds.items()},
                dropped_error={k: v.dropped_error for k, v in s.kinds.items()},
            ),
            mqtt=MqttHealth(published=c.published, acked=c.acked, errors=c.errors, reconnects=c.reconnects,
                            connect_attempts=c.connect_attempts, too_large=self._too_large),
        )

    def _status(self, state: Literal["online", "offline"]) -> bytes:
        """A status payload; ``online`` carries the attestation record, the last will stays small."""
        attestation = self.attestation if state == "online" else None
        status = DeviceStatus(msg_id=str(uuid.uuid4()), device=self.device_id, state=state, attestation=attestation)
        return status.to_json().encode()

    # ------------------------------------------------------------------------------------ sender thread
    def _new_client(self) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        client.enable_logger(log)
        if self._tls is not None:
            client.tls_set_context(self._tls)  # never tls_insecure_set: the host name is checked too
        if self.config.username is not None:
            client.username_pw_set(self.config.username, self._password)
        client.max_inflight_messages_set(self.config.inflight_max)
        client.max_queued_messages_set(0)  # our window keeps paho's queue empty; the outbox bounds memory
        client.connect_timeout = self.config.connect_timeout_s
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        self._connack = (reason_code, properties)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        self._link_lost = True  # idempotent: may fire twice for one loss

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        self._pubacks.append((mid, reason_code))

    def _run(self) -> None:
        client = self._new_client()
        while True:
            try:
                if self._step(client):
                    break
            except Exception:  # a bug or an unforeseen library error must not end delivery for good
                log.exception("MQTT sender: unexpected error; dropping the connection and retrying")
                self._errors += 1
                self._link_lost = True
                with contextlib.suppress(Exception):
                    client.disconnect()
                self._lost(client)
                self._attempt += 1
                self._next_attempt_s = time.monotonic() + self._delay(self._attempt, config_fault=False)
        self._drained = self._drained_now()
        if self._connected:
            self._graceful_disconnect(client)

    def _step(self, client: mqtt.Client) -> bool:
        """One turn of the sender loop; True when it is time to stop."""
        now = time.monotonic()
        if self._stop.is_set() and (now >= self._flush_deadline or self._drained_now()):
            return True
        if now - self._last_expire_s >= 1.0:
            self._last_expire_s = now
            self.outbox.expire()
        if not self._connected:
            if now < self._next_attempt_s:
                if self._stop.is_set() and self._next_attempt_s >= self._flush_deadline:
                    return True  # no chance to flush before the deadline
                self._wake.wait(min(self._next_attempt_s - now, 0.5))
                self._wake.clear()
                return False
            fault = self._connect(client)
            if fault is None:
                self._attempt = 0
                self._last_health_s = now
            else:
                self._attempt += 1
                self._next_attempt_s = time.monotonic() + self._delay(self._attempt, config_fault=fault)
            return False
        if self._online_due_s is not None and now >= self._online_due_s:
            self._announce_online(now)
        if now - self._last_health_s >= self.config.health_interval_s:
            self._last_health_s = now
            self.put("health", self.health_report())
        self._pump(client)
        if self._link_lost:
            self._lost(client)
            self._attempt = 1
            self._next_attempt_s = time.monotonic() + self._delay(self._attempt, config_fault=False)
        return False

    def _drained_now(self) -> bool:
        return self.outbox.depth == 0 and not self._inflight

    def _safe(self, fn: Callable[[], _T]) -> _T | None:
        """Run an outbox call on the sender thread; a bug must not kill the thread silently (then None)."""
        try:
            return fn()
        except Exception:
            log.exception("MQTT sender: outbox call failed")
            self._errors += 1
            return None

    def _announce_online(self, now: float) -> None:
        """Put the retained ``online`` status; if the outbox does not take it, try again later."""
        if self._safe(lambda: self.outbox.put("status", self._status_topic, self._status("online"))) is not None:
            self._online_due_s = None
            return
        if self._online_due_s is None:  # the first refusal since this CONNACK: say so once
            log.warning("MQTT: the outbox did not take the online status; retrying every %.0f s", ONLINE_RETRY_S)
        self._online_due_s = now + ONLINE_RETRY_S

    def _delay(self, attempt: int, *, config_fault: bool) -> float:
        """Delay before connection attempt ``attempt`` (1 = the first after a loss or failure): full jitter,
        uniform between :data:`RECONNECT_FLOOR_S` and a cap that starts at the spread window and doubles."""
        cfg = self.config
        first = max(cfg.reconnect_min_s, RECONNECT_SPREAD_S)
        cap = min(cfg.reconnect_max_s, first * 2 ** min(max(attempt - 1, 0), 30))
        delay = self._rng.uniform(min(RECONNECT_FLOOR_S, cap), cap)
        return max(delay, cfg.auth_retry_s) if config_fault else delay

    def _hold_s(self) -> float:
        """Pause after a PUBACK failure worth a resend (e.g. quota): one short jittered step, not a hot loop."""
        cfg = self.config
        return min(cfg.reconnect_max_s, self._rng.uniform(cfg.reconnect_min_s, 2 * cfg.reconnect_min_s))

    def _connect(self, client: mqtt.Client) -> bool | None:
        """One connection attempt up to CONNACK. None on success, else whether it was a configuration fault."""
        cfg = self.config
        self._attempts += 1
        self._connack = None
        self._link_lost = False
        client.will_set(self._status_topic, self._status("offline"), qos=1, retain=True)
        try:
            client.connect(cfg.broker_host, cfg.broker_port, keepalive=cfg.keepalive_s, clean_start=True)
        except ssl.SSLCertVerificationError as exc:
            return self._failed(
                "tls",
                f"the broker's certificate failed verification against tls.ca_file ({exc.verify_message}); "
                "check tls.ca_file and the broker host name",
            )
        except (OSError, ssl.SSLError) as exc:  # refused, unreachable, timeout, TLS handshake aborted
            self._errors += 1
            self._unreachable(f"connect to {cfg.broker_host}:{cfg.broker_port} failed: {exc}")
            return False
        deadline = time.monotonic() + cfg.connect_timeout_s
        while self._connack is None and not self._link_lost and time.monotonic() < deadline:
            if client.loop(0.1) == mqtt.MQTT_ERR_NO_CONN:
                break
        if self._connack is None:
            self._errors += 1
            self._unreachable(f"no CONNACK from {cfg.broker_host}:{cfg.broker_port} within {cfg.connect_timeout_s:g} s")
            client.disconnect()
            client.loop(0)
            return False
        reason, props = self._connack
        if reason.is_failure:
            client.disconnect()
            if reason.value in CONNACK_CONFIG_FAULTS:
                return self._failed(
                    "connect", f"the broker refused the login: {reason} (check username, password and client id)"
                )
            self._errors += 1
            log.warning("MQTT: broker refused the connection: %s", reason)
            return False
        self._connects += 1
        self._connected = True
        if self._down_since_s is not None:
            log.warning("MQTT: connected to %s:%s again after %d failed attempt(s) over %.0f s", cfg.broker_host,
                        cfg.broker_port, self._failed_attempts, time.monotonic() - self._down_since_s)
        self._down_since_s, self._failed_attempts = None, 0
        self._alarms.pop("connect", None)
        self._alarms.pop("tls", None)
        receive_max = getattr(props, "ReceiveMaximum", None)
        self._window = min(cfg.inflight_max, receive_max or cfg.inflight_max)
        self._max_packet_bytes = getattr(props, "MaximumPacketSize", None)
        self._too_large_seen = False
        self.outbox.release()
        self._online_due_s = None
        self._announce_online(time.monotonic())  # again from _step until the outbox took it
        self._publish_discovery(client)
        self._safe(lambda: self.put("health", self.health_report()))
        log.info("MQTT connected to %s:%s as %s", cfg.broker_host, cfg.broker_port, self.client_id)
        return None

    def _publish_discovery(self, client: mqtt.Client) -> None:
        """The Home Assistant discovery configs, retained QoS 1, once per CONNACK (not through the outbox)."""
        self._discovery_mids.clear()
        self._discovery_refused = False
        for msg in self.discovery:
            self._discovery_mids.add(client.publish(msg.topic, msg.payload, qos=1, retain=True).mid)

    def _discovery_acked(self, mid: int, reason: ReasonCode) -> None:
        """A PUBACK of a discovery config: a refusal raises the alarm, a connection that sent all clears it."""
        if mid not in self._discovery_mids:
            return
        self._discovery_mids.discard(mid)
        if reason.is_failure:
            self._discovery_refused = True
            self._failed("discovery", f"the broker refused a Home Assistant discovery config: {reason} (check "
                         "that the ACL lets the device write homeassistant/sensor/%u/+/config)")
        elif not self._discovery_mids and not self._discovery_refused:
            self._alarms.pop("discovery", None)

    def _unreachable(self, what: str) -> None:
        """A failed connection attempt: a WARNING at the first since the last success and every
        ``UNREACHABLE_WARN_S`` after (the rest at INFO), so an unreachable broker shows at the default level."""
        now = time.monotonic()
        self._failed_attempts += 1
        if self._down_since_s is None:
            self._down_since_s = self._last_down_warning_s = now
            log.warning("MQTT: %s; retrying with back-off, and the outbox keeps every message meanwhile", what)
        elif now - self._last_down_warning_s >= UNREACHABLE_WARN_S:
            self._last_down_warning_s = now
            log.warning("MQTT: broker still unreachable after %d attempts over %.0f min (%s); the outbox holds %d "
                        "message(s)", self._failed_attempts, (now - self._down_since_s) / 60, what, self.outbox.depth)
        else:
            log.info("MQTT: %s", what)

    def _failed(self, key: str, message: str) -> bool:
        """Count an error and raise (or keep) the alarm ``key``; logged once per distinct message."""
        self._errors += 1
        if self._alarms.get(key) != message:
            retry = f"; retrying in {self.config.auth_retry_s:.0f} s" if key in ("connect", "tls") else ""
            log.error("MQTT configuration fault: %s%s", message, retry)
        self._alarms[key] = message
        return True

    def _pump(self, client: mqtt.Client) -> None:
        """Fill the in-flight window from the outbox, run the network loop once, apply PUBACKs."""
        room = self._window - len(self._inflight)
        if room > 0 and not self._link_lost:
            rows = self.outbox.take(room)
            for row in rows:
                self._send(client, row)
            if len(rows) < room and not self._too_large_seen and self._too_large:
                self._too_large = 0  # a whole pass on this connection held nothing: the limit was raised
                self._alarms.pop("too_large", None)
        rc = client.loop(_TICK_S if len(self._inflight) < self._window else 1.0)
        if rc == mqtt.MQTT_ERR_NO_CONN:
            self._link_lost = True
        if self._pubacks:
            self._apply_pubacks()

    def _send(self, client: mqtt.Client, row: OutboxRow) -> None:
        if self._max_packet_bytes is not None and row.size + _PUBLISH_OVERHEAD_BYTES > self._max_packet_bytes:
            self._hold_too_large(row)  # the broker would drop the connection for it: keep it for later
            return
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.PayloadFormatIndicator = 1
        props.ContentType = "application/json"
        retain = row.kind == "status"
        if not retain:  # a retained status must not expire at the broker
            left = self.outbox.ttl_remaining_s(row)
            if math.isfinite(left):
                props.MessageExpiryInterval = max(1, math.floor(left))
        info = client.publish(row.topic, row.payload, qos=1, retain=retain, properties=props)
        # rc NO_CONN still queues a QoS 1 message in paho; the disconnect handling resends it anyway.
        self._inflight[info.mid] = row
        self._published += 1

    def _hold_too_large(self, row: OutboxRow) -> None:
        """Keep a message over the broker's packet limit: held in the outbox, never deleted for its size, and
        sent again after the next reconnect (the limit may be raised). One error line per connection."""
        self.outbox.hold([row.id])
        if not self._too_large_seen:
            self._too_large_seen = True
            self._too_large = 0
            self._errors += 1
            log.error("MQTT: a %s message of %d bytes exceeds the broker's maximum packet size of %s bytes; it and "
                      "any others like it are kept in the outbox and tried again after the next reconnect (raise "
                      "the broker's max_packet_size)", row.kind, row.size, self._max_packet_bytes)
        self._too_large += 1
        limit = f" ({self._max_packet_bytes} bytes)" if self._max_packet_bytes else ""
        self._alarms["too_large"] = (f"{self._too_large} message(s) exceed the broker's maximum packet size{limit}; "
                                     "kept, retried after a reconnect")

    def _apply_pubacks(self) -> None:
        acks, self._pubacks = self._pubacks, []
        good: list[int] = []
        hold = False
        for mid, reason in acks:
            row = self._inflight.pop(mid, None)
            if row is None:
                self._discovery_acked(mid, reason)  # or from a connection already given up
                continue
            if not reason.is_failure:
                good.append(row.id)
                self._acked += 1
                continue
            if reason.value == PUBACK_TOO_LARGE:
                self._hold_too_large(row)
            elif reason.value in PUBACK_PERMANENT:
                self.outbox.reject([row.id])
                self._failed("publish", f"the broker refused {row.topic}: {reason} (check the broker ACL)")
            else:
                self._errors += 1
                log.warning("MQTT: PUBACK %s for %s; will resend", reason, row.topic)
                self.outbox.release([row.id])
                hold = True
        if good:
            self.outbox.ack(good)
        if hold:
            # Wait one back-off step before sending again: a quota must not become a hot loop.
            self._wake.wait(self._hold_s())
            self._wake.clear()

    def _lost(self, client: mqtt.Client) -> None:
        """Handle one connection loss (idempotent with respect to repeated on_disconnect calls)."""
        if not self._connected:
            return
        self._connected = False
        self._disconnects += 1
        client.drop_out_messages()  # the outbox resends them; paho must not send them a second time
        self._inflight.clear()
        self._pubacks.clear()
        self.outbox.release()
        log.warning("MQTT connection to %s:%s lost", self.config.broker_host, self.config.broker_port)

    def _graceful_disconnect(self, client: mqtt.Client) -> None:
        """DISCONNECT with reason 'Disconnect with Will Message': the broker publishes the retained offline."""
        client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=_DISCONNECT_WITH_WILL))
        deadline = time.monotonic() + 2.0
        while not self._link_lost and time.monotonic() < deadline:
            client.loop(0.05)
        self._connected = False


def read_password(config: MqttConfig) -> str | None:
    """The password from password_file (first line) or the environment variable named by password_env."""
    if config.password_file is not None:
        try:
            with config.password_file.open(encoding="utf-8") as f:
                _check_secret_mode(config.password_file, os.fstat(f.fileno()).st_mode)
                lines = f.read().splitlines()
        except OSError as exc:
            raise ConfigError(
                f"mqtt.password_file: cannot read {config.password_file}: {exc.strerror}; check the path and that "
                "the service user may read it"
            ) from None
        if not lines or not lines[0]:
            raise ConfigError(f"mqtt.password_file: {config.password_file} is empty; put the password on line 1")
        return lines[0]
    if config.password_env is not None:
        value = os.environ.get(config.password_env)
        if not value:
            raise ConfigError(
                f"mqtt.password_env: environment variable {config.password_env} is not set or empty; set it in the "
                "service's environment"
            )
        return value
    return None


def _check_secret_mode(path: Path, mode: int) -> None:
    """Refuse a world-writable password file (anyone could swap the password); warn when another user may
    read or change it. The mode is read from the open file, so it is the file that is then read."""
    perms = stat.S_IMODE(mode)
    if perms & _SECRET_WORLD_WRITABLE:
        raise ConfigError(
            f"mqtt.password_file: {path} is world-writable (mode {perms:04o}): any user could replace the "
            f"password; run `chmod 600 {path}` (owned by the service user), or use a systemd credential"
        )
    if perms & _SECRET_SHARED_BITS:
        log.warning("mqtt.password_file: %s has mode %04o: other users may read the MQTT password; run "
                    "`chmod 600 %s`", path, perms, path)


def _tls_context(config: MqttConfig) -> ssl.SSLContext | None:
    """A client context that trusts only tls.ca_file, checks the host name, and speaks TLS 1.2 or newer."""
    tls = config.tls
    if tls is None:
        return None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"mqtt.tls.ca_file: cannot load {tls.ca_file}: {exc}; it must be a PEM CA file") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"mqtt.tls.cert_file/key_file: cannot load {tls.cert_file} with {tls.key_file}: {exc}"
            ) from None
    return ctx
