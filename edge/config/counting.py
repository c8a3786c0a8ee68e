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


class CountingConfig(StrictModel):
    hysteresis_px: float = Field(
        4.0, ge=0, le=200,
        description="Half-width of a dead band around each line. A box bottom-centre must leave the band on "
        "the far side to count, so jitter on the line or stop-and-go at a stop line never double-counts.",
    )

