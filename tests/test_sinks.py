"""Record sinks: JSONL files renamed into place only on a successful close, routing, fan-out."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.payloads import WindowSpeeds, window_msg_id
from edge.sinks import FanOutSink, JsonlSink, RecordCounts, send
from tests.mqtt_broker import DEVICE, make_metrics


def speeds_record(window_start: str) -> WindowSpeeds:
    return WindowSpeeds(
        msg_id=window_msg_id(DEVICE, "north", window_start, "speeds"), device=DEVICE, camera="north",
        window_start=window_start, window_s=1, partial=False, speed_limit_kmh=50.0,
        speeds={"line-0": {"in": {"car": (3, 1, 42.0, 41.5, 50.2, 1)}}},
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
    assert (tmp_path / "metrics.jsonl").read_text() == m.model_dump_json() + "\n"
    assert (tmp_path / "speeds.jsonl").read_text() == sp.model_dump_json() + "\n"
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
