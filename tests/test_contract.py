"""The committed MQTT contract (contract/) is what the payload models say, closed, and small."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
import yaml
from jsonschema import Draft202012Validator

from edge.analytics.surrogate import ConflictType
from edge.config import parse_config
from edge.errors import ConfigError
from edge.payloads import ConflictKind, WindowMetrics
from edge.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import gen_contract  # noqa: E402  (tools/ is not a package)

MAX_PAYLOAD_BYTES = 4096


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def test_committed_contract_matches_the_models() -> None:
    assert gen_contract.stale() == [], "contract/ is out of date: run `python tools/gen_contract.py` and commit it"


@pytest.mark.parametrize("name", sorted(gen_contract.PAYLOADS))
def test_schema_is_closed_and_the_maximal_example_is_valid(name: str) -> None:
    schema = json.loads((gen_contract.CONTRACT_DIR / "schemas" / f"{name}.schema.json").read_text())
    Draft202012Validator.check_schema(schema)
    objects = list(_objects(schema))
    assert objects and all(o["additionalProperties"] is False for o in objects)
    document = json.loads(gen_contract.wire_bytes(gen_contract.EXAMPLES[name]()))
    validator = Draft202012Validator(schema)
    validator.validate(document)
    # privacy: a per-object field cannot slip in
    assert not validator.is_valid({**document, "track_id": 17})
    assert document["schema_version"] == 2 and "msg_id" in document and "device" in document


@pytest.mark.parametrize("name", sorted(gen_contract.PAYLOADS))
def test_maximal_example_is_under_4_kb(name: str) -> None:
    size = len(gen_contract.wire_bytes(gen_contract.EXAMPLES[name]()))
    assert size < MAX_PAYLOAD_BYTES, f"{name}: {size} bytes"


def test_window_counts_of_8_lines_2_directions_6_classes_are_under_4_kb() -> None:
    metrics = WindowMetrics.model_validate(gen_contract.window_counts_data())
    assert len(metrics.counts) == 8
    for dirs in metrics.counts.values():
        assert len(dirs) == 2 and all(len(classes) == 6 for classes in dirs.values())
    assert len(gen_contract.wire_bytes(metrics)) < MAX_PAYLOAD_BYTES


def test_asyncapi_document_names_every_topic_and_payload() -> None:
    doc = yaml.safe_load((gen_contract.CONTRACT_DIR / "asyncapi.yaml").read_text())
    assert doc["asyncapi"].startswith("3.")
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {
        "traffic/v1/{device}/status", "traffic/v1/{device}/health", "traffic/v1/{device}/{camera}/metrics",
        "traffic/v1/{device}/{camera}/speeds", "traffic/v1/{device}/{camera}/events",
    }
    refs = {m["payload"]["$ref"] for m in doc["components"]["messages"].values()}
    for ref in refs:
        assert (gen_contract.CONTRACT_DIR / ref).is_file(), ref
    retained = {op["channel"]["$ref"]: op["bindings"]["mqtt"]["retain"] for op in doc["operations"].values()}
    assert retained == {"#/channels/status": True, "#/channels/health": False, "#/channels/metrics": False,
                        "#/channels/speeds": False, "#/channels/events": False}
    assert all(op["bindings"]["mqtt"]["qos"] == 1 for op in doc["operations"].values())


def test_conflict_kinds_follow_the_surrogate_module() -> None:
    assert set(get_args(ConflictKind)) == set(get_args(ConflictType))


def _camera(n_lines: int) -> dict[str, object]:
    lines = [{"name": name, "points_px": [[0, 10 * i], [100, 10 * i + 1]], "directions": list(gen_contract.DIRECTIONS)}
             for i, name in enumerate(gen_contract.LINES[:n_lines])]
    square = [[0, 0], [10, 0], [10, 10], [0, 10]]
    zones = [{"name": z, "points_px": [[x + 20 * k, y] for x, y in square]}
             for k, z in enumerate(("north", "east", "south", "west"))]
    points = [{"image_px": p, "ground_m": [p[0] / 10, p[1] / 10]} for p in ([0, 0], [100, 0], [100, 100], [0, 100])]
    return {"name": "c" * 64, "lines": lines, "movements": {"zones": zones}, "calibration": {"points": points}}


def test_the_largest_accepted_camera_is_the_contract_example_and_one_more_line_is_refused() -> None:
    """Payload size is guaranteed by refusing, at start-up, any camera whose records could exceed 4 KB."""
    n = gen_contract.MAX_CALIBRATED_LINES
    prepare(parse_config({"device_id": "cam-" + "d" * 60, "cameras": [_camera(n)]}), check_model=False)
    with pytest.raises(ConfigError, match="over the 4096-byte payload limit"):
        prepare(parse_config({"device_id": "cam-" + "d" * 60, "cameras": [_camera(n + 1)]}), check_model=False)
