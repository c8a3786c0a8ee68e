"""Home Assistant MQTT discovery (``mqtt.home_assistant: true``): retained sensor configs for the device.

Home Assistant creates an entity for every retained config under its discovery prefix. The device sends
one per camera and line (crossings in the latest window, with the per-direction and per-class counts as
attributes), one per camera for the processing rate and, for a calibrated camera, the near-misses of
the window, and one for the device's outbox depth. Every sensor takes its availability from the
device's retained status (``{prefix}/{device}/status``, ``value_json.state``: ``online`` / ``offline``,
the last will included), so Home Assistant shows a vanished device as unavailable.

Topics are ``homeassistant/sensor/{device_id}/{object_id}/config`` (Home Assistant's ``<node_id>/<object_id>``
form), so a broker ACL can let each device write only its own configs:
``pattern write homeassistant/sensor/%u/+/config``. Every payload stays within
:data:`~edge.payloads.MAX_PAYLOAD_BYTES` (checked here; a config over it is refused at start-up).
Nothing in them is per object: they point at the same anonymous topics a dashboard reads.

This module builds the messages and has no network code; :class:`~edge.publish.mqtt.MqttPublisher` sends
them, retained at QoS 1, once after every CONNACK (a broker that lost its store gets them back).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from edge import __version__
from edge.config import EdgeConfig
from edge.errors import ConfigError
from edge.payloads import MAX_PAYLOAD_BYTES

#: Home Assistant's default discovery prefix.
DISCOVERY_PREFIX: Final = "homeassistant"

#: Jinja: the sum of the innermost counts of a two-level mapping (direction -> class -> n), 0 when absent.
_NESTED_SUM: Final = ("{{% set ns = namespace(n=0) %}}{{% for d in ({expr} or {{}}).values() %}}"
                      "{{% set ns.n = ns.n + (d.values() | sum) %}}{{% endfor %}}{{{{ ns.n }}}}")


@dataclass(frozen=True, slots=True)
class DiscoveryMessage:
    """One retained discovery config: its topic and JSON payload."""

    topic: str
    payload: bytes


def _object_id(*parts: str) -> str:
    """Home Assistant ids allow letters, digits, '_' and '-': line names may also hold '.'."""
    return "_".join(p.replace(".", "_") for p in parts)


def _common(config: EdgeConfig) -> dict[str, Any]:
    mqtt = config.mqtt
    prefix = mqtt.prefix if mqtt is not None else "traffic/v1"
    device = config.device_id
    return {
        "availability": [{
            "topic": f"{prefix}/{device}/status",
            "value_template": "{{ value_json.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
        }],
        "device": {"identifiers": [f"edge_{device}"], "name": device, "manufacturer": "edge",
                   "model": "intersection traffic camera", "sw_version": __version__},
        "origin": {"name": "edge", "sw_version": __version__},
    }


def _sensors(config: EdgeConfig) -> list[tuple[str, dict[str, Any]]]:
    """(object_id, config without the common part) of every sensor of the device."""
    mqtt = config.mqtt
    prefix = mqtt.prefix if mqtt is not None else "traffic/v1"
    device = config.device_id
    out: list[tuple[str, dict[str, Any]]] = [(_object_id("outbox_depth"), {
        "name": "Outbox depth", "state_topic": f"{prefix}/{device}/health",
        "value_template": "{{ value_json.outbox.depth }}", "unit_of_measurement": "messages",
        "state_class": "measurement", "icon": "mdi:tray-full",
    })]
    for cam in config.cameras:
        metrics = f"{prefix}/{device}/{cam.name}/metrics"
        for line in cam.lines:
            name = json.dumps(line.name)  # a quoted literal; line names are [A-Za-z0-9_.-]
            out.append((_object_id(cam.name, line.name, "crossings"), {
                "name": f"{cam.name} {line.name} crossings", "state_topic": metrics,
                "value_template": _NESTED_SUM.format(expr=f"value_json.counts.get({name})"),
                "json_attributes_topic": metrics,
                "json_attributes_template": "{{ {'window_start': value_json.window_start, 'window_s': "
                f"value_json.window_s, 'by_direction': value_json.counts.get({name}, {{}})}} | tojson }}}}",
                "unit_of_measurement": "crossings", "state_class": "measurement", "icon": "mdi:counter",
            }))
        out.append((_object_id(cam.name, "fps"), {
            "name": f"{cam.name} processing rate", "state_topic": metrics,
            "value_template": "{{ value_json.health.fps }}", "unit_of_measurement": "fps",
            "state_class": "measurement", "icon": "mdi:speedometer",
        }))
        if cam.calibration is not None:
            out.append((_object_id(cam.name, "near_misses"), {
                "name": f"{cam.name} near-misses", "state_topic": metrics,
                "value_template": _NESTED_SUM.format(expr="(value_json.conflicts or {}).get('by_type')"),
                "unit_of_measurement": "near-misses", "state_class": "measurement", "icon": "mdi:car-emergency",
            }))
    return out


def discovery_messages(config: EdgeConfig) -> list[DiscoveryMessage]:
    """The discovery configs of ``config``'s device; empty unless ``mqtt.home_assistant`` is on.

    Raises :class:`~edge.errors.ConfigError` when two sensors would share an id (line names that differ
    only by '.' and '_') or a config would exceed the 4 KB payload rule."""
    if config.mqtt is None or not config.mqtt.home_assistant:
        return []
    common = _common(config)
    device = config.device_id
    messages: list[DiscoveryMessage] = []
    seen: set[str] = set()
    for object_id, sensor in _sensors(config):
        if object_id in seen:
            raise ConfigError(f"mqtt.home_assistant: two sensors map to the Home Assistant id {object_id!r} "
                              "(line names that differ only by '.' and '_'); rename one of the lines")
        seen.add(object_id)
        payload = json.dumps({**sensor, "unique_id": f"edge_{device}_{object_id}", "object_id":
                              f"edge_{device}_{object_id}", **common}, separators=(",", ":")).encode()
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ConfigError(f"mqtt.home_assistant: the discovery config of {object_id!r} has {len(payload)} "
                              f"bytes, over the {MAX_PAYLOAD_BYTES}-byte payload limit; shorten its names")
        messages.append(DiscoveryMessage(f"{DISCOVERY_PREFIX}/sensor/{device}/{object_id}/config", payload))
    return messages
