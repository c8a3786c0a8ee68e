"""MQTT publisher: one thread owns the paho client and drains the outbox to the broker.

The only module that imports paho. Other threads never touch the client: they call ``put``, which
writes to the :class:`~edge.publish.outbox.Outbox` and returns (paho is not fully thread-safe, and a
publish must never stall the camera loop).

The sender thread
    * connects (MQTT v5, TLS with the pinned CA, username/password or client certificate) with its own
      back-off: the delay cap doubles per failed attempt from ``reconnect_min_s`` to ``reconnect_max_s``
      and each delay is drawn uniformly below the cap and above ``reconnect_min_s`` (jitter, so a fleet
      does not reconnect in lock-step after a broker restart);
    * sets the last will, a retained ``offline`` status (QoS 1), and after every CONNACK puts a retained
      ``online`` status and a health message in the outbox;
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
      "Packet too large", "Payload format invalid") delete the row as ``rejected``, count an error and set
      the alarm: resending would block every later message behind it. Other PUBACK failures (e.g.
      "Quota exceeded") count an error, keep the row, and pause publishing for one back-off step.
    * A message larger than the broker's Maximum Packet Size (announced in CONNACK) is rejected the same
      way before it is sent: the broker would cut the connection for it after every reconnect.
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
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

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
from edge.publish.outbox import KINDS, Outbox, OutboxRow

log = logging.getLogger(__name__)

#: CONNACK reason codes that a retry cannot fix: the configuration (or the broker's) must change.
CONNACK_CONFIG_FAULTS: Final = frozenset({0x85, 0x86, 0x87, 0x8A, 0x8C})
#: PUBACK reason codes for which a resend of the same message cannot succeed.
PUBACK_PERMANENT: Final = frozenset({0x87, 0x90, 0x95, 0x99})
_DISCONNECT_WITH_WILL: Final = 0x04
_PUBLISH_OVERHEAD_BYTES: Final = 64  # PUBLISH header and properties around the topic and payload
_TICK_S: Final = 0.05  # longest wait in the network loop while idle: the latency of a new row


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
    ``attestation`` (the record of :func:`edge.attest.attestation`) goes out with every ``online`` status.
    """

    def __init__(
        self,
        config: MqttConfig,
        device_id: str,
        *,
        outbox: Outbox | None = None,
        attestation: Mapping[str, Any] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.attestation = dict(attestation) if attestation is not None else None
        self.device_id = device_id
        self.client_id = config.client_id or f"edge-{device_id}"
        self._status_topic = f"{config.prefix}/{device_id}/status"
        self._password = _read_password(config)
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
        # Callback results, handed from paho callbacks (run inside client.loop on the sender thread).
        self._connack: tuple[ReasonCode, Properties | None] | None = None
        self._link_lost = False
        self._pubacks: list[tuple[int, ReasonCode]] = []
        self._inflight: dict[int, OutboxRow] = {}  # mid -> row
        self._window = config.inflight_max
        self._max_packet_bytes: int | None = None  # the broker's Maximum Packet Size, from CONNACK

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
        data = payload.model_dump_json(exclude_none=True).encode()
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
                            connect_attempts=c.connect_attempts),
        )

    def _status(self, state: Literal["online", "offline"]) -> bytes:
        """A status payload; ``online`` carries the attestation record, the last will stays small."""
        attestation = self.attestation if state == "online" else None
        status = DeviceStatus(msg_id=str(uuid.uuid4()), device=self.device_id, state=state, attestation=attestation)
        return status.model_dump_json(exclude_none=True).encode()

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
        if now - self._last_health_s >= self.config.health_interval_s:
            self._last_health_s = now
            self.put("health", self.health())
        self._pump(client)
        if self._link_lost:
            self._lost(client)
            self._attempt = 1
            self._next_attempt_s = time.monotonic() + self._delay(self._attempt, config_fault=False)
        return False

    def _drained_now(self) -> bool:
        return self.outbox.depth == 0 and not self._inflight

    def _safe(self, fn: Callable[[], object]) -> None:
        """Run an outbox call on the sender thread; a bug must not kill the thread silently."""
        try:
            fn()
        except Exception:
            log.exception("MQTT sender: outbox call failed")
            self._errors += 1

    def _delay(self, attempt: int, *, config_fault: bool) -> float:
        cfg = self.config
        cap = min(cfg.reconnect_max_s, cfg.reconnect_min_s * 2 ** min(attempt, 30))
        delay = self._rng.uniform(cfg.reconnect_min_s, cap)
        return max(delay, cfg.auth_retry_s) if config_fault else delay

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
            log.info("MQTT connect to %s:%s failed: %s", cfg.broker_host, cfg.broker_port, exc)
            return False
        deadline = time.monotonic() + cfg.connect_timeout_s
        while self._connack is None and not self._link_lost and time.monotonic() < deadline:
            if client.loop(0.1) == mqtt.MQTT_ERR_NO_CONN:
                break
        if self._connack is None:
            self._errors += 1
            log.info("MQTT: no CONNACK from %s:%s", cfg.broker_host, cfg.broker_port)
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
        self._alarms.pop("connect", None)
        self._alarms.pop("tls", None)
        receive_max = getattr(props, "ReceiveMaximum", None)
        self._window = min(cfg.inflight_max, receive_max or cfg.inflight_max)
        self._max_packet_bytes = getattr(props, "MaximumPacketSize", None)
        self.outbox.release()
        self._safe(lambda: self.outbox.put("status", self._status_topic, self._status("online")))
        self._safe(lambda: self.put("health", self.health()))
        log.info("MQTT connected to %s:%s as %s", cfg.broker_host, cfg.broker_port, self.client_id)
        return None

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
            for row in self.outbox.take(room):
                self._send(client, row)
        rc = client.loop(_TICK_S if len(self._inflight) < self._window else 1.0)
        if rc == mqtt.MQTT_ERR_NO_CONN:
            self._link_lost = True
        if self._pubacks:
            self._apply_pubacks()

    def _send(self, client: mqtt.Client, row: OutboxRow) -> None:
        if self._max_packet_bytes is not None and row.size + _PUBLISH_OVERHEAD_BYTES > self._max_packet_bytes:
            # The broker would drop the connection for it, again after every reconnect: refuse it here.
            self.outbox.reject([row.id])
            self._failed("publish", f"a {row.kind} message of {row.size} bytes exceeds the broker's maximum "
                         f"packet size of {self._max_packet_bytes} bytes")
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

    def _apply_pubacks(self) -> None:
        acks, self._pubacks = self._pubacks, []
        good: list[int] = []
        hold = False
        for mid, reason in acks:
            row = self._inflight.pop(mid, None)
            if row is None:
                continue  # from a connection already given up
            if not reason.is_failure:
                good.append(row.id)
                self._acked += 1
                continue
            if reason.value in PUBACK_PERMANENT:
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
            self._wake.wait(self._delay(1, config_fault=False))
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


def _read_password(config: MqttConfig) -> str | None:
    """The password from password_file (first line) or the environment variable named by password_env."""
    if config.password_file is not None:
        try:
            lines = config.password_file.read_text(encoding="utf-8").splitlines()
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
