"""Line counting sections of a camera: counting lines (``lines[]``) and their options (``counting``).

A line is drawn either in image pixels (``points_px``) or on the calibrated ground plane in metres
(``points_m``); ``edge.prepare.lines_in_pixels`` projects ground lines into the image at start-up, so the
counting code only ever sees pixel lines (:attr:`LineConfig.pixel_points`).
"""

from __future__ import annotations

import itertools
import math
from typing import Self

from pydantic import Field, field_validator, model_validator

from edge.config.base import Point, StrictModel, finite_points
from edge.errors import ConfigError

DIRECTION_NAME = r"^[A-Za-z0-9_.-]{1,32}$"


def default_direction_names(points: tuple[tuple[float, float], ...]) -> tuple[str, str]:
    """Names from the line's overall orientation: the normal towards the left side picks up/down/left/right."""
    dx = points[-1][0] - points[0][0]
    dy = points[-1][1] - points[0][1]
    nx, ny = dy, -dx  # normal pointing to the left side (y down)
    if abs(ny) >= abs(nx):
        return ("up", "down") if ny < 0 else ("down", "up")
    return ("left", "right") if nx < 0 else ("right", "left")


class LineConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,32}$", description="Line name used in metrics.")
    points_px: tuple[Point, ...] | None = Field(
        None, min_length=2, max_length=32,
        description="Polyline vertices in source-frame pixels [[x, y], ...]; at least two. Give this or points_m.",
    )
    points_m: tuple[Point, ...] | None = Field(
        None, min_length=2, max_length=32,
        description="Instead of points_px: the polyline on the ground plane, metres [[x, y], ...] in the frame of "
        "the camera's calibration (the frame of its reference points' ground_m: local, or UTM with utm_zone); "
        "at least two. Needs the camera's calibration; projected into the image at start-up.",
    )
    directions: tuple[str, str] | None = Field(
        None,
        description="Names of the two crossing directions: first the crossing towards the left of the line "
        "as drawn (on screen, facing from the first point to the last), then the opposite. Default: "
        "derived from the orientation (up/down for a horizontal line, left/right for a vertical one).",
    )

    @field_validator("points_px")
    @classmethod
    def _distinct(cls, v: tuple[Point, ...] | None) -> tuple[Point, ...] | None:
        if v is None:
            return v
        for (x0, y0), (x1, y1) in itertools.pairwise(v):
            if math.hypot(x1 - x0, y1 - y0) < 1.0:
                raise ValueError("consecutive points must be at least 1 px apart")
        if any(not (math.isfinite(x) and math.isfinite(y)) for x, y in v):
            raise ValueError("points must be finite numbers")
        return v

    @field_validator("points_m")
    @classmethod
    def _distinct_m(cls, v: tuple[Point, ...] | None) -> tuple[Point, ...] | None:
        if v is None:
            return v
        finite_points(v)
        if any(math.dist(a, b) < 0.01 for a, b in itertools.pairwise(v)):
            raise ValueError("consecutive points must be at least 1 cm apart")
        return v

    @field_validator("directions")
    @classmethod
    def _names(cls, v: tuple[str, str] | None) -> tuple[str, str] | None:
        import re

        if v is not None:
            if v[0] == v[1]:
                raise ValueError("the two direction names must differ")
            for name in v:
                if not re.fullmatch(DIRECTION_NAME, name):
                    raise ValueError(f"direction name {name!r} must match {DIRECTION_NAME}")
        return v

    @model_validator(mode="after")
    def _one_kind_of_points(self) -> Self:
        if (self.points_px is None) == (self.points_m is None):
            given = "both" if self.points_px is not None else "neither"
            raise ValueError(f"line {self.name!r}: give exactly one of points_px (image pixels) and points_m "
                             f"(ground metres, needs the camera's calibration), got {given}")
        return self

    @property
    def pixel_points(self) -> tuple[Point, ...]:
        """The polyline in image pixels: ``points_px``. A ``points_m`` line has them once it has been projected
        through its camera's calibration (``edge.prepare.lines_in_pixels``, at start-up)."""
        if self.points_px is None:
            raise ConfigError(f"line {self.name!r} is given in ground metres (points_m) and has not been projected "
                              "into the image: pass its camera through edge.prepare.lines_in_pixels first")
        return self.points_px


