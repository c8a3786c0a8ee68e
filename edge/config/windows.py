"""Metrics windows (``windows``): length and alignment, capped by the protocol (P4)."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import Field, field_validator

from edge.config.base import StrictModel
from edge.protocol import PROTOCOL, violation


class WindowConfig(StrictModel):
    window_s: int = Field(
        60, le=86_400,
        description=f"Length of one metrics window in seconds (protocol minimum: {PROTOCOL.limits.min_window_s}).",
    )
    origin: datetime = Field(
        datetime(1970, 1, 1, tzinfo=UTC),
        description="Windows are aligned to this instant (ISO 8601 with a zone), e.g. a recording's start.",
    )

    @field_validator("window_s")
    @classmethod
    def _protocol_window(cls, v: int) -> int:
        if v < PROTOCOL.limits.min_window_s:
            raise ValueError(violation("windows.window_s", v, f">= {PROTOCOL.limits.min_window_s} s", "P4",
                                       "use a longer window: short windows can single out road users"))
        return v

    @field_validator("origin")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("must include a time zone, e.g. 2024-05-01T07:00:00Z")
        return v.astimezone(UTC)
