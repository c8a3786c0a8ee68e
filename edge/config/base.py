"""What every section shares: the strict base model, the point type, small checks and the reconnect back-off."""

from __future__ import annotations

import math
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

Point = tuple[float, float]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def finite_points(points: tuple[Point, ...]) -> None:
    if any(not (math.isfinite(x) and math.isfinite(y)) for x, y in points):
        raise ValueError("points must be finite numbers")


class ReconnectBackoff(StrictModel):
    """Jittered exponential back-off between reconnect attempts, for a section that reconnects (a live source,
    the MQTT link). The fields sit flat in that section; a section may override either field to change its
    default, bounds or description, and the check below still holds."""

    reconnect_min_s: float = Field(1.0, gt=0, description="First back-off delay before reopening.")
    reconnect_max_s: float = Field(30.0, gt=0, description="Back-off cap; each delay is drawn uniformly below it.")

    @model_validator(mode="after")
    def _backoff_ordered(self) -> Self:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must not exceed reconnect_max_s ({self.reconnect_max_s})"
            )
        return self
