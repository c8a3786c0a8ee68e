"""The city archive: contract validation, quarantine, idempotent upserts, and imports of real replay output."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from edge.analytics.speeds import speed_stats
from edge.city.config import DEFAULT_SCHEMAS_DIR, load_archive_config
from edge.city.importer import import_paths, jsonl_files
from edge.city.records import Checker, Invalid, Valid
from edge.city.store import Archive, observed_s, unpack
from edge.city.synth import DEFAULT_START, Phase, SiteModel, generate, window_speed_stats
from edge.cli import main
from edge.errors import ConfigError
from tests.conftest import REPO, shared_path

OTC = "footage/otc-intersection/Testvideo_Cars-{}_FR20_2020-01-01_00-00-00.mp4"


@pytest.fixture(scope="module")
def checker() -> Checker:
    return Checker(DEFAULT_SCHEMAS_DIR)


@pytest.fixture(scope="module")
def sample() -> list[dict[str, Any]]:
    """A few hours of generated records: metrics, speeds and events, as JSON objects."""
    data = generate(SiteModel(window_s=900, conflicts_per_1000=10), [Phase(DEFAULT_START, 0.25)], seed=3)
    return [json.loads(r.to_json()) for r in data.records()]


@pytest.fixture(scope="module")
def replays(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real replays of the shared intersection clips, one a week after the other (before / after)."""
    out = tmp_path_factory.mktemp("replays")
    for clip, start, name in (("Cyclist", "2020-01-01T00:00:00Z", "before"),
                              ("Truck", "2020-01-08T00:00:00Z", "after")):
        video = shared_path(OTC.format(clip))
        assert main(["replay", str(video), "-c", str(REPO / "config" / "otc-intersection.yaml"), "-o",
                     str(out / name), "-q", "--start-time", start,
                     "--model-dir", str(shared_path("models"))]) == 0
    return out


