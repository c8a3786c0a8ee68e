"""Ground plane sections of a camera: ``calibration``, ``kinematics`` and ``speeds``."""

from __future__ import annotations

import itertools
import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from edge.config.base import Point, StrictModel, finite_points

UTM_ZONE = r"^(0?[1-9]|[1-5][0-9]|60)[NS]$"



class ReferencePointConfig(StrictModel):
    image_px: Point = Field(description="Where the point is in the source frame, pixels [x, y] (x right, y down).")
    ground_m: Point = Field(
        description="The same point on the ground, metres [x, y]: a local frame (e.g. x east, y north, from a "
        "site plan or a tape) or UTM [easting, northing] when `utm_zone` is set.",
    )


class CalibrationConfig(StrictModel):
    """Image-to-ground homography from surveyed reference points (see ``edge.geometry``)."""

    points: tuple[ReferencePointConfig, ...] = Field(
        min_length=4, max_length=100,
        description="At least 4 reference points on the road surface, spread over the area to be measured, no "
        "3 of them on one line (use 5 or more: with exactly 4 the fit is exact and its error cannot be checked).",
    )
    utm_zone: str | None = Field(
        None, pattern=UTM_ZONE,
        description="UTM zone of `ground_m`, e.g. 32N. Ground coordinates are then UTM easting/northing in "
        "metres; they are shifted to a local frame by `origin_m` so that float precision is kept.",
    )
    origin_m: Point | None = Field(
        None,
        description="Ground point subtracted from every ground coordinate (the local frame's origin, in the "
        "ground_m frame). Default: the centroid of the reference points.",
    )
    method: Literal["least_squares", "ransac"] = Field(
        "least_squares",
        description="least_squares uses every point (surveyed points); ransac drops points whose error exceeds "
        "ransac_threshold_m (points clicked by hand where one may be wrong; needs 5 or more points).",
    )
    ransac_threshold_m: float = Field(
        0.5, gt=0, le=10, description="With method ransac: a point farther than this from its fit is an outlier."
    )
    max_reprojection_error_m: float = Field(
        1.0, gt=0, le=100,
        description="Refuse the calibration when a reference point (inlier) maps farther than this from its "
        "surveyed ground position: a mistyped coordinate or a swapped pair shows up here.",
    )

    @field_validator("points")
    @classmethod
    def _distinct_points(cls, v: tuple[ReferencePointConfig, ...]) -> tuple[ReferencePointConfig, ...]:
        finite_points(tuple(p.image_px for p in v))
        finite_points(tuple(p.ground_m for p in v))
        for (i, a), (j, b) in itertools.combinations(enumerate(v), 2):
            if math.dist(a.image_px, b.image_px) < 1.0:
                raise ValueError(f"points {i} and {j} have the same image position (closer than 1 px); "
                                 "remove the duplicate")
            if math.dist(a.ground_m, b.ground_m) < 0.01:
                raise ValueError(f"points {i} and {j} have the same ground position (closer than 1 cm); "
                                 "remove the duplicate")
        return v

    @model_validator(mode="after")
    def _utm_range(self) -> CalibrationConfig:
        if self.utm_zone is not None:
            for i, p in enumerate(self.points):
                easting, northing = p.ground_m
                if not (0.0 < easting < 1_000_000.0 and 0.0 <= northing <= 10_000_000.0):
                    raise ValueError(f"points[{i}].ground_m {p.ground_m} is not a UTM easting/northing in metres "
                                     "(easting 0-1,000,000, northing 0-10,000,000); give [easting, northing]")
        if self.method == "ransac" and len(self.points) < 5:
            raise ValueError("method ransac needs at least 5 points (with 4 every point fits exactly)")
        return self


class KinematicsConfig(StrictModel):
    """Per-track ground-plane filter: position, velocity, heading and speed (see ``edge.analytics.kinematics``)."""

    measurement_noise_px: float = Field(
        1.5, gt=0, le=100,
        description="Standard deviation of a box bottom-centre's jitter that does not grow with the box, pixels "
        "(frame-to-frame jitter measured on the shared footage is about 0.3 px; boxes also drift over several "
        "frames, so the default is larger). Mapped to metres through the calibration at each point, so far "
        "road users are smoothed more. Raising it smooths speeds more but follows braking and turns later.",
    )
    measurement_noise_box_frac: float = Field(
        0.02, ge=0, le=0.5,
        description="The part of the jitter that grows with the box: this fraction of its width (x) and height "
        "(y). Measured on the shared footage: about 0.02 (tools/eval_conflicts.py --jitter).",
    )
    footprint_offset_frac: float = Field(
        0.25, ge=0, le=1,
        description="Uncertainty of the bottom-centre-to-footprint-centre offset, as a fraction of it: a real "
        "road user is not its class's typical size. Added to each track's position uncertainty as a bias.",
    )
    consistency_hold_s: float = Field(
        1.0, ge=0, le=10,
        description="A track whose measurement failed the innovation gate (a box merge, split or cut by the "
        "image edge) is not consistent for this long, and takes part in no conflict meanwhile.",
    )
    acceleration_noise_mps2: float = Field(
        2.0, gt=0, le=50,
        description="Standard deviation of the acceleration the constant-velocity model does not predict, m/s^2. "
        "Raising it follows braking and turns faster but passes more jitter into speeds.",
    )
    velocity_settle_s: float = Field(
        0.5, ge=0, le=10,
        description="A track's speed and heading count as valid once it has been observed this long (and at "
        "least 3 times); before that its velocity is mostly the filter's initial guess.",
    )
    stationary_enter_speed_mps: float = Field(
        0.5, gt=0, le=10, description="A moving track becomes stationary when its speed falls below this."
    )
    stationary_exit_speed_mps: float = Field(
        1.0, gt=0, le=20,
        description="A stationary track moves again when its speed rises above this (hysteresis: jitter at a "
        "standstill never flips the state).",
    )
    history_samples: int = Field(
        100, ge=0, le=10_000,
        description="Ground positions kept per live track (a fixed-size ring, e.g. 100 = 5 s at 20 fps) for "
        "post-encroachment time; 0 keeps none.",
    )

    @model_validator(mode="after")
    def _hysteresis(self) -> KinematicsConfig:
        if self.stationary_exit_speed_mps <= self.stationary_enter_speed_mps:
            raise ValueError("stationary_exit_speed_mps must exceed stationary_enter_speed_mps (hysteresis)")
        return self


class SpeedConfig(StrictModel):
    speed_limit_kmh: float = Field(
        50.0, gt=0, le=300,
        description="Posted speed limit, km/h; each window reports how many measured crossings exceeded it.",
    )
    min_count_published: int = Field(
        3, ge=1, le=100,
        description="Mean and percentiles are published only from this many measured crossings in a window, "
        "so a record never reveals one road user's speed.",
    )
