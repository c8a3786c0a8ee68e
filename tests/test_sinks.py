"""Record sinks: JSONL files renamed into place only on a successful close, routing, fan-out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.payloads import SpeedStats, WindowSpeeds, window_msg_id
from edge.sinks import FanOutSink, JsonlSink, MqttSink, RecordCounts, send
from tests.mqtt_broker import DEVICE, make_metrics


def speeds_record(window_start: str) -> WindowSpeeds:
    return WindowSpeeds(
        msg_id=window_msg_id(DEVICE, "north", window_start, "speeds/line-0"), device=DEVICE, camera="north",
        window_start=window_start, window_s=1, partial=False, line="line-0", speed_limit_kmh=50.0,
        speeds={"in": {"car": SpeedStats(count=3, unmeasured=1, mean_kmh=42.0, p50_kmh=41.5, p85_kmh=50.2,
                                         over_limit=1)}},
    )


def test_jsonl_files_appear_only_when_the_sink_is_closed(tmp_path: Path) -> None:
    m = make_metrics(1)
    sp = speeds_record(m.window_start)
    sink = JsonlSink(tmp_path, speeds=True)
    send(sink, [], [m, sp])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".events.jsonl.partial", ".metrics.jsonl.partial", ".speeds.jsonl.partial"]
    sink.close()
    sink.discard()  # after close: nothing left to remove
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.jsonl", "metrics.jsonl", "speeds.jsonl"]
    assert (tmp_path / "metrics.jsonl").read_text() == m.to_json() + "\n"
    assert (tmp_path / "speeds.jsonl").read_text() == sp.to_json() + "\n"
    assert (tmp_path / "events.jsonl").read_text() == ""


def test_a_discarded_jsonl_sink_leaves_nothing_and_keeps_older_files(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("earlier run\n")
    sink = JsonlSink(tmp_path, speeds=False)
    sink.window(make_metrics(1))
    sink.discard()
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]
    assert (tmp_path / "metrics.jsonl").read_text() == "earlier run\n"


def test_speeds_into_a_sink_without_speeds_is_an_error(tmp_path: Path) -> None:
    sink = JsonlSink(tmp_path, speeds=False)
    with pytest.raises(ValueError, match="speeds=True"):
        sink.speeds(speeds_record(make_metrics(1).window_start))
    sink.discard()


def test_send_routes_each_record_to_its_method_and_fans_out() -> None:
    a, b = RecordCounts(), RecordCounts()
    m = make_metrics(1)
    send(FanOutSink(a, b), [], [m, speeds_record(m.window_start), make_metrics(2)])
    assert (a.windows, a.speeds_records) == (b.windows, b.speeds_records) == (2, 1)


def test_one_serialisation_in_the_files_and_on_mqtt(tmp_path: Path) -> None:
    """A record without movements or conflicts (not configured) leaves those keys out in metrics.jsonl as on
    MQTT: the same bytes in both, no null anywhere (issue 18 item 8)."""
    from edge.config import MqttConfig
    from edge.publish.mqtt import MqttPublisher

    m = make_metrics(3)
    assert m.movements is None and m.conflicts is None
    sink = JsonlSink(tmp_path, speeds=False)
    publisher = MqttPublisher(MqttConfig(host="127.0.0.1", outbox_path=tmp_path / "outbox.sqlite3"), DEVICE)
    send(FanOutSink(sink, MqttSink(publisher)), [], [m])
    sink.close()
    line = (tmp_path / "metrics.jsonl").read_text().rstrip("\n")
    (row,) = publisher.outbox.take(10)
    publisher.outbox.close()
    assert row.payload.decode() == line
    assert "null" not in line and "movements" not in json.loads(line) and "conflicts" not in json.loads(line)
