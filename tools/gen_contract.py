"""Write the MQTT contract into contract/: JSON Schemas of the payload models and an AsyncAPI 3.0 document.

    python tools/gen_contract.py           # (re)write contract/ from edge/payloads.py
    python tools/gen_contract.py --check   # exit 1 and list the files that differ (tests/test_contract.py)

The pydantic models in edge/payloads.py are the source of truth; contract/ is generated from them and
committed, so a consumer (city platform, dashboards) can read the contract without Python, and a change
of a model shows up as a diff in review. Every object schema is closed (``additionalProperties: false``):
a per-object field such as a track id or a box cannot slip into a payload unnoticed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, get_args

import yaml

from edge.payloads import (
    SCHEMA_VERSION,
    ConflictKind,
    DeviceHealth,
    DeviceStatus,
    MqttHealth,
    NearMissEvent,
    OutboxHealth,
    Payload,
    SpeedStats,
    WindowMetrics,
    WindowSpeeds,
    window_msg_id,
)
from edge.types import ROAD_USER_CLASSES

REPO: Final = Path(__file__).resolve().parents[1]
CONTRACT_DIR: Final = REPO / "contract"
DEFAULT_PREFIX: Final = "traffic/v1"
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

#: name -> (model, topic suffix, MQTT retain flag, summary)
PAYLOADS: Final[dict[str, tuple[type[Payload], str, bool, str]]] = {
    "window_metrics": (WindowMetrics, "{device}/{camera}/metrics", False,
                       "Anonymous counts of one camera and window, per line, direction and road-user class."),
    "window_speeds": (WindowSpeeds, "{device}/{camera}/speeds", False,
                      "Speed statistics at one counting line of a calibrated camera, per window."),
    "near_miss_event": (NearMissEvent, "{device}/{camera}/events", False,
                        "One near-miss between two road users, with surrogate safety measures."),
    "device_status": (DeviceStatus, "{device}/status", True,
                      "Retained availability: online after each connect, offline as the last will."),
    "device_health": (DeviceHealth, "{device}/health", False,
                      "Delivery health: outbox depth, size, drops per kind, connection counters, alarm."),
}

# ------------------------------------------------------------------------------- realistic maximal examples
_DEVICE = "cam-" + "d" * 60  # the longest device id the config allows (64)
_CAMERA = "c" * 64
_START = "2024-05-01T07:15:00Z"


SEVERITIES: Final = ("high", "medium", "low")
#: The longest line and direction names the config allows (32 characters).
LINES: Final = tuple(f"line-{i}-" + "l" * 25 for i in range(8))
DIRECTIONS: Final = tuple(f"dir-{d}-" + "x" * 26 for d in "ab")
#: With the longest names, the config validator accepts a calibrated camera with turning movements and
#: up to this many lines (edge.prepare.payload_problems): the metrics example uses that many. (Speeds go
#: in a record per line, so the metrics record with its movements is the one that limits the lines.)
MAX_CALIBRATED_LINES: Final = 7


#: A four-approach intersection: 12 turning movements.
MOVEMENTS: Final = tuple(f"{a}->{b}" for a in ("north", "east", "south", "west")
                         for b in ("north", "east", "south", "west") if a != b)


def window_counts_data(lines: tuple[str, ...] = LINES) -> dict[str, Any]:
    """8 lines x 2 directions x 6 classes of 5-digit counts with the longest names the config allows, and
    the near-miss summary; no turning movements (no zones configured)."""
    return {
        "msg_id": window_msg_id(_DEVICE, _CAMERA, _START), "device": _DEVICE, "camera": _CAMERA,
        "window_start": _START, "window_s": 86_400, "partial": True,
        "counts": {line: {d: dict.fromkeys(ROAD_USER_CLASSES, 99_999) for d in DIRECTIONS} for line in lines},
        "conflicts": {
            "by_type": {t: dict.fromkeys(SEVERITIES, 99_999) for t in get_args(ConflictKind)},
            "vulnerable": 99_999, "vehicles_entering": 9_999_999, "per_1000_vehicles": 999.99,
        },
        "health": {"frames": 2_160_000, "dropped_frames": 2_159_999, "fps": 29.997, "clips_started": 99_999,
                   "clips_dropped_budget": 2_159_999},
    }


def max_window_metrics() -> WindowMetrics:
    """The largest record a calibrated camera with zones may produce: ``MAX_CALIBRATED_LINES`` lines of
    :func:`window_counts_data` plus the 12 movements of a four-approach intersection, all classes."""
    data = window_counts_data(LINES[:MAX_CALIBRATED_LINES])
    data["movements"] = {m: dict.fromkeys(ROAD_USER_CLASSES, 99_999) for m in MOVEMENTS}
    return WindowMetrics.model_validate(data)


def max_window_speeds() -> WindowSpeeds:
    """One line (the longest name) x 2 directions x 6 classes, 3-digit counts, all statistics published."""
    stats = SpeedStats(count=999, unmeasured=999, mean_kmh=123.4, p50_kmh=123.4, p85_kmh=123.4, over_limit=999)
    line = LINES[0]
    return WindowSpeeds(
        msg_id=window_msg_id(_DEVICE, _CAMERA, _START, f"speeds/{line}"), device=_DEVICE, camera=_CAMERA,
        window_start=_START, window_s=86_400, partial=True, line=line, speed_limit_kmh=130.0,
        speeds={d: dict.fromkeys(ROAD_USER_CLASSES, stats) for d in DIRECTIONS},
    )


def max_near_miss_event() -> NearMissEvent:
    return NearMissEvent(
        msg_id="6f1c1f0e-7a55-4d1e-9a3c-2b7f0a6e3c11", device=_DEVICE, camera=_CAMERA,
        time="2024-05-01T07:15:03.123456Z", conflict_type="crossing", severity="medium",
        road_users=("motorcycle", "person"), speeds_mps=(13.888888888888889, 1.4142135623730951), vulnerable=True,
        ttc_s=1.2345678901234567, pet_s=0.9876543210987654, drac_mps2=7.123456789012345,
        location_m=(-99_999, 99_999), clip="k" * 96,
    )


def max_attestation() -> dict[str, Any]:
    """The shape of ``edge.attest.attestation`` with clips on and every check failing with a long message."""
    detail = "d" * 200
    sha = "0123456789abcdef" * 4
    return {
        "software": {"name": "edge", "version": "10.20.30"},
        "protocol": {"id": "city-dot-ai-traffic-camera-v1", "version": 1, "limits": {
            "audio_allowed": False, "max_clip_s": 30.0, "max_clip_s_per_hour": 120.0, "max_clip_s_per_day": 600.0,
            "max_retention_days": 30.0,
            "max_clip_store_bytes": 8_589_934_592, "min_window_s": 60, "per_object_output_allowed": False,
            "frame_export_on_device_allowed": False}},
        "effective_limits": {
            "audio": False, "clips_enabled": True, "max_clip_s": 30.0, "clip_budget_s_per_hour": 120.0,
            "clip_budget_s_per_day": 600.0, "pre_roll_s": 5.0, "post_roll_s": 5.0,
            "retention_days": 30.0, "max_clip_store_bytes": 8_589_934_592,
            "redaction": {"persons": True, "plates": True, "pad_frac": 0.15, "blur_cells": 8,
                          "plate_strip_frac": 0.35, "carry_frames": 15},
            "encrypted_at_rest": True, "window_s": 86_400, "per_object_output": False},
        "config_sha256": sha,
        "model": {"name": "yolox-nano-416", "sha256": sha},
        "checks": [{"name": name, "ok": False, "detail": detail} for name in (
            "model_sha256", "config_within_protocol", "audio_disabled", "core_dumps_disabled", "clip_store",
            "clip_encoder")],
        "ok": False,
    }


def max_device_status() -> DeviceStatus:
    return DeviceStatus(
        msg_id="6f1c1f0e-7a55-4d1e-9a3c-2b7f0a6e3c11", device=_DEVICE, state="online", attestation=max_attestation(),
    )


def max_device_health() -> DeviceHealth:
    per_kind = {"event": 9_999_999_999, "metrics": 9_999_999_999, "health": 9_999_999_999, "status": 9_999_999_999}
    return DeviceHealth(
        msg_id="6f1c1f0e-7a55-4d1e-9a3c-2b7f0a6e3c11", device=_DEVICE, time="2024-05-01T07:15:03.123456Z",
        alarm="a" * 200,
        outbox=OutboxHealth(depth=9_999_999_999, size_bytes=2**40, max_bytes=2**40, oldest_age_s=31_536_000.123,
                            dropped_full=per_kind, dropped_ttl=per_kind, rejected=per_kind, dropped_error=per_kind),
        mqtt=MqttHealth(published=2**53, acked=2**53, errors=2**53, reconnects=2**53, connect_attempts=2**53),
    )


EXAMPLES: Final[dict[str, Callable[[], Payload]]] = {
    "window_metrics": max_window_metrics,
    "window_speeds": max_window_speeds,
    "near_miss_event": max_near_miss_event,
    "device_status": max_device_status,
    "device_health": max_device_health,
}


def wire_bytes(payload: Payload) -> bytes:
    """A payload exactly as the publisher sends it."""
    return payload.to_json().encode()


# ----------------------------------------------------------------------------------------------- render
def _close_objects(node: Any) -> None:
    """Give every object schema with properties ``additionalProperties: false`` (pydantic does for
    ``extra="forbid"``; this makes it a property of the contract, not of a model setting)."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            node["additionalProperties"] = False
        for value in node.values():
            _close_objects(value)
    elif isinstance(node, list):
        for value in node:
            _close_objects(value)


