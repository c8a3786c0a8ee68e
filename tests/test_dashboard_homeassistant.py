"""Home Assistant MQTT discovery (issue 17 item 3): sensors per camera and line, availability from the retained
status, every config within the 4 KB payload rule, published retained once per connect, allowed by the deploy
ACL for the device's own node only."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jinja2
import paho.mqtt.client as mqtt
import pytest
import yaml

from edge.config import EdgeConfig, parse_config
from edge.errors import ConfigError
from edge.payloads import MAX_PAYLOAD_BYTES
from edge.publish import MqttPublisher
from edge.publish.homeassistant import DiscoveryMessage, discovery_messages
from tests.conftest import REPO
from tests.dashboard_support import DASHBOARD_PASSWORD, HA_USER, DeployBroker
from tests.mqtt_broker import DEVICE, DEVICE_PASSWORD, Collector, wait_until


def _config(device: str = DEVICE, *, on: bool = True, cameras: list[dict[str, Any]] | None = None,
            mqtt: dict[str, Any] | None = None) -> EdgeConfig:
    cams = cameras or [{"name": "north", "lines": [
        {"name": "stopline-n", "points_px": [[0, 10], [100, 10]]},
        {"name": "cross.walk", "points_px": [[0, 50], [100, 50]]}]}]
    broker = mqtt if mqtt is not None else {"url": "mqtt://127.0.0.1:1883"}
    return parse_config({"device_id": device, "cameras": cams, "mqtt": {**broker, "home_assistant": on}})


def _by_id(msgs: list[DiscoveryMessage]) -> dict[str, dict[str, Any]]:
    return {m.topic.split("/")[3]: json.loads(m.payload) for m in msgs}


def test_discovery_is_off_unless_asked_for() -> None:
    assert discovery_messages(_config(on=False)) == []
    assert discovery_messages(parse_config({"device_id": "d", "cameras": [{"name": "c"}]})) == []


def test_a_sensor_per_camera_and_line_available_from_the_retained_status() -> None:
    msgs = discovery_messages(_config())
    sensors = _by_id(msgs)
    assert set(sensors) == {"outbox_depth", "north_stopline-n_crossings", "north_cross_walk_crossings", "north_fps"}
    for m in msgs:
        assert m.topic.startswith(f"homeassistant/sensor/{DEVICE}/") and m.topic.endswith("/config")
    line = sensors["north_stopline-n_crossings"]
    assert line["state_topic"] == f"traffic/v1/{DEVICE}/north/metrics"
    assert line["unique_id"] == f"edge_{DEVICE}_north_stopline-n_crossings"
    assert line["availability"] == [{"topic": f"traffic/v1/{DEVICE}/status", "value_template": "{{ value_json.state }}",
                                     "payload_available": "online", "payload_not_available": "offline"}]
    assert line["device"]["identifiers"] == [f"edge_{DEVICE}"]
    assert sensors["outbox_depth"]["state_topic"] == f"traffic/v1/{DEVICE}/health"


def test_the_templates_give_what_home_assistant_would_show() -> None:
    """Rendered with Jinja2 (Home Assistant's template engine) against real payloads of the contract."""
    cams = [{"name": "junction", "lines": [{"name": "Sued", "points_px": [[0, 10], [100, 10]]},
                                          {"name": "West", "points_px": [[0, 50], [100, 50]]}],
             "calibration": yaml.safe_load((REPO / "config" / "otc-intersection.yaml").read_text())
             ["cameras"][0]["calibration"]}]
    sensors = _by_id(discovery_messages(_config("replay-otc", cameras=cams)))
    sued = {"up": {"car": 0, "person": 1}, "down": {"car": 2, "bus": 0}}
    metrics: dict[str, Any] = {"counts": {"Sued": sued},
               "health": {"fps": 20.0}, "window_start": "2020-01-01T00:00:00Z", "window_s": 60,
               "conflicts": {"by_type": {"angled": {"high": 1, "low": 0}, "crossing": {"medium": 2}}}}
    env = jinja2.Environment()

    def render(sensor: str, key: str = "value_template", value: dict[str, Any] = metrics) -> str:
        return env.from_string(sensors[sensor][key]).render(value_json=value)

    assert render("junction_Sued_crossings") == "3"
    assert render("junction_West_crossings") == "0"  # a line without a record yet
    assert render("junction_fps") == "20.0"
    assert render("junction_near_misses") == "3"
    assert render("junction_near_misses", value={**metrics, "conflicts": None}) == "0"
    attrs = json.loads(render("junction_Sued_crossings", "json_attributes_template"))
    assert attrs == {"window_start": "2020-01-01T00:00:00Z", "window_s": 60, "by_direction": sued}
    assert render("outbox_depth", value={"outbox": {"depth": 7}}) == "7"
    assert env.from_string(sensors["outbox_depth"]["availability"][0]["value_template"]).render(
        value_json={"state": "offline"}) == "offline"


def test_every_config_stays_within_the_payload_limit_with_the_longest_names() -> None:
    lines = [{"name": f"l{i}-" + "x" * 29, "points_px": [[0, i], [100, i]]} for i in range(8)]
    cams = [{"name": f"{k}" + "c" * 63, "lines": lines} for k in range(4)]
    msgs = discovery_messages(_config("d" * 64, cameras=cams, mqtt={"url": "mqtt://127.0.0.1:1883",
                                                                "prefix": "p" * 64 + "/" + "q" * 63}))
    assert len(msgs) == 1 + 4 * (8 + 1)
    assert max(len(m.payload) for m in msgs) <= MAX_PAYLOAD_BYTES  # 2.2 KB at most, with every name at its longest


def test_lines_that_would_share_an_id_are_refused() -> None:
    cams = [{"name": "n", "lines": [{"name": "a.b", "points_px": [[0, 1], [9, 1]]},
                                   {"name": "a_b", "points_px": [[0, 5], [9, 5]]}]}]
    with pytest.raises(ConfigError, match="rename one of the lines"):
        discovery_messages(_config(cameras=cams))


# ------------------------------------------------------------------------------------ on a real broker

class FirstCopies(Collector):
    """A collector that also lists the topics of first deliveries: live (retain flag clear, not a retained copy
    on (re)subscribing) and not a broker's resend (DUP clear; its persistent session may get one after the
    restart). So each entry is one PUBLISH from the device."""

    def __init__(self, port: int, client_id: str, topic: str) -> None:
        super().__init__(port, client_id, topic)
        self.firsts: list[str] = []

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        super()._on_message(client, userdata, msg)
        if not msg.retain and not msg.dup:
            self.firsts.append(msg.topic)


def test_configs_go_out_retained_once_per_connect_and_only_for_the_devices_own_node(
        deploy_broker: DeployBroker, tmp_path: Path) -> None:
    os.environ.setdefault("EDGE_TEST_MQTT_PASSWORD", DEVICE_PASSWORD)
    mqtt_cfg = deploy_broker.publisher_config(tmp_path / "outbox.sqlite", home_assistant=True)
    msgs = discovery_messages(_config(mqtt=mqtt_cfg.model_dump(mode="json", exclude_none=True)))
    col = FirstCopies(deploy_broker.plain_port, client_id="ha-collector", topic="homeassistant/#")
    col.start()
    pub = MqttPublisher(mqtt_cfg, DEVICE, discovery=msgs)
    pub.start()
    try:
        want = sorted(m.topic for m in msgs)
        assert wait_until(lambda: len(col.firsts) >= len(msgs), 10)
        assert sorted(col.firsts) == want  # once each
        retained = {m.topic: m.payload for m in col.messages() if m.topic.startswith("homeassistant/")}
        assert retained == {m.topic: m.payload for m in msgs}

        deploy_broker.stop()  # a broker restart: the device reconnects and sends them again, once
        deploy_broker.start()
        assert wait_until(lambda: len(col.firsts) >= 2 * len(msgs), 20)
        assert wait_until(lambda: pub.counters().connects == 2, 5)
        assert sorted(col.firsts) == sorted(want * 2)
        assert pub.alarm is None

        # Home Assistant reads them (and the devices' topics) with its reader account over TLS
        reader = Collector(deploy_broker.plain_port, client_id="ha-reader", topic="homeassistant/#")
        reader.client.username_pw_set(HA_USER, DASHBOARD_PASSWORD)
        reader.client.tls_set(ca_certs=str(deploy_broker.pki.ca_crt))
        reader.port = deploy_broker.readers_port
        reader.start()
        assert wait_until(lambda: {m.topic for m in reader.messages() if m.retain} == set(want), 10)
        reader.stop()
    finally:
        pub.stop(2)
        col.stop()


def test_the_acl_refuses_configs_for_another_devices_node(deploy_broker: DeployBroker, tmp_path: Path) -> None:
    os.environ.setdefault("EDGE_TEST_MQTT_PASSWORD", DEVICE_PASSWORD)
    mqtt_cfg = deploy_broker.publisher_config(tmp_path / "outbox.sqlite", home_assistant=True)
    other = discovery_messages(_config("cam-0002", mqtt=mqtt_cfg.model_dump(mode="json", exclude_none=True)))
    col = Collector(deploy_broker.plain_port, client_id="ha-collector-2", topic="homeassistant/#").start()
    pub = MqttPublisher(mqtt_cfg, DEVICE, discovery=other)  # logged in as cam-0001, claiming cam-0002's node
    pub.start()
    try:
        assert wait_until(lambda: pub.alarm is not None and "discovery" in pub.alarm, 10)
        assert "homeassistant/sensor/%u/+/config" in (pub.alarm or "")
        assert col.messages() == []
    finally:
        pub.stop(2)
        col.stop()
