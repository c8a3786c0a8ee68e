"""Analytics as plug-ins (``edge.analytics.base``, ``edge.analytics.registry``): what a camera config calls for
is what gets built, and an analytic added to the registry sees every frame and fills its record field."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from edge.analytics.base import AnalyticsFrame, Fragment
from edge.analytics.conflicts import NearMiss
from edge.analytics.kinematics import GroundKinematics
from edge.analytics.plugins import Conflicts, LineCounts, Movements, Speeds
from edge.analytics.registry import ANALYTICS, AnalyticsSetup, build_analytics
from edge.config import parse_config
from edge.geometry import Calibration
from edge.payloads import WindowMetrics, WindowSpeeds
from edge.pipeline import CameraPipeline
from edge.types import ROAD_USER_CLASSES, Detections, Frame

CAR = ROAD_USER_CLASSES.index("car")
SQUARE = [[0, 0], [100, 0], [100, 100], [0, 100]]
ZONES = {"zones": [{"name": "W", "points_px": SQUARE}, {"name": "E", "points_px": [[x + 500, y] for x, y in SQUARE]}]}
CALIBRATION = {"points": [{"image_px": p, "ground_m": [p[0] / 10, p[1] / 10]}
                          for p in ([0, 0], [640, 0], [640, 480], [0, 480])]}
LINE = {"name": "L", "points_px": [[320, 0], [320, 480]]}


def config(**camera: Any) -> Any:
    return parse_config({"device_id": "d", "windows": {"window_s": 60, "origin": "2024-05-01T07:00:00Z"},
                         "cameras": [{"name": "c", "lines": [LINE], **camera}]})


class Probe:
    """A test analytic: remembers what it was handed and fills ``movements`` with its frame count."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.crossings = 0
        self.forgotten: list[int] = []
        self.flushed: list[float] = []
        self._frames = 0

    def update(self, frame: AnalyticsFrame) -> Sequence[NearMiss]:
        assert frame.ground is None  # an uncalibrated camera
        self.times.append(frame.t_s)
        self.crossings += len(frame.crossings)
        self._frames += 1
        return ()

    def forget(self, ended_ids: tuple[int, ...]) -> None:
        self.forgotten.extend(ended_ids)

    def close(self) -> Fragment:
        frames, self._frames = self._frames, 0
        return Fragment(metrics={"movements": {"probe->frames": {"car": frames}}})

    def flush(self, t_s: float) -> Sequence[NearMiss]:
        self.flushed.append(t_s)
        return ()

    def worst_case(self) -> Fragment:
        return Fragment(metrics={"movements": {"probe->frames": {"car": 99_999}}})


class OneCar:
    """A detector that sees one car drive right across the frame for the first ``frames`` frames."""

    input_size_px = (640, 480)

    def __init__(self, frames: int) -> None:
        self.frames, self.calls = frames, 0

    def __call__(self, image: npt.NDArray[np.uint8]) -> Detections:
        k, self.calls = self.calls, self.calls + 1
        if k >= self.frames:
            return Detections.empty()
        x = 10.0 + 3.0 * k
        return Detections.from_lists([[x, 200.0, x + 40.0, 240.0]], [0.9], [CAR])


def test_an_analytic_added_to_the_registry_sees_every_frame_and_fills_its_field_of_each_window() -> None:
    probes: list[Probe] = []

    def probe(setup: AnalyticsSetup) -> Probe:
        probes.append(Probe())
        return probes[-1]

    cfg = config()
    pipeline = CameraPipeline(cfg, cfg.cameras[0], OneCar(frames=200), registry=(*ANALYTICS, probe))
    image = np.zeros((480, 640, 3), np.uint8)
    records: list[WindowMetrics | WindowSpeeds] = []
    ended: list[int] = []
    times = [i / 2 for i in range(300)]  # 150 s at 2 fps: two full windows and a partial one
    crossings = 0
    for i, t in enumerate(times):
        result = pipeline.analyse(pipeline.detect(Frame(image, i, t)))
        records += result.windows
        ended += result.tracks.ended_ids
        crossings += len(result.crossings)
    events, last = pipeline.finish()
    records += last

    (p,) = probes
    assert p.times == times  # every frame, in order, once
    assert p.crossings == crossings == 1  # the car crossed the line once, and the probe saw that frame's crossing
    assert p.forgotten == ended != []  # told of the car's track when it ended
    assert p.flushed == [times[-1]] and events == []
    metrics = [r for r in records if isinstance(r, WindowMetrics)]
    assert [m.partial for m in metrics] == [False, False, True]
    assert [m.movements for m in metrics] == [{"probe->frames": {"car": m.health.frames}} for m in metrics]
    assert [m.health.frames for m in metrics] == [120, 120, 60]
    assert sum(n["car"] for m in metrics for n in m.counts["L"].values()) == 1  # the built-in counts still run


def test_two_analytics_filling_one_field_are_refused_when_the_pipeline_is_built() -> None:
    cfg = config(movements=ZONES)  # the built-in movements analytic owns `movements`
    with pytest.raises(ValueError, match="movements"):
        CameraPipeline(cfg, cfg.cameras[0], OneCar(0), registry=(*ANALYTICS, lambda setup: Probe()))


@pytest.mark.parametrize(("camera", "built"), [
    ({}, [LineCounts]),
    ({"movements": ZONES}, [LineCounts, Movements]),
    ({"calibration": CALIBRATION}, [LineCounts, Speeds, Conflicts]),
    ({"calibration": CALIBRATION, "movements": ZONES}, [LineCounts, Speeds, Movements, Conflicts]),
])
def test_the_registry_builds_what_the_camera_config_calls_for(camera: dict[str, Any], built: list[type]) -> None:
    cam = config(**camera).cameras[0]
    kinematics = (GroundKinematics(cam.kinematics, Calibration.from_config(cam.calibration))
                  if cam.calibration is not None else None)
    assert [type(a) for a in build_analytics(AnalyticsSetup.from_camera(cam, kinematics))] == built
    pipeline = CameraPipeline(config(**camera), cam, OneCar(0))
    assert [type(a) for a in pipeline.analytics] == built
