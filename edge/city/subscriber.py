"""``edge archive``: the city's subscriber that stores every record the devices publish.

The only city-side module that imports paho (the device's is :mod:`edge.publish.mqtt`; they share its TLS
context and password reading, so both sides check certificates the same way).

How it loses nothing
    * MQTT v5 with a persistent session: a fixed client id, ``clean_start=False`` and a Session Expiry
      Interval (``session_expiry_s``, default a week). While the archive is down, or the broker restarts
      (Mosquitto persists sessions), the broker keeps the subscription and queues every QoS 1 message.
    * Subscriptions at QoS 1 to ``{prefix}/+/+/metrics``, ``/speeds`` and ``/events``.
    * Manual acknowledgement: a message is acknowledged (PUBACK) only after its record, or its quarantine
      entry, is committed to SQLite with ``synchronous=FULL``. A crash before the commit means no PUBACK,
      and the broker sends the message again on the next connection.
    * If a write fails (disk full, I/O error), no later message of that connection is acknowledged either
      (MQTT acknowledges in order): the subscriber drops the connection, backs off and reconnects, and the
      broker redelivers everything unacknowledged.
    * Redeliveries and duplicate publications are harmless: the archive upserts by the contract's keys
      (:mod:`edge.city.store`) and counts them as duplicates.

Reconnects use full jitter between ``reconnect_min_s`` and a cap that doubles to ``reconnect_max_s`` (of the
``mqtt`` section); a refused login waits ``auth_retry_s``, as on the device.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import ssl
import threading
import time
from collections import Counter
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.city.config import ArchiveConfig
from edge.city.records import Checker, Invalid
from edge.city.store import Archive
from edge.config import MqttConfig
from edge.errors import ConfigError, EdgeError
from edge.publish.mqtt import CONNACK_CONFIG_FAULTS, _tls_context, read_password

log = logging.getLogger(__name__)
LEAVES = ("metrics", "speeds", "events")
_LOOP_S = 0.2


class ArchiveSubscriber:
    """Subscribe and store until ``stop`` is set. Construction reads the password and TLS files (a
    :class:`~edge.errors.ConfigError` names the field); :meth:`run` opens the archive in the calling thread."""

    def __init__(self, config: ArchiveConfig, *, rng: random.Random | None = None) -> None:
        if config.mqtt is None:
            raise ConfigError("mqtt: `edge archive` subscribes to a broker; add an mqtt section (url, tls, username, "
                              "password_file) to the archive config")
        self.config = config
        self.mqtt: MqttConfig = config.mqtt
        self.client_id = self.mqtt.client_id or "edge-archive"
        self.topics = [f"{self.mqtt.prefix}/+/+/{leaf}" for leaf in LEAVES]
        self._password = read_password(self.mqtt)
        self._tls = _tls_context(self.mqtt)
        self._rng = rng or random.Random()
        #: received, inserted, updated, duplicate, quarantined, store_errors, connects, connect_failures
        self.counters: Counter[str] = Counter()
        self.subscribed = threading.Event()  # set after each SUBACK; cleared on a lost link
        self._connack: ReasonCode | None = None
        self._session_present = False
        self._link_lost = False
        self._write_failed = False

    # ------------------------------------------------------------------------------------------ running
    def run(self, stop: threading.Event) -> None:
        with Archive(self.config.database) as archive:
            checker = Checker(self.config.schemas_dir)
            client = self._new_client(archive, checker)
            attempt = 0
            while not stop.is_set():
                fault = self._connect(client)
                if fault is not None:
                    attempt += 1
                    stop.wait(self._delay(attempt, config_fault=fault))
                    continue
                attempt = 0
                self._serve(client, stop)
                if not stop.is_set():
                    attempt = 1
                    stop.wait(self._delay(attempt, config_fault=False))
            client.disconnect()  # the session stays on the broker (Session Expiry Interval)
            client.loop(0.1)
        log.info("edge archive: stopped; %s", dict(self.counters))

    def _new_client(self, archive: Archive, checker: Checker) -> mqtt.Client:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5,
                             manual_ack=True)
        client.enable_logger(log)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        if self.mqtt.username is not None:
            client.username_pw_set(self.mqtt.username, self._password)
        client.connect_timeout = self.mqtt.connect_timeout_s
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = lambda c, _u, msg: self._on_message(c, msg, archive, checker)
        return client

    def _delay(self, attempt: int, *, config_fault: bool) -> float:
        cfg = self.mqtt
        cap = min(cfg.reconnect_max_s, cfg.reconnect_min_s * 2 ** min(max(attempt - 1, 0), 30))
        delay = self._rng.uniform(min(0.05, cap), cap)
        return max(delay, cfg.auth_retry_s) if config_fault else delay

    def _connect(self, client: mqtt.Client) -> bool | None:
        """One attempt up to SUBSCRIBE: None on success, else whether it was a configuration fault."""
        cfg = self.mqtt
        self._connack, self._link_lost, self._write_failed = None, False, False
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry_s
        try:
            client.connect(cfg.broker_host, cfg.broker_port, keepalive=cfg.keepalive_s, clean_start=False,
                           properties=props)
        except ssl.SSLCertVerificationError as exc:
            log.error("edge archive: the broker's certificate failed verification against mqtt.tls.ca_file (%s)",
                      exc.verify_message)
            self.counters["connect_failures"] += 1
            return True
        except (OSError, ssl.SSLError) as exc:
            log.warning("edge archive: connect to %s:%s failed: %s", cfg.broker_host, cfg.broker_port, exc)
            self.counters["connect_failures"] += 1
            return False
        deadline = time.monotonic() + cfg.connect_timeout_s
        while self._connack is None and not self._link_lost and time.monotonic() < deadline:
            if client.loop(0.1) != mqtt.MQTT_ERR_SUCCESS:
                break
        reason = self._connack
        if reason is None or reason.is_failure:
            self.counters["connect_failures"] += 1
            log.warning("edge archive: no connection to %s:%s: %s", cfg.broker_host, cfg.broker_port,
                        reason or "no CONNACK")
            client.disconnect()
            return reason is not None and reason.value in CONNACK_CONFIG_FAULTS
        self.counters["connects"] += 1
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.topics])
        log.info("edge archive: connected to %s:%s as %s (session present: %s)", cfg.broker_host, cfg.broker_port,
                 self.client_id, self._session_present)
        return None

    def _serve(self, client: mqtt.Client, stop: threading.Event) -> None:
        """Run the network loop (messages are stored in its callbacks) until the link drops or ``stop``."""
        while not stop.is_set():
            rc = client.loop(_LOOP_S)
            if self._write_failed:
                log.error("edge archive: a write failed; reconnecting so that the broker sends the unacknowledged "
                          "messages again")
                client.disconnect()
                break
            if rc != mqtt.MQTT_ERR_SUCCESS or self._link_lost:
                log.warning("edge archive: connection lost (%s); reconnecting", mqtt.error_string(rc))
                break
        self.subscribed.clear()

    # ---------------------------------------------------------------------------------------- callbacks
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason: ReasonCode,
                    properties: Properties | None) -> None:
        self._connack = reason
        self._session_present = bool(flags.session_present)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason: ReasonCode,
                       properties: Properties | None) -> None:
        self._link_lost = True

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Properties | None) -> None:
        if refused := [str(r) for r in reasons if r.is_failure]:
            log.error("edge archive: the broker refused a subscription (%s); check its ACL for %s",
                      ", ".join(refused), self.mqtt.username)
        else:
            self.subscribed.set()

    def _on_message(self, client: mqtt.Client, msg: mqtt.MQTTMessage, archive: Archive, checker: Checker) -> None:
        """Store (or quarantine) one message, then acknowledge it; never acknowledge what is not committed."""
        if self._write_failed:
            return  # acknowledgements go in order: nothing after a failed write; it all comes again
        self.counters["received"] += 1
        payload = bytes(msg.payload)
        try:
            topic: str | None = msg.topic
        except UnicodeDecodeError:
            topic = None
        try:
            if topic is None:
                archive.quarantine(payload, "topic is not UTF-8", kind=None, source="mqtt")
                outcome = "quarantined"
            elif isinstance(result := checker.check(payload, topic=topic), Invalid):
                archive.quarantine(payload, result.reason, kind=result.kind, source=f"mqtt:{topic}", topic=topic)
                outcome = "quarantined"
            else:
                outcome = archive.store(result, f"mqtt:{topic}")
        except (sqlite3.Error, EdgeError) as exc:
            log.error("edge archive: cannot store a message of %s: %s", topic, exc)
            self.counters["store_errors"] += 1
            self._write_failed = True
            return
        self.counters[outcome] += 1
        client.ack(msg.mid, msg.qos)
