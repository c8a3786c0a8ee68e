"""``edge analyse-trajectories``: a study config of zones and lines in a ground frame (metres)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError, field_validator

from edge.config.base import Point, StrictModel
from edge.config.conflicts import ConflictConfig
from edge.config.counting import LineConfig
from edge.config.load import _yaml_path, read_yaml
from edge.errors import ConfigError


class TrajectoryStudyConfig(StrictModel):
    """``edge analyse-trajectories``: zones and lines in the trajectories' own ground frame (metres)."""

    zones_m: dict[str, tuple[Point, ...]] = Field(
        default_factory=dict, description="Approach name -> polygon [[x, y], ...] in metres, for movements."
    )
    lines_m: tuple[LineConfig, ...] = Field(
        (), description="Counting lines; their points_px (or points_m) are read as metres, and directions must be "
        "named."
    )
    speed_limit_kmh: float = Field(50.0, gt=0, le=300, description="Posted speed limit for over-limit counts.")
    conflicts: ConflictConfig = Field(default_factory=ConflictConfig, description="Near-miss thresholds.")

    @field_validator("lines_m")
    @classmethod
    def _named_directions(cls, v: tuple[LineConfig, ...]) -> tuple[LineConfig, ...]:
        for line in v:
            if line.directions is None:
                raise ValueError(f"line {line.name!r} needs `directions`: up/down defaults assume image axes")
        return v


def load_study(path: Path) -> TrajectoryStudyConfig:
    data = read_yaml(path)
    try:
        return TrajectoryStudyConfig.model_validate(data or {})
    except ValidationError as exc:
        errors = [f"{_yaml_path(e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path}: {len(errors)} error(s)", errors) from None
