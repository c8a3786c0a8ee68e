"""A site's geometry on the ground plane, from the device's own edge config: lines, zones, turn types.

The conflict map is drawn from this geometry and the events' ``location_m`` (metres in the camera's local
ground frame, the frame of :class:`edge.geometry.Calibration`), never from a camera frame: no image leaves
the device (P2, P4). Zones and pixel lines are projected through the calibration's homography; lines given
in metres (``points_m``) are taken as they are, shifted into the local frame.

Turn types: each zone's ground centroid stands for its approach, the mean of the centroids for the junction
centre (ground frame x east, y north, counter-clockwise positive). Zones cut by the image edge are projected
far and lopsided, so their bearings from the centre are rough while their order around it is right; a
four-leg junction is therefore named by that order: from approach A, the leg opposite is *through*, the next
leg counter-clockwise *right*, the next clockwise *left* (traffic drives on the right or the left alike: this
is the direction of the turn). Other junctions use the signed angle from the heading in (A's centroid to the
centre) to the heading out (centre to B's): within 45 degrees *through*, past 45 to the left *left*, to the
right *right*, past 135 *u_turn*. A = B is a *u_turn*. A camera without calibration or zones keeps the zones'
names (``A->B``) and gets no map background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from edge.config import load_config
from edge.config.camera import CameraConfig
from edge.errors import ConfigError
from edge.geometry import Calibration

Polyline = list[tuple[float, float]]


@dataclass(frozen=True)
class SiteGeometry:
    """Ground-plane geometry in the camera's local frame, metres."""

    lines: dict[str, Polyline] = field(default_factory=dict)
    zones: dict[str, Polyline] = field(default_factory=dict)
    speed_limit_kmh: float | None = None

    @property
    def calibrated(self) -> bool:
        return bool(self.lines or self.zones)

    @cached_property
    def centroids(self) -> dict[str, tuple[float, float]]:
        return {name: (float(np.mean([p[0] for p in poly])), float(np.mean([p[1] for p in poly])))
                for name, poly in self.zones.items() if poly}

    def turn(self, origin: str, destination: str) -> str | None:
        """left / through / right / u_turn for a movement between two zones; None without geometry."""
        c = self.centroids
        if origin == destination and origin in c:
            return "u_turn"
        if origin not in c or destination not in c or len(c) < 2:
            return None
        cx = float(np.mean([p[0] for p in c.values()]))
        cy = float(np.mean([p[1] for p in c.values()]))
        if len(c) == 4:
            order = sorted(c, key=lambda z: math.atan2(c[z][1] - cy, c[z][0] - cx))  # counter-clockwise
            step = (order.index(destination) - order.index(origin)) % 4
            return {1: "right", 2: "through", 3: "left"}[step]
        entry = math.atan2(cy - c[origin][1], cx - c[origin][0])
        leave = math.atan2(c[destination][1] - cy, c[destination][0] - cx)
        angle = math.degrees((leave - entry + math.pi) % (2 * math.pi) - math.pi)
        if abs(angle) > 135:
            return "u_turn"
        if abs(angle) <= 45:
            return "through"
        return "left" if angle > 0 else "right"


def _finite(points: np.ndarray) -> Polyline:
    return [(float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y)]


def camera_geometry(camera: CameraConfig) -> SiteGeometry:
    """Project a camera's lines and zones onto its calibrated ground plane (empty without a calibration)."""
    limit = camera.speeds.speed_limit_kmh
    if camera.calibration is None:
        return SiteGeometry(speed_limit_kmh=limit)
    cal = Calibration.from_config(camera.calibration, where=f"cameras.{camera.name}.calibration")
    lines: dict[str, Polyline] = {}
    for line in camera.lines:
        if line.points_m is not None:
            lines[line.name] = _finite(cal.from_world(np.asarray(line.points_m, dtype=np.float64)))
        elif line.points_px is not None:
            lines[line.name] = _finite(cal.image_to_ground(np.asarray(line.points_px, dtype=np.float64)))
    zones = {z.name: _finite(cal.image_to_ground(np.asarray(z.points_px, dtype=np.float64)))
             for z in (camera.movements.zones if camera.movements is not None else ())}
    return SiteGeometry(lines={k: v for k, v in lines.items() if len(v) >= 2},
                        zones={k: v for k, v in zones.items() if len(v) >= 3}, speed_limit_kmh=limit)


def load_site_geometry(config_path: Path, camera: str) -> SiteGeometry:
    """The geometry of ``camera`` in the edge config at ``config_path``."""
    config = load_config(config_path)
    found = next((c for c in config.cameras if c.name == camera), None)
    if found is None:
        names = ", ".join(c.name for c in config.cameras)
        raise ConfigError(f"{config_path}: has no camera {camera!r} (it has {names}); give the site's device config")
    return camera_geometry(found)
