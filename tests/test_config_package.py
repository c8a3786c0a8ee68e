"""The config package's cross-section features: counting lines on the ground plane (``points_m``) and the
reconnect back-off shared by the live sources and MQTT."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import yaml

from edge.analytics.lines import LineCounter
from edge.config import (
    EdgeConfig,
    LineConfig,
    MqttConfig,
    ReconnectBackoff,
    RtspSourceConfig,
    UsbSourceConfig,
    parse_config,
)
from edge.errors import ConfigError
from edge.geometry import Calibration
from edge.pipeline import CameraPipeline
from edge.prepare import lines_in_pixels, prepare
from edge.types import ROAD_USER_CLASSES, Detections, Tracks
from tests.conftest import REPO

CAR = ROAD_USER_CLASSES.index("car")
#: line L2 of the highway-overpass config, drawn in pixels (its frame is 320x240)
L2_PX = ((20.0, 160.0), (320.0, 160.0))


def overpass() -> dict[str, Any]:
    """The shipped highway-overpass config (calibrated from 15 road markings) as parsed YAML."""
    data: dict[str, Any] = yaml.safe_load((REPO / "config" / "highway-overpass.yaml").read_text(encoding="utf-8"))
    return data


def with_lines(data: dict[str, Any], *lines: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(data)
    out["cameras"][0]["lines"] = list(lines)
    return out


def calibration(config: EdgeConfig) -> Calibration:
    cal = config.cameras[0].calibration
    assert cal is not None
    return Calibration.from_config(cal)


def to_ground(data: dict[str, Any], points_px: tuple[tuple[float, float], ...]) -> list[list[float]]:
    """Pixel points -> the calibration's ground frame (the frame of its reference points' ground_m)."""
    cal = calibration(parse_config(data))
    return [[float(x), float(y)] for x, y in cal.to_world(cal.image_to_ground(points_px))]


def track_at(tid: int, x: float, y: float) -> Tracks:
    """A 20x20 box whose bottom-centre is (x, y)."""
    return Tracks(np.array([[x - 10, y - 20, x + 10, y]], np.float32), np.array([0.9], np.float32),
                  np.array([CAR]), np.array([tid]), ())


def crossings(line: LineConfig) -> list[tuple[int, str]]:
    """(track, direction) of every crossing of tracks driving up and down the frame at several x."""
    counter = LineCounter((line,), hysteresis_px=4.0)
    out: list[tuple[int, str]] = []
    for tid, x in enumerate((30.0, 100.0, 180.0, 300.0)):
        for direction, ys in ((0, np.arange(230.0, 90.0, -7.0)), (100, np.arange(90.0, 230.0, 7.0))):
            for i, y in enumerate(ys):
                out += [(c.tracker_id, c.direction) for c in counter.update(track_at(tid + direction, x, y), i / 15)]
    return out


class NoDetector:
    input_size_px = (320, 240)

    def __call__(self, image: npt.NDArray[np.uint8]) -> Detections:
        return Detections.empty()


# ------------------------------------------------------------------------------------------ ground lines
def test_a_ground_line_is_placed_where_its_pixel_twin_is_and_counts_the_same() -> None:
    data = overpass()
    ground = to_ground(data, L2_PX)
    config = parse_config(with_lines(data, {"name": "L2", "points_m": ground}))
    assert config.cameras[0].lines[0].points_px is None
    placed = prepare(config, check_model=False, frame_sizes={"overpass": (320, 240)}).config.cameras[0].lines[0]
    assert placed.points_m is None and placed.points_px is not None
    np.testing.assert_allclose(placed.points_px, L2_PX, atol=0.5)
    twin = LineConfig(name="L2", points_px=L2_PX)
    assert crossings(placed) == crossings(twin)
    assert len(crossings(twin)) == 8  # every track counted once, up then down
    # the pipeline, built from the config as loaded, counts on the same pixel line
    pipeline = CameraPipeline(config, config.cameras[0], NoDetector())
    np.testing.assert_allclose(pipeline.counter.lines[0].points, L2_PX, atol=0.5)
    assert pipeline.counter.lines[0].directions == ("up", "down")


def test_a_ground_line_keeps_its_directions_and_its_other_lines() -> None:
    data = overpass()
    config = parse_config(with_lines(
        data, {"name": "px", "points_px": [[20, 120], [300, 120]]},
        {"name": "m", "points_m": to_ground(data, L2_PX), "directions": ["away", "towards"]}))
    lines = lines_in_pixels(config.cameras[0], calibration(config), "cameras[0]").lines
    assert lines[0] == config.cameras[0].lines[0]
    assert lines[1].directions == ("away", "towards")


def test_a_ground_line_without_a_calibration_is_refused_naming_the_line() -> None:
    data = {"device_id": "d", "cameras": [{"name": "c", "lines": [
        {"name": "ok", "points_px": [[0, 0], [10, 0]]}, {"name": "stop-north", "points_m": [[0, 0], [5, 0]]}]}]}
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    [error] = exc.value.errors
    assert error.startswith("cameras[0]: ")
    assert "lines[1].points_m" in error and "'stop-north'" in error and "calibration" in error


def test_an_unprojected_ground_line_is_never_counted_silently() -> None:
    line = LineConfig(name="g", points_m=((0.0, 0.0), (5.0, 0.0)))
    with pytest.raises(ConfigError, match="lines_in_pixels"):
        LineCounter((line,), hysteresis_px=4.0)


@pytest.mark.parametrize(("points", "given"), [
    ({"points_px": [[0, 0], [10, 0]], "points_m": [[0, 0], [5, 0]]}, "both"),
    ({}, "neither"),
])
def test_a_line_takes_exactly_one_of_points_px_and_points_m(points: dict[str, Any], given: str) -> None:
    data = with_lines(overpass(), {"name": "L2", **points})
    with pytest.raises(ConfigError) as exc:
        parse_config(data)
    [error] = exc.value.errors
    assert error.startswith("cameras[0].lines[0]: ")
    assert "'L2'" in error and "points_px" in error and "points_m" in error and given in error


def test_ground_points_are_checked_like_pixel_points() -> None:
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.lines\[0\]\.points_m: .*1 cm apart"):
        parse_config(with_lines(overpass(), {"name": "L2", "points_m": [[0, 0], [0, 0.001]]}))
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.lines\[0\]\.points_m: .*at least 2 items"):
        parse_config(with_lines(overpass(), {"name": "L2", "points_m": [[0, 0]]}))


def test_a_ground_point_behind_the_camera_is_refused_with_its_yaml_path() -> None:
    # the camera stands about 39 m before the ground origin, looking along +y: y = -80 m is behind it
    config = parse_config(with_lines(overpass(), {"name": "L2", "points_m": [[0, 10], [0, -80]]}))
    with pytest.raises(ConfigError) as exc:
        prepare(config, check_model=False)
    [error] = exc.value.errors
    assert error.startswith("cameras[0].lines[0].points_m[1]: ")
    assert "behind the camera" in error and "'L2'" in error


def test_a_ground_line_outside_the_frame_is_reported_by_its_points_m() -> None:
    # 40-60 m to the right of the lanes: in front of the camera, but far right of a 320 px frame
    config = parse_config(with_lines(overpass(), {"name": "far", "points_m": [[40, 5], [60, 5]]}))
    with pytest.raises(ConfigError) as exc:
        prepare(config, check_model=False, frame_sizes={"overpass": (320, 240)})
    assert any(e.startswith("cameras[0].lines[0].points_m: line 'far' (projected through the calibration) lies "
                            "outside the frame") for e in exc.value.errors), exc.value.errors


def test_shipped_pixel_configs_prepare_unchanged() -> None:
    config = parse_config(overpass())
    assert prepare(config, check_model=False).config == config


# ---------------------------------------------------------------------------------------- reconnect back-off
@pytest.mark.parametrize(("section", "where"), [
    ({"cameras": [{"name": "c", "source": {"kind": "rtsp", "url": "rtsp://cam/1",
                                           "reconnect_min_s": 20, "reconnect_max_s": 10}}]}, "cameras[0].source"),
    ({"cameras": [{"name": "c", "source": {"kind": "usb", "reconnect_min_s": 20, "reconnect_max_s": 10}}]},
     "cameras[0].source"),
    ({"cameras": [{"name": "c"}], "mqtt": {"url": "mqtt://127.0.0.1:1883", "reconnect_min_s": 20,
                                           "reconnect_max_s": 10}}, "mqtt"),
])
def test_one_backoff_check_refuses_min_over_max_everywhere(section: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"device_id": "d", **section})
    assert exc.value.errors == [
        f"{where}: Value error, reconnect_min_s (20.0) must not exceed reconnect_max_s (10.0)"
    ]


def test_each_backoff_keeps_its_defaults_and_bounds() -> None:
    assert all(issubclass(c, ReconnectBackoff) for c in (RtspSourceConfig, UsbSourceConfig, MqttConfig))
    rtsp, usb = RtspSourceConfig(url="rtsp://cam/1"), UsbSourceConfig()
    mqtt = MqttConfig(url="mqtt://127.0.0.1:1883")
    assert (rtsp.reconnect_min_s, rtsp.reconnect_max_s) == (usb.reconnect_min_s, usb.reconnect_max_s) == (1.0, 30.0)
    assert (mqtt.reconnect_min_s, mqtt.reconnect_max_s) == (1.0, 60.0)
    assert UsbSourceConfig(reconnect_min_s=900, reconnect_max_s=7200).reconnect_max_s == 7200  # no upper bound
    for field, value in (("reconnect_min_s", 601), ("reconnect_max_s", 3601)):  # MQTT's caps
        with pytest.raises(ConfigError, match=f"mqtt.{field}: Input should be less than or equal to"):
            parse_config({"device_id": "d", "cameras": [{"name": "c"}],
                          "mqtt": {"url": "mqtt://127.0.0.1:1883", field: value, "reconnect_max_s": 3600}
                          if field == "reconnect_min_s" else {"url": "mqtt://127.0.0.1:1883", field: value}})


def test_the_yaml_stays_flat() -> None:
    config: EdgeConfig = parse_config({"device_id": "d", "cameras": [{"name": "c", "source": {
        "kind": "rtsp", "url": "rtsp://cam/1", "reconnect_min_s": 2, "reconnect_max_s": 8}}]})
    source = config.cameras[0].source
    assert isinstance(source, RtspSourceConfig) and (source.reconnect_min_s, source.reconnect_max_s) == (2.0, 8.0)