def _mutations(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Invalid variants of a valid record: an extra (per-object) field, a wrong type, a missing key, a bad enum."""
    out = [{**record, "track_id": 17}, {**record, "schema_version": 3},
           {k: v for k, v in record.items() if k != "device"}, {**record, "msg_id": 5}]
    if "counts" in record:
        line = next(iter(record["counts"]))
        direction = next(iter(record["counts"][line]))
        out.append({**record, "counts": {line: {direction: {"tank": 1}}}})
    if "severity" in record:
        out.append({**record, "severity": "fatal"})
    return out


def test_the_fast_validator_agrees_with_the_reference_one(checker: Checker, sample: list[dict[str, Any]]) -> None:
    """jsonschema-rs (the archive's) and pure-Python jsonschema (the contract test's) judge alike."""
    names = {"metrics": "window_metrics", "speeds": "window_speeds", "event": "near_miss_event"}
    reference = {k: Draft202012Validator(json.loads((DEFAULT_SCHEMAS_DIR / f"{n}.schema.json").read_text()))
                 for k, n in names.items()}
    picked = [sample[0], *[r for r in sample if "line" in r][:2], *[r for r in sample if "conflict_type" in r][:2]]
    assert len(picked) == 5
    for record in picked:
        result = checker.check(json.dumps(record))
        assert isinstance(result, Valid)
        assert reference[result.kind].is_valid(record)
        for bad in _mutations(record):
            assert isinstance(checker.check(json.dumps(bad), topic=f"traffic/v1/{record['device']}/"
                                            f"{record['camera']}/{_leaf(result.kind)}"), Invalid), bad
            assert not reference[result.kind].is_valid(bad)


def _leaf(kind: str) -> str:
    return {"metrics": "metrics", "speeds": "speeds", "event": "events"}[kind]


def test_invalid_payloads_say_why(checker: Checker, sample: list[dict[str, Any]]) -> None:
    record = sample[0]
    cases = {
        b"{not json": "not JSON",
        b"[1, 2]": "not a JSON object",
        b"x" * 70_000: "over the 65536-byte limit",
        json.dumps({**record, "track_id": 1}).encode(): "track_id",
        json.dumps(record).encode(): "a device may publish only its own records",
    }
    for payload, reason in cases.items():
        topic = "traffic/v1/other-device/main/metrics"
        result = checker.check(payload, topic=topic)
        assert isinstance(result, Invalid) and reason in result.reason, (reason, result)
    assert isinstance(checker.check(json.dumps(record), topic="traffic/v1/synth-0001/main/metrics"), Valid)
    assert isinstance(checker.check(json.dumps(record), topic="traffic/v1/synth-0001/main/status"), Invalid)


def test_upserts_never_double_count(tmp_path: Path, checker: Checker, sample: list[dict[str, Any]]) -> None:
    archive = Archive(tmp_path / "a.sqlite3")
    metrics = next(r for r in sample if "counts" in r)
    valid = checker.check(json.dumps(metrics))
    assert isinstance(valid, Valid)
    assert archive.store(valid, "t") == "inserted"
    assert archive.store(valid, "t") == "duplicate"
    total = sum(n for per in metrics["counts"].values() for d in per.values() for n in d.values())
    assert archive.query("SELECT SUM(count) FROM line_counts")[0][0] == total

    changed = json.loads(json.dumps(metrics))  # a re-run replay with other counts: replaces, never adds
    line = next(iter(changed["counts"]))
    direction = next(iter(changed["counts"][line]))
    changed["counts"][line][direction]["car"] += 5
    again = checker.check(json.dumps(changed))
    assert isinstance(again, Valid)
    assert archive.store(again, "t") == "updated"
    assert archive.query("SELECT SUM(count) FROM line_counts")[0][0] == total + 5
    assert archive.query("SELECT COUNT(*) FROM windows")[0][0] == 1

    stolen = {**metrics, "window_start": "2024-04-01T23:45:00Z"}  # another key with an existing msg_id
    result = checker.check(json.dumps(stolen))
    assert isinstance(result, Valid)
    assert archive.store(result, "t") == "quarantined"
    counts = archive.counts()
    assert (counts.windows, counts.quarantined) == (1, 1)
    assert counts.outcomes["metrics"] == {"inserted": 1, "duplicate": 1, "updated": 1, "quarantined": 1}
    assert unpack(archive.query("SELECT payload FROM windows")[0][0]) == again.record.to_json()
    archive.close()


def test_import_of_real_replays_is_idempotent(tmp_path: Path, replays: Path, checker: Checker) -> None:
    files = jsonl_files([replays])
    assert sorted(f.name for f in files) == sorted(["events.jsonl", "metrics.jsonl", "speeds.jsonl"] * 2)
    with Archive(tmp_path / "a.sqlite3") as archive:
        first = import_paths(archive, checker, [replays])
        lines = sum(len(f.read_text().splitlines()) for f in files)
        assert first.outcomes["inserted"] == lines and first.outcomes["quarantined"] == 0
        second = import_paths(archive, checker, [replays])
        assert second.outcomes["duplicate"] == lines and second.outcomes["inserted"] == 0
        stored = {unpack(p) for (p,) in archive.query("SELECT payload FROM windows")}
        published = set((replays / "before" / "metrics.jsonl").read_text().splitlines())
        assert published <= stored
        ((seconds,),) = archive.query("SELECT observed_s FROM windows WHERE window_start = '2020-01-01T00:00:00Z'")
        assert seconds == pytest.approx(3.0)  # a 3 s clip: a partial window of 60 frames at 20 fps
        assert next(iter(archive.cameras()))[:2] == ("replay-otc", "junction")


def test_a_batch_folder_imports_its_merged_records_not_its_jobs(tmp_path: Path, sample: list[dict[str, Any]]) -> None:
    merged = "".join(json.dumps(r) + "\n" for r in sample if "counts" in r)
    for folder in (tmp_path / "batch", tmp_path / "batch" / "jobs" / "a1", tmp_path / "batch" / "jobs" / ".tmp-a2"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.jsonl").write_text(merged)
    assert jsonl_files([tmp_path / "batch"]) == [tmp_path / "batch" / "metrics.jsonl"]
    assert jsonl_files([tmp_path]) == [tmp_path / "batch" / "metrics.jsonl"]
    assert jsonl_files([tmp_path / "batch" / "jobs"]) == [tmp_path / "batch" / "jobs" / "a1" / "metrics.jsonl"]


def test_a_quarantined_line_is_kept_with_its_reason(tmp_path: Path, checker: Checker,
                                                    sample: list[dict[str, Any]]) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    good = json.dumps(sample[0])
    (folder / "metrics.jsonl").write_text(good + "\n\n" + json.dumps({**sample[0], "plate": "AB-123"}) + "\n{trunc")
    with Archive(tmp_path / "a.sqlite3") as archive:
        summary = import_paths(archive, checker, [folder])
        assert dict(summary.outcomes) == {"inserted": 1, "quarantined": 2}
        rows = archive.query("SELECT source, reason, size_bytes FROM quarantine ORDER BY id")
    assert rows[0][0].endswith("metrics.jsonl:3") and "plate" in rows[0][1]
    assert rows[1][0].endswith("metrics.jsonl:4") and "not JSON" in rows[1][1] and rows[1][2] == 6


def test_generated_speed_statistics_are_the_devices() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 4, 7, 30):
        v = rng.normal(40, 8, n)
        ours = window_speed_stats(v, 50.0, 2)
        st = speed_stats(list(v), 50.0, 2)
        assert ours["count"] == st.count and ours["over_limit"] == st.over_limit
        if n >= 3:
            assert (ours["mean_kmh"], ours["p50_kmh"], ours["p85_kmh"]) == (st.mean_kmh, st.p50_kmh, st.p85_kmh)
        else:
            assert "p85_kmh" not in ours


def test_observed_time_of_a_partial_window(sample: list[dict[str, Any]]) -> None:
    from edge.payloads import WindowMetrics

    m = WindowMetrics.model_validate(next(r for r in sample if "counts" in r))
    assert observed_s(m) == 900.0
    cut = m.model_copy(update={"partial": True, "health": m.health.model_copy(update={"frames": 50, "fps": 10.0})})
    assert observed_s(cut) == 5.0


def test_archive_config_paths_and_errors(tmp_path: Path) -> None:
    (tmp_path / "archive.yaml").write_text(
        "database: data/archive.sqlite3\ntimezone: Europe/Berlin\n"
        "sites:\n  - {name: main-st, device: cam-0001, camera: north, config: sites/cam.yaml}\n")
    config = load_archive_config(tmp_path / "archive.yaml")
    assert config.database == tmp_path / "data" / "archive.sqlite3"
    site = config.site("main-st")
    assert site is not None and site.config == tmp_path / "sites" / "cam.yaml"
    (tmp_path / "bad.yaml").write_text("database: a.sqlite3\ntimezone: Mars/Olympus\nsurprise: 1\n")
    with pytest.raises(ConfigError) as err:
        load_archive_config(tmp_path / "bad.yaml")
    assert "unknown time zone" in str(err.value) and "surprise" in str(err.value)


def test_archive_cli_imports_and_reports_status(tmp_path: Path, replays: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "a.sqlite3"
    assert main(["archive", "--db", str(db), "--import", str(replays)]) == 0
    assert main(["archive", "--db", str(db), "--status"]) == 0
    out = capsys.readouterr().out
    assert "imported 6 file(s)" in out and "replay-otc/junction: 2 windows" in out
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_report_from_the_replays_of_the_shared_clips(tmp_path: Path, replays: Path) -> None:
    """Three seconds of video on each side: the report is built, names the turns from the calibrated zones, and
    claims no change."""
    db = tmp_path / "a.sqlite3"
    assert main(["archive", "--db", str(db), "--import", str(replays)]) == 0
    out = tmp_path / "report"
    assert main(["report", "--db", str(db), "--site-config", str(REPO / "config" / "otc-intersection.yaml"),
                 "--before", "2020-01-01/2020-01-07", "--after", "2020-01-08/2020-01-14", "-o", str(out)]) == 0
    html = (out / "report.html").read_text()
    assert "Little observation: 3.0 s before and 3.0 s after" in html
    with (out / "before_after.csv").open() as fh:
        verdicts = {r["verdict"] for r in csv.DictReader(fh)}
    assert verdicts <= {"not enough data", "no evidence of a change"}
    with (out / "volumes_15min.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and {r["approach"] for r in rows} <= {"Nord", "Ost", "Sued", "West"}
    assert {r["movement"] for r in rows} <= {"left", "through", "right", "u_turn"}
    assert all(r["bin_start"] in ("2020-01-01T00:00:00+00:00", "2020-01-08T00:00:00+00:00") for r in rows)
    assert {r["observed_s"] for r in rows} == {"3.0"}
