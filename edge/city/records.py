"""What an incoming payload is, and whether it keeps the contract.

Every payload the archive takes (from the broker or from a JSONL file) goes through :meth:`Checker.check`:

1. size: more than :data:`MAX_RECORD_BYTES` is refused unread (a device sends at most 4 KB);
2. JSON: it must parse to an object;
3. kind: from the MQTT topic's last level (``metrics``, ``speeds``, ``events``) or, in a JSONL file, from the
   record's keys (``line`` + ``speeds``: speeds; ``conflict_type``: an event; ``counts``: metrics);
4. JSON Schema: validated against ``contract/schemas/<kind>.schema.json`` (Draft 2020-12, closed objects), the
   contract a dashboard developer reads, so the archive takes exactly what the contract allows. The validator
   is jsonschema-rs (Rust, full Draft 2020-12, offline: no remote ``$ref`` is ever fetched): about 0.01 ms a
   record against 1.6 ms for the pure-Python ``jsonschema``, which matters when weeks of replays are imported
   (tests/test_archive.py checks that the two agree on valid and invalid records);
5. the pydantic model of :mod:`edge.payloads` then gives the typed record (it agrees with the schema: the
   schema is generated from it, and ``tests/test_contract.py`` checks that they match);
6. topic consistency: a payload's ``device`` and ``camera`` must be those of its topic.

A payload that fails is :class:`Invalid` with the reason, and the archive quarantines it (stored and counted,
never dropped silently).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

import jsonschema_rs
from pydantic import ValidationError

from edge.errors import ConfigError
from edge.payloads import NearMissEvent, WindowMetrics, WindowSpeeds

RecordKind = Literal["metrics", "speeds", "event"]
Record = WindowMetrics | WindowSpeeds | NearMissEvent
KINDS: Final[tuple[RecordKind, ...]] = ("metrics", "speeds", "event")
#: A device's payloads are at most 4 KB (edge.payloads.MAX_PAYLOAD_BYTES); the archive allows headroom for a
#: newer contract but refuses anything that could be an image or a dump.
MAX_RECORD_BYTES: Final = 64 * 1024
_SCHEMA_FILES: Final[Mapping[RecordKind, str]] = MappingProxyType({
    "metrics": "window_metrics.schema.json", "speeds": "window_speeds.schema.json",
    "event": "near_miss_event.schema.json",
})
_MODELS: Final[Mapping[RecordKind, type[Record]]] = MappingProxyType({
    "metrics": WindowMetrics, "speeds": WindowSpeeds, "event": NearMissEvent,
})
_TOPIC_LEAF: Final[Mapping[str, RecordKind]] = MappingProxyType(
    {"metrics": "metrics", "speeds": "speeds", "events": "event"})


@dataclass(frozen=True, slots=True)
class Valid:
    kind: RecordKind
    record: Record


@dataclass(frozen=True, slots=True)
class Invalid:
    kind: RecordKind | None
    reason: str


def kind_of_topic(topic: str) -> RecordKind | None:
    """``{prefix}/{device}/{camera}/metrics|speeds|events`` -> its record kind (None for any other topic)."""
    return _TOPIC_LEAF.get(topic.rsplit("/", 1)[-1])


def kind_of_keys(data: dict[str, Any]) -> RecordKind | None:
    """A JSONL record's kind from its keys (replay and batch write each kind to its own file, but a record
    says what it is by itself)."""
    if "line" in data and "speeds" in data:
        return "speeds"
    if "conflict_type" in data:
        return "event"
    if "counts" in data:
        return "metrics"
    return None


def _first_error(validator: jsonschema_rs.Validator, data: dict[str, Any]) -> str | None:
    error = next(iter(validator.iter_errors(data)), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.instance_path) or "(top level)"
    return f"{where}: {error.message[:300]}"


class Checker:
    """Validates payloads against the contract's JSON Schemas in ``schemas_dir`` (read once, at construction)."""

    def __init__(self, schemas_dir: Path) -> None:
        self._validators: dict[RecordKind, jsonschema_rs.Validator] = {}
        for kind, name in _SCHEMA_FILES.items():
            path = schemas_dir / name
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"schemas_dir: cannot read the contract's schema {path}: {exc}; point schemas_dir "
                                  "at contract/schemas of the release the devices run") from None
            try:
                jsonschema_rs.meta.validate(schema)
            except jsonschema_rs.ValidationError as exc:
                raise ConfigError(f"schemas_dir: {path} is not a valid JSON Schema: {exc.message}") from None
            self._validators[kind] = jsonschema_rs.Draft202012Validator(schema, offline=True)

    def check(self, payload: bytes | str, *, topic: str | None = None) -> Valid | Invalid:
        """Classify and validate one payload; ``topic`` is the MQTT topic it came on (None: from a file)."""
        if len(payload) > MAX_RECORD_BYTES:
            return Invalid(None, f"payload of {len(payload)} bytes is over the {MAX_RECORD_BYTES}-byte limit")
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            return Invalid(None, f"not JSON: {exc}")
        if not isinstance(data, dict):
            return Invalid(None, f"not a JSON object but {type(data).__name__}")
        kind = kind_of_topic(topic) if topic is not None else kind_of_keys(data)
        if kind is None:
            return Invalid(None, f"unknown record kind (topic {topic!r})" if topic else "unknown record kind")
        if (problem := _first_error(self._validators[kind], data)) is not None:
            return Invalid(kind, f"violates {_SCHEMA_FILES[kind]}: {problem}")
        try:
            record = _MODELS[kind].model_validate(data)
        except ValidationError as exc:
            return Invalid(kind, f"violates edge.payloads.{_MODELS[kind].__name__}: {exc.errors()[0]['msg']}")
        if topic is not None and (problem := _topic_mismatch(topic, record)) is not None:
            return Invalid(kind, problem)
        return Valid(kind, record)


def _topic_mismatch(topic: str, record: Record) -> str | None:
    parts = topic.split("/")
    if len(parts) < 3:
        return f"topic {topic!r} has no device and camera level"
    device, camera = parts[-3], parts[-2]
    if (record.device, record.camera) != (device, camera):
        return (f"payload of {record.device}/{record.camera} arrived on the topic of {device}/{camera} "
                f"({topic}); a device may publish only its own records")
    return None