def json_schema(model: type[Payload]) -> dict[str, Any]:
    schema = model.model_json_schema(mode="serialization")
    _close_objects(schema)
    return {"$schema": JSON_SCHEMA_DIALECT, **schema}


def _dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def asyncapi() -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for name, (model, suffix, retain, summary) in PAYLOADS.items():
        channel = name.split("_", 1)[1] if name.startswith("device_") else suffix.rsplit("/", 1)[1]
        message = "".join(part.title() for part in name.split("_"))
        message = message[0].lower() + message[1:]
        params = {"device": {"description": "Device id (config device_id); also its broker user name."}}
        if "{camera}" in suffix:
            params["camera"] = {"description": "Camera name (config cameras[].name)."}
        channels[channel] = {
            "address": f"{DEFAULT_PREFIX}/{suffix}",
            "description": f"{summary} The prefix {DEFAULT_PREFIX!r} is configurable (mqtt.prefix).",
            "parameters": params,
            "messages": {message: {"$ref": f"#/components/messages/{message}"}},
        }
        operations[f"send{message[0].upper()}{message[1:]}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{message}"}],
            "bindings": {"mqtt": {"qos": 1, "retain": retain, "bindingVersion": "0.2.0"}},
        }
        messages[message] = {
            "name": message,
            "title": model.__name__,
            "summary": summary,
            "contentType": "application/json",
            "payload": {"$ref": f"./schemas/{name}.schema.json"},
            "examples": [{"name": "maximal", "summary": "Largest realistic payload.",
                          "payload": json.loads(wire_bytes(EXAMPLES[name]()))}],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Edge traffic camera: MQTT contract",
            "version": str(SCHEMA_VERSION),
            "description": (
                "Anonymous, aggregate traffic data from an intersection camera device. Generated by "
                "tools/gen_contract.py from edge/payloads.py; do not edit by hand.\n\n"
                "Delivery is at-least-once: MQTT v5, QoS 1, a store-and-forward outbox on the device. A "
                "consumer upserts by msg_id (metrics: by device, camera and window_start), so a duplicate "
                "never double-counts. Messages that waited on the device carry a MessageExpiryInterval set "
                "from the time left of their time to live. Every payload has schema_version and every object "
                "is closed (additionalProperties false). Payloads are meant to stay under 4 KB; the examples "
                "are the largest realistic ones, and tests/test_contract.py reports any that do not."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "city": {
                "host": "broker.example:8883",
                "protocol": "secure-mqtt",
                "protocolVersion": "5",
                "description": "TLS with the city's CA pinned on the device; plaintext is refused off loopback.",
                "security": [{"$ref": "#/components/securitySchemes/userPassword"},
                             {"$ref": "#/components/securitySchemes/clientCertificate"}],
                "bindings": {"mqtt": {
                    "clientId": "edge-{device}",
                    "cleanSession": True,
                    "keepAlive": 30,
                    "lastWill": {"topic": f"{DEFAULT_PREFIX}/{{device}}/status", "qos": 1, "retain": True,
                                 "message": "device_status payload with state offline"},
                    "bindingVersion": "0.2.0",
                }},
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "securitySchemes": {
                "userPassword": {"type": "userPassword", "description": "Broker user = device id."},
                "clientCertificate": {"type": "X509", "description": "Mutual TLS; certificate CN = device id."},
            },
        },
    }


def render() -> dict[str, str]:
    """Every file of contract/, by path relative to it, as the models say now."""
    files = {f"schemas/{name}.schema.json": _dump_json(json_schema(model)) for name, (model, *_) in PAYLOADS.items()}
    header = "# Generated by tools/gen_contract.py from edge/payloads.py; do not edit.\n"
    files["asyncapi.yaml"] = header + yaml.safe_dump(asyncapi(), sort_keys=False, allow_unicode=True, width=110)
    return files


def stale(root: Path = CONTRACT_DIR) -> list[str]:
    """Files of contract/ that differ from, are missing from, or are not in what :func:`render` makes."""
    want = render()
    have = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()
    out = sorted(name for name, text in want.items() if not (root / name).exists()
                 or (root / name).read_text(encoding="utf-8") != text)
    return out + sorted(have - set(want))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when contract/ is out of date")
    args = ap.parse_args(argv)
    if args.check:
        if diff := stale():
            print("contract/ is out of date; run `python tools/gen_contract.py`:", *diff, sep="\n  ", file=sys.stderr)
            return 1
        return 0
    for name, text in render().items():
        path = CONTRACT_DIR / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for name in stale():  # files no model produces any more
        (CONTRACT_DIR / name).unlink()
    print(f"wrote {len(render())} files to {CONTRACT_DIR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
