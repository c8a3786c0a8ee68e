"""One camera (``cameras[]``): its source, lines, calibration, movements and near-miss settings."""

from __future__ import annotations

from typing import Self

from pydantic import Field, field_validator, model_validator

from edge.config.base import StrictModel
from edge.config.calibration import CalibrationConfig, KinematicsConfig, SpeedConfig
from edge.config.conflicts import ConflictConfig
from edge.config.counting import CountingConfig, LineConfig
from edge.config.source import SourceConfig
from edge.config.zones import MovementConfig


class CameraConfig(StrictModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Camera id used in topics and metrics.")
    source: SourceConfig | None = Field(
        None, description="Live or file source for `edge run`; `edge replay` takes the video on the CLI."
    )
    lines: tuple[LineConfig, ...] = Field((), description="Counting lines.")
    counting: CountingConfig = Field(default_factory=CountingConfig, description="Line-crossing options.")
    calibration: CalibrationConfig | None = Field(
        None, description="Ground-plane calibration; needed for speeds and near-miss measures."
    )
    kinematics: KinematicsConfig = Field(
        default_factory=KinematicsConfig, description="Ground-plane position and velocity filter."
    )
    speeds: SpeedConfig = Field(default_factory=SpeedConfig, description="Speed statistics at line crossings.")
    movements: MovementConfig | None = Field(None, description="Turning movements between approach zones.")
    conflicts: ConflictConfig = Field(
        default_factory=ConflictConfig, description="Near-miss detection (active when calibrated)."
    )

    @field_validator("lines")
    @classmethod
    def _unique_lines(cls, v: tuple[LineConfig, ...]) -> tuple[LineConfig, ...]:
        names = [line.name for line in v]
        if len(set(names)) != len(names):
            raise ValueError(f"line names must be unique, got {names}")
        return v

    @model_validator(mode="after")
    def _ground_lines_calibrated(self) -> Self:
        if self.calibration is None:
            for k, line in enumerate(self.lines):
                if line.points_m is not None:
                    raise ValueError(
                        f"lines[{k}].points_m: line {line.name!r} is drawn on the ground plane (metres) and needs "
                        "the camera's calibration to be placed in the image; add a calibration section or give "
                        "the line as points_px"
                    )
        return self

    # The 4 KB payload limit is checked at start-up (edge.prepare.payload_problems): the size depends on
    # the analytics the camera runs (edge.analytics.registry), and this module must not import them.
