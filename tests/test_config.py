from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.config import load_config, parse_config
from edge.errors import ConfigError
from edge.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {"device_id": "cam-1", "cameras": [{"name": "north"}]}


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path: Path) -> None:
    config = load_config(path)
    assert config.cameras


def test_at_least_the_documented_configs_ship() -> None:
    names = {p.name for p in (REPO / "config").glob("*.yaml")}
    assert {"highway-overpass.yaml", "otc-intersection.yaml", "carpark.yaml"} <= names


def test_unknown_key_is_refused_with_its_yaml_path() -> None:
    data = {**MINIMAL, "cameras": [{"name": "north", "lines": [{"name": "L", "points_px": [[0, 0], [9, 0]],
                                                                 "colour": "red"}]}]}
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert "cameras[0].lines[0].colour" in str(exc.value)


def test_every_error_is_listed() -> None:
    data = {"device_id": "bad id!", "windows": {"window_s": 0}, "cameras": [{"name": "a"}, {"name": "a"}]}
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    paths = [e.split(":")[0] for e in exc.value.errors]
    assert "device_id" in paths
    assert "windows.window_s" in paths
    assert "cameras" in paths  # duplicate camera names


def test_geometry_and_thresholds_are_checked() -> None:
    bad_line = {**MINIMAL, "cameras": [{"name": "n", "lines": [{"name": "L", "points_px": [[5, 5], [5, 5]]}]}]}
    with pytest.raises(ConfigError, match="at least 1 px apart"):
        parse_config(bad_line)
    bad_tracker = {**MINIMAL, "tracker": {"track_activation_threshold": 0.2, "low_score_threshold": 0.4}}
    with pytest.raises(ConfigError, match="low_score_threshold"):
        parse_config(bad_tracker)
    bad_size = {**MINIMAL, "detector": {"input_size_px": [640, 380]}}
    with pytest.raises(ConfigError, match="multiples of 32"):
        parse_config(bad_size)
    naive_origin = {**MINIMAL, "windows": {"origin": "2024-01-01T00:00:00"}}
    with pytest.raises(ConfigError, match="time zone"):
        parse_config(naive_origin)


def test_source_union_reports_the_right_branch() -> None:
    data = {**MINIMAL, "cameras": [{"name": "n", "source": {"kind": "rtsp", "url": "no-scheme"}}]}
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert any(e.startswith("cameras[0].source.url") for e in exc.value.errors)


def test_validate_config_cli_exit_codes(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(MINIMAL))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**MINIMAL, "tracker": {"lost_track_buffer_frames": -1}, "extra": 1}))
    ok = subprocess.run([sys.executable, "-m", "edge.cli", "validate-config", str(good)],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    fail = subprocess.run([sys.executable, "-m", "edge.cli", "validate-config", str(bad)],
                          capture_output=True, text=True, check=False)
    assert fail.returncode == 1
    assert "tracker.lost_track_buffer_frames" in fail.stderr
    assert "extra" in fail.stderr


def test_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("device_id: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_backoff_bounds_must_be_ordered() -> None:
    data = {**MINIMAL, "cameras": [{"name": "n", "source": {"kind": "usb", "reconnect_min_s": 50}}]}
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert exc.value.errors == [
        "cameras[0].source: Value error, reconnect_min_s (50.0) must not exceed reconnect_max_s (30.0)"
    ]


def test_a_camera_whose_records_could_exceed_4_kb_is_refused_at_start_up() -> None:
    """Sized from the analytics the camera would run (edge.analytics.registry), so by edge.prepare."""
    lines = [{"name": f"line-{i:02d}-long-name", "points_px": [[0, 10 * i], [100, 10 * i + 1]]} for i in range(20)]
    config = parse_config({**MINIMAL, "cameras": [{"name": "n", "lines": lines}]})
    with pytest.raises(ConfigError, match="over the 4096-byte payload limit") as exc:
        prepare(config, check_model=False)
    assert exc.value.errors[0].startswith("cameras[0]: 20 lines and 0 zones")


@pytest.mark.parametrize("section", ["prefix", "direction", "device_id", "camera"])
def test_a_trailing_newline_never_passes_a_name_check(section: str) -> None:
    """Python's ``$`` matches before a final newline: a prefix 'traffic/v1\\n' passed, and the device could
    then never publish where the dashboards listen."""
    data: dict[str, Any] = {"device_id": "d", "cameras": [{"name": "c"}]}
    if section == "prefix":
        data["mqtt"] = {"url": "mqtt://localhost:1883", "prefix": "traffic/v1\n"}
    elif section == "direction":
        data["cameras"][0]["lines"] = [{"name": "L", "points_px": [[0, 0], [10, 0]], "directions": ["in\n", "out"]}]
    elif section == "device_id":
        data["device_id"] = "d\n"
    else:
        data["cameras"][0]["name"] = "c\n"
    with pytest.raises(ConfigError):
        parse_config(data)


def test_a_typo_names_the_nearest_valid_key_and_the_file_and_line_of_bad_yaml(tmp_path: Path) -> None:
    """Issue 18 item 11: "did you mean points_px?", and YAML errors name the file, not <unicode string>."""
    data = {**MINIMAL, "cameras": [{"name": "n", "source": {"kind": "usb", "device_indx": 1},
                                    "lines": [{"name": "L", "point_px": [[0, 0], [9, 9]]}]}]}
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    assert "cameras[0].lines[0].point_px: unknown key; did you mean points_px?" in exc.value.errors
    assert "cameras[0].source.device_indx: unknown key; did you mean device_index?" in exc.value.errors
    broken = tmp_path / "broken.yaml"
    broken.write_text("device_id: x\ncameras: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml, line 3, column 1: not valid YAML") as bad:
        load_config(broken)
    assert "<unicode string>" not in str(bad.value)


def test_binary_and_deeply_nested_files_are_refused_cleanly(tmp_path: Path) -> None:
    """Issue 14 item 14: a model file given as the config, or YAML nested 5,000 deep, is a clean error on the
    command line (exit 1, no traceback)."""
    binary = tmp_path / "model.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    for path, says in ((binary, "not a text file"), (deep, "nested too deeply")):
        run = subprocess.run([sys.executable, "-m", "edge.cli", "validate-config", str(path)],
                             capture_output=True, text=True, check=False)
        assert run.returncode == 1 and says in run.stderr and "Traceback" not in run.stderr, run.stderr
