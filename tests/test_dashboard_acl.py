"""The deploy example's broker (deploy/mosquitto, issue 17 item 4): a TLS WebSockets listener for dashboards with a
read-only ACL. A dashboard account reads every device's topics and can publish nothing anywhere, including
topics a device pattern would grant to a user of its name; accounts work on their own listeners only."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.publish import MqttPublisher
from tests.dashboard_support import DASHBOARD_PASSWORD, DASHBOARD_USER, HA_USER, DeployBroker, ws_client
from tests.mqtt_broker import DEVICE, DEVICE_PASSWORD, PREFIX, Collector, wait_until

NOT_AUTHORIZED = 135



class Probe:
    """A connected client that records its CONNACK, SUBACK, PUBACKs and messages."""

    def __init__(self, client: mqtt.Client, port: int) -> None:
        self.client = client
        self.connack: ReasonCode | None = None
        self.granted: list[ReasonCode] = []
        self.pubacks: dict[int, int] = {}
        self.topics: list[str] = []
        self._lock = threading.Lock()
        client.on_connect = lambda c, u, f, rc, p: setattr(self, "connack", rc)
        client.on_subscribe = lambda c, u, mid, rcs, p: self.granted.extend(rcs)
        client.on_publish = self._on_publish
        client.on_message = lambda c, u, msg: self.topics.append(msg.topic)
        client.connect_async("127.0.0.1", port, keepalive=10)
        client.loop_start()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        with self._lock:
            self.pubacks[mid] = rc.value

    def connected(self, timeout_s: float = 10) -> ReasonCode:
        assert wait_until(lambda: self.connack is not None, timeout_s), "no CONNACK"
        assert self.connack is not None
        return self.connack

    def publish(self, topic: str) -> int:
        """The PUBACK reason code of one QoS 1 publish."""
        mid = self.client.publish(topic, b'{"schema_version": 2}', qos=1).mid
        assert wait_until(lambda: mid in self.pubacks, 5), f"no PUBACK for {topic}"
        return self.pubacks[mid]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _viewer(broker: DeployBroker, user: str = DASHBOARD_USER, password: str = DASHBOARD_PASSWORD,
            client_id: str = "viewer-1") -> Probe:
    return Probe(ws_client(broker.ws_port, user, password, broker.pki.ca_crt, client_id), broker.ws_port)


def test_a_dashboard_account_reads_every_device_and_cannot_publish_anywhere(
        deploy_broker: DeployBroker, tmp_path: Path) -> None:
    everything = Collector(deploy_broker.plain_port, client_id="everything", topic="#").start()
    viewer = _viewer(deploy_broker)
    os.environ.setdefault("EDGE_TEST_MQTT_PASSWORD", DEVICE_PASSWORD)
    device = MqttPublisher(deploy_broker.publisher_config(tmp_path / "outbox.sqlite"), DEVICE)
    try:
        assert not viewer.connected().is_failure
        viewer.client.subscribe(f"{PREFIX}/#", qos=1)
        assert wait_until(lambda: bool(viewer.granted), 5) and viewer.granted[0].value == 1  # QoS 1 granted
        device.start()  # a device on its own listener (TLS, its password): the viewer sees its status
        assert wait_until(lambda: f"{PREFIX}/{DEVICE}/status" in viewer.topics, 10)
        assert wait_until(lambda: f"{PREFIX}/{DEVICE}/status" in [m.topic for m in everything.messages()], 5)
        seen = len(everything.messages())
        for topic in (f"{PREFIX}/{DEVICE}/status", f"{PREFIX}/{DEVICE}/north/metrics",
                      f"{PREFIX}/{DASHBOARD_USER}/status",  # what `pattern write traffic/v1/%u/#` would grant
                      f"homeassistant/sensor/{DASHBOARD_USER}/x/config", "dashboard/anything"):
            assert viewer.publish(topic) == NOT_AUTHORIZED, topic
        assert wait_until(lambda: device.counters().acked >= 2, 5)  # the device's own publishes went through
        assert [m.topic for m in everything.messages()[seen:] if "dashboard" in m.topic or m.payload ==
                b'{"schema_version": 2}'] == []  # none of the viewer's publishes reached anyone
    finally:
        device.stop(2)
        viewer.close()
        everything.stop()


def test_accounts_work_on_their_own_listeners_only(deploy_broker: DeployBroker) -> None:
    # a viewer on the devices' listener, a device on the viewers' WebSockets, a wrong password, no login
    on_device_listener = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="v-on-8883", protocol=mqtt.MQTTv5)
    on_device_listener.tls_set(ca_certs=str(deploy_broker.pki.ca_crt))
    on_device_listener.username_pw_set(DASHBOARD_USER, DASHBOARD_PASSWORD)
    probes = [
        Probe(on_device_listener, deploy_broker.tls_port),
        _viewer(deploy_broker, DEVICE, DEVICE_PASSWORD, "device-on-ws"),
        _viewer(deploy_broker, DASHBOARD_USER, "wrong", "wrong-password"),
    ]
    anonymous = ws_client(deploy_broker.ws_port, DASHBOARD_USER, DASHBOARD_PASSWORD, deploy_broker.pki.ca_crt, "anon")
    anonymous.username_pw_set(None, None)
    probes.append(Probe(anonymous, deploy_broker.ws_port))
    try:
        for p in probes:
            assert p.connected().is_failure, p.client._client_id
    finally:
        for p in probes:
            p.close()


def test_home_assistant_reads_over_tls_and_cannot_publish(deploy_broker: DeployBroker) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="ha", protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(deploy_broker.pki.ca_crt))
    client.username_pw_set(HA_USER, DASHBOARD_PASSWORD)
    reader = Probe(client, deploy_broker.readers_port)
    try:
        assert not reader.connected().is_failure
        assert reader.publish(f"homeassistant/sensor/{DEVICE}/x/config") == NOT_AUTHORIZED
        assert reader.publish(f"{PREFIX}/{HA_USER}/status") == NOT_AUTHORIZED
    finally:
        reader.close()