class RiderConfig(StrictModel):
    """When a ``person`` track counts as a two-wheeler (``edge.analytics.riders``): the rider of a bicycle or
    motorcycle the detector missed, or rode along with, must not count as a pedestrian.

    Speed thresholds, and where they come from: people walk at 1.2-1.5 m/s (Knoblauch, Pietrucha and Nitzburg
    1996, TRR 1538: mean walking speeds 1.25-1.51 m/s; the US MUTCD times crossings for 1.07 m/s) and
    recreational runners reach 3-4 m/s; urban cyclists ride at 4-6 m/s (German naturalistic cycling study,
    Schleinitz et al. 2017: mean 15.3 km/h on conventional bicycles, 17.4 km/h on pedelecs, 25.2 km/h on
    S-pedelecs), pedelec assistance ends at 25 km/h (6.9 m/s, EU Regulation 168/2013), while mopeds and
    motorcycles keep up with traffic at 30-50 km/h. Without a calibration speeds are measured in box heights
    per second of the box's bottom-centre (a person is about 1.7 m tall, so 1 height/s is about 1.7 m/s when
    moving across the image; less along the line of sight). On the Urban Tracker manual tracks
    (../shared/trajectories/urbantracker-gt; Rouen taken at 25 fps, the Canadian scenes at 30 fps, PAL and
    NTSC: the files hold no frame rate) none of the 34 pedestrians kept more than 2.04 heights/s for 1 s,
    while the three cyclists crossing the view kept 3.0-4.6 at their fastest and rode at 2.6-3.3 most of the
    time. The two far cyclists of the René-Lévesque scene, riding along the line of sight, kept 1.1-1.4: a
    view like that needs a calibration for this rule.
    """

    overlap_frac: float = Field(
        0.5, gt=0, le=1,
        description="A person box and a bicycle or motorcycle track's box ride together on a frame when they "
        "overlap by at least this fraction of the smaller box's area.",
    )
    ride_frames_frac: float = Field(
        0.5, gt=0, le=1,
        description="A person track that rode with a moving two-wheeler on at least this fraction of the frames "
        "both were seen on (and on 3 or more) is that two-wheeler's rider: its crossings count as the "
        "two-wheeler's, once for both.",
    )
    pedestrian_max_speed_mps: float = Field(
        4.0, gt=0, le=50,
        description="Calibrated cameras: a person track moving faster than this on the ground (m/s) for "
        "sustain_s is a rider and counts as a bicycle (14.4 km/h: above walking and jogging, below most cyclists).",
    )
    bicycle_max_speed_mps: float = Field(
        8.5, gt=0, le=100,
        description="Calibrated cameras: such a rider faster than this (m/s, 30.6 km/h) for sustain_s counts as a "
        "motorcycle (a moped or scooter in traffic); slower, as a bicycle.",
    )
    pedestrian_max_heights_per_s: float = Field(
        2.3, gt=0, le=100,
        description="Cameras without calibration: a person track whose box bottom-centre moves faster than "
        "this many of its box heights per second for sustain_s counts as a bicycle (about 3.9 m/s across "
        "the image for a 1.7 m box; motion along the line of sight shows less).",
    )
    bicycle_max_heights_per_s: float = Field(
        6.0, gt=0, le=200,
        description="Cameras without calibration: faster than this many box heights per second for sustain_s, "
        "such a rider counts as a motorcycle (about 10 m/s for a 1.7 m box; a cyclist crossing the Urban "
        "Tracker St-Marc view kept 4.6 at its fastest).",
    )
    sustain_s: float = Field(
        1.0, gt=0, le=30,
        description="How long a person track must keep above a speed threshold before it counts as a "
        "two-wheeler (a stride or a jittering box is shorter). Once reached, the track keeps that class.",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.bicycle_max_speed_mps <= self.pedestrian_max_speed_mps:
            raise ValueError("bicycle_max_speed_mps must exceed pedestrian_max_speed_mps")
        if self.bicycle_max_heights_per_s <= self.pedestrian_max_heights_per_s:
            raise ValueError("bicycle_max_heights_per_s must exceed pedestrian_max_heights_per_s")
        return self


class CountingConfig(StrictModel):
    hysteresis_px: float = Field(
        4.0, ge=0, le=200,
        description="Half-width of a dead band around each line. A box bottom-centre must leave the band on "
        "the far side to count, so jitter on the line or stop-and-go at a stop line never double-counts.",
    )
    confirm_s: float = Field(
        0.2, ge=0, le=10,
        description="A crossing counts once the bottom-centre has stayed beyond the band on the far side for "
        "this long (or the track ended there), seconds. A box that re-forms for a frame or two (part of a "
        "truck found alone, two road users merged) flips back within it and counts nothing; 0 counts at once.",
    )
    riders: RiderConfig = Field(
        default_factory=RiderConfig,
        description="When a person track counts as a bicycle or motorcycle (its rider), not as a pedestrian.",
    )

