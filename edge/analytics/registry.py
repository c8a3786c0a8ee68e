"""Which analytics a camera (or a trajectory study) runs: one list, built from one :class:`AnalyticsSetup`.

``edge.pipeline.CameraPipeline`` builds a camera's setup with :meth:`AnalyticsSetup.from_camera`,
``edge.trajectories.analyse`` builds one from its study (zones and lines in metres), and both call
:func:`build_analytics`; ``edge.prepare`` sizes the same list's worst-case records at start-up. Each entry
of :data:`ANALYTICS` is a factory that returns its analytic, or None when the setup does not call for it:

* line counts: always (the metrics record's ``counts``; no lines give ``{}``);
* speeds: when calibrated (a speeds record per window);
* turning movements: when zones are configured;
* near-misses: when calibrated and conflict detection is on.

Adding an analytic: write its module (the maths, plus a class with the five methods of
:class:`~edge.analytics.base.Analytic`: ``update``, ``forget``, ``close``, ``flush``, ``worst_case``)
and add its factory to :data:`ANALYTICS` here. The window records, the driver loops and the payload check
need no change. What it publishes must be a field of the payload contract (``edge.payloads``, whose
models forbid unknown keys), and its settings a config section (``edge.config``), as for any record or
setting. The order of :data:`ANALYTICS` is the order in which analytics see a frame and in which their
near-misses are returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from edge.analytics.base import Analytic
from edge.analytics.conflicts import ConflictDetector
from edge.analytics.kinematics import GroundKinematics
from edge.analytics.movements import MovementCounter, Zone
from edge.analytics.plugins import Conflicts, LineCounts, Movements, Speeds
from edge.config import CameraConfig, ConflictConfig, MovementConfig, default_direction_names

__all__ = ["ANALYTICS", "AnalyticFactory", "AnalyticsSetup", "MovementSetup", "build_analytics"]


@dataclass(frozen=True, slots=True)
class MovementSetup:
    """Approach zones and the movement counter's options; ``handover_radius`` in the zones' units."""

    zones: tuple[Zone, ...]
    exit_dwell_s: float = 0.5
    handover_radius: float = 0.0
    handover_max_gap_s: float = 1.0

    @classmethod
    def from_config(cls, config: MovementConfig) -> MovementSetup:
        """A camera's zones, in image pixels."""
        return cls(tuple(Zone.from_config(z) for z in config.zones), config.exit_dwell_s,
                   config.handover_radius_px, config.handover_max_gap_s)

    def counter(self) -> MovementCounter:
        return MovementCounter(self.zones, exit_dwell_s=self.exit_dwell_s, handover_radius=self.handover_radius,
                               handover_max_gap_s=self.handover_max_gap_s)


@dataclass(frozen=True, slots=True)
class AnalyticsSetup:
    """What the analytics of one camera or study are built from.

    ``lines``: each counting line's name and its two direction names. ``kinematics``: the ground filter
    of a calibrated camera (the driver runs it and hands its ground tracks to the analytics; near-miss
    detection also reads its position histories); None when uncalibrated. ``movements``: the zones, if
    any. ``conflicts``: near-miss thresholds; None turns detection off.
    """

    lines: tuple[tuple[str, tuple[str, str]], ...] = ()
    kinematics: GroundKinematics | None = None
    speed_limit_kmh: float = 50.0
    min_speed_count: int = 3
    movements: MovementSetup | None = None
    conflicts: ConflictConfig | None = None

    @classmethod
    def from_camera(cls, camera: CameraConfig, kinematics: GroundKinematics | None) -> AnalyticsSetup:
        """A camera's setup; ``kinematics`` is its ground filter when its calibration is fitted."""
        return cls(
            lines=tuple((c.name, c.directions or default_direction_names(c.pixel_points)) for c in camera.lines),
            kinematics=kinematics,
            speed_limit_kmh=camera.speeds.speed_limit_kmh,
            min_speed_count=camera.speeds.min_count_published,
            movements=MovementSetup.from_config(camera.movements) if camera.movements else None,
            conflicts=camera.conflicts,
        )


#: Builds one analytic from a setup, or None when the setup does not call for it.
AnalyticFactory = Callable[[AnalyticsSetup], Analytic | None]


def line_counts(s: AnalyticsSetup) -> Analytic | None:
    return LineCounts(s.lines)


def speeds(s: AnalyticsSetup) -> Analytic | None:
    return Speeds(s.lines, s.speed_limit_kmh, s.min_speed_count) if s.kinematics is not None else None


def movements(s: AnalyticsSetup) -> Analytic | None:
    return Movements(s.movements.counter()) if s.movements is not None else None


def conflicts(s: AnalyticsSetup) -> Analytic | None:
    if s.kinematics is None or s.conflicts is None:
        return None
    return Conflicts(ConflictDetector(s.conflicts, s.kinematics))


#: The registry: every analytic there is, in the order they see a frame.
ANALYTICS: Final[tuple[AnalyticFactory, ...]] = (line_counts, speeds, movements, conflicts)


def build_analytics(setup: AnalyticsSetup, registry: Sequence[AnalyticFactory] = ANALYTICS) -> list[Analytic]:
    """The analytics ``setup`` calls for, fresh (each owns its state), in ``registry`` order."""
    return [a for factory in registry if (a := factory(setup)) is not None]
