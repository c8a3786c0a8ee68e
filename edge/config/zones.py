"""Turning movements of a camera: approach zones (``movements.zones``) and the ``movements`` section."""

from __future__ import annotations

import itertools

from pydantic import Field, field_validator

from edge.config.base import Point, StrictModel, finite_points

ZONE_NAME = r"^[A-Za-z0-9_.]{1,32}$"


def _segments_cross(p: Point, q: Point, a: Point, b: Point) -> bool:
    """True when segments p-q and a-b cross properly (not at shared end points)."""

    def orient(o: Point, s: Point, t: Point) -> float:
        return (s[0] - o[0]) * (t[1] - o[1]) - (s[1] - o[1]) * (t[0] - o[0])

    d1, d2 = orient(a, b, p), orient(a, b, q)
    d3, d4 = orient(p, q, a), orient(p, q, b)
    return d1 * d2 < 0 and d3 * d4 < 0


class ZoneConfig(StrictModel):
    name: str = Field(
        pattern=ZONE_NAME,
        description="Approach name used in movement names (e.g. Nord -> movement Nord->Ost).",
    )
    points_px: tuple[Point, ...] = Field(
        min_length=3, max_length=64,
        description="Polygon vertices in source-frame pixels [[x, y], ...], covering the approach's lanes in "
        "both directions where road users enter and leave the view.",
    )

    @field_validator("points_px")
    @classmethod
    def _simple_polygon(cls, v: tuple[Point, ...]) -> tuple[Point, ...]:
        finite_points(v)
        area2 = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(v, v[1:] + v[:1], strict=True))
        if abs(area2) / 2 < 1.0:
            raise ValueError("the polygon has no area (fewer than 3 distinct points, or all on one line)")
        edges = list(zip(v, v[1:] + v[:1], strict=True))
        for i, j in itertools.combinations(range(len(edges)), 2):
            if j - i > 1 and not (i == 0 and j == len(edges) - 1) and _segments_cross(*edges[i], *edges[j]):
                raise ValueError(f"the polygon's edges {i} and {j} cross; list the vertices in order around it")
        return v


class MovementConfig(StrictModel):
    """Turning movements: a track entering through one zone and leaving through another."""

    zones: tuple[ZoneConfig, ...] = Field(
        min_length=2, max_length=16,
        description="One polygon per approach. Where zones overlap, the first listed wins.",
    )
    exit_dwell_s: float = Field(
        0.5, ge=0, le=30,
        description="A movement is counted once a track has been this long in a zone other than its entry zone "
        "(or when it ends after reaching one); a track clipping a corner of another zone is not an exit.",
    )
    handover_radius_px: float = Field(
        40.0, ge=0, le=1000,
        description="A track first seen outside every zone (an id switch, an occlusion) takes the entry zone of "
        "a track lost within handover_max_gap_s whose predicted position is this close; 0 disables it.",
    )
    handover_max_gap_s: float = Field(
        1.0, gt=0, le=30, description="Longest time between losing a track and handing its entry zone over."
    )

    @field_validator("zones")
    @classmethod
    def _unique_zones(cls, v: tuple[ZoneConfig, ...]) -> tuple[ZoneConfig, ...]:
        names = [z.name for z in v]
        if len(set(names)) != len(names):
            raise ValueError(f"zone names must be unique, got {names}")
        return v
