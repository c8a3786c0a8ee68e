"""Per-track ground-plane state: footprint centre, velocity, speed, heading, uncertainty, stationary flag.

Measurement: where a road user stands
-------------------------------------
The bottom-centre of a box is the visible point nearest the camera, not the centre of the footprint: a
car seen from behind stands about half its length farther away, one seen from the side about half its
width. :meth:`GroundKinematics.update` therefore maps the bottom-centre to the ground (``G``) and moves it
*away from the camera* along the ground direction ``u`` of the image's vertical at that point (the ground
image of one pixel up), by the footprint's support distance in that direction::

    centre = G + s u,   s = L/2 |h.u| + W/2 |h_perp.u|

with ``L x W`` the class's typical footprint (:data:`FOOTPRINT_SIZES`) and ``h`` the track's heading (its
last moving direction; while it is unknown, the mean of ``L/2`` and ``W/2``). A pedestrian's ``s`` is the
radius of its disc. Without the offset the bias is the same for two cars seen alike and cancels in their
gap, but not between a car and a truck or between road users seen from different sides (crossing paths,
opposite directions). The filter runs on the contact point ``G`` and the offset is added to its output,
so that a change of ``s`` (a heading becoming known, a turn) moves the position but never shows as speed.

Uncertainty
-----------
Box edges jitter in proportion to the box: on the shared footage a detector's bottom-centre moves by a
robust standard deviation of 1-2.5 % of the box width (horizontally) and of its height (vertically)
from frame to frame, 0.24-0.7 px in all (``tools/eval_conflicts.py --jitter`` prints
the table). The image noise is ``sigma_px = measurement_noise_px + measurement_noise_box_frac * size``
(width for x, height for y), mapped to the ground through the homography's Jacobian at the point
(``R = J diag(sigma^2) J^T``): a 20-px box where a pixel spans 0.7 m is uncertain by about a metre, a
large one near the camera by centimetres. The footprint model adds ``footprint_offset_frac * s`` along
``u`` (a real car is not the class's typical size). Each track carries ``position_std_m``: the filter's
position uncertainty plus that systematic part, in metres (the largest axis); conflict detection refuses
pairs whose gap lies within it.

Filter
------
A Kalman filter per track, in metres and seconds:

* state ``(x, y, vx, vy)``, constant-velocity model; time steps come from the frames' ``t_s``, so
  irregular frame intervals and frames where a track was not matched (it is lost, then found again)
  are handled by predicting over the real gap;
* process noise: an acceleration held constant over each step, zero-mean with standard deviation
  ``acceleration_noise_mps2`` (the discrete white noise acceleration model of Bar-Shalom, Li and
  Kirubarajan, 2001, *Estimation with Applications to Tracking and Navigation*, ch. 6): per axis
  ``Q = sigma_a^2 [[dt^4/4, dt^3/2], [dt^3/2, dt^2]]``;
* an innovation gate: a measurement whose normalised innovation squared exceeds the chi-square 99.9 %
  point (13.8 for 2 degrees of freedom) is not used: boxes merge and split in occlusions, and a box cut
  by the image edge moves its bottom-centre by metres. The track is marked not ``consistent`` for
  ``consistency_hold_s``; after 3 such measurements in a row the state restarts at the measurement (a
  new age, so it must mature again before it can be part of a conflict);
* a new track starts at its first position with zero velocity and a wide velocity uncertainty
  (``INITIAL_SPEED_STD_MPS``); its speed and heading are flagged ``valid`` once it has been observed for
  ``velocity_settle_s`` and at least 3 times.

Heading is the direction of the filtered velocity while the track moves; a stationary road user keeps the
heading it last moved with (a car does not turn on the spot), and one never seen moving has heading NaN.
``stationary`` has hysteresis: it is entered below ``stationary_enter_speed_mps`` and left above
``stationary_exit_speed_mps``. The filter's speed at a standstill is a positive number (the norm of a noisy
zero vector), so the enter threshold must sit above that noise.

Memory: one fixed-size state per live track (plus a ring of ``history_samples`` positions), freed when
the track id appears in ``Tracks.ended_ids``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import numpy as np
import numpy.typing as npt

from edge.config import KinematicsConfig
from edge.geometry import Calibration
from edge.types import F64, ROAD_USER_CLASSES, BoolArray, IntArray, Tracks

__all__ = [
    "BORDER_FRAC",
    "FOOTPRINT_LENGTHS_M",
    "FOOTPRINT_SIZES",
    "INITIAL_SPEED_STD_MPS",
    "FootprintSize",
    "GroundKinematics",
    "GroundTracks",
]


#: Velocity uncertainty of a new track (m/s): covers any urban speed, so the first measurements decide.
INITIAL_SPEED_STD_MPS: Final = 10.0
#: Floor added to the measurement noise (m), so a point right under the camera still has some.
_MEASUREMENT_FLOOR_M: Final = 0.02
_MIN_OBSERVATIONS: Final = 3
#: Chi-square 99.9 % point for 2 degrees of freedom: a position this unlikely under the filter is not used.
INNOVATION_GATE_CHI2: Final = 13.82
#: A box within this fraction of the image's width (height) of its left or right (top or bottom) edge is cut by
#: it, or about to be (10 px at 1920): its bottom-centre is not the road user's.
BORDER_FRAC: Final = 0.005
_RESTART_AFTER_OUTLIERS: Final = 3
#: Yaw rate: smoothed over this time constant (s), only from headings at this speed (m/s) or more, and
#: capped (rad/s; a car turning at 10 m/s on a 10 m radius turns at 1 rad/s).
_YAW_TAU_S: Final = 0.5
_YAW_MIN_SPEED_MPS: Final = 2.0
_YAW_MAX_RPS: Final = 1.5
_EYE2: Final = np.eye(2)
_EYE4: Final = np.eye(4)


@dataclass(frozen=True, slots=True)
class FootprintSize:
    """Plan-view size of a road user, metres: ``length_m`` along its heading, ``width_m`` across."""

    length_m: float
    width_m: float


#: Typical footprint per road-user class, for TTC and PET footprints. Sources and reasoning:
#: car 4.5 x 1.8 (a European compact/medium car, e.g. VW Golf 4.28 x 1.79, Passat 4.77 x 1.83);
#: bus 12.0 x 2.55 (a standard solo city bus; 2.55 m is the EU maximum width, Directive 96/53/EC);
#: truck 8.0 x 2.5 (a rigid delivery or skip truck; detectors also call pickups and vans "truck", and an
#: articulated 16.5 m truck is rare in a junction's urban traffic, so a middle value);
#: motorcycle 2.2 x 0.8; bicycle 1.8 x 0.6 (bicycle with rider, handlebar width);
#: person 0.6 x 0.6 (a disc 0.6 m across; see ``edge.analytics.surrogate.Disc``).
FOOTPRINT_SIZES: Final[Mapping[str, FootprintSize]] = MappingProxyType(
    {
        "car": FootprintSize(4.5, 1.8),
        "bus": FootprintSize(12.0, 2.55),
        "truck": FootprintSize(8.0, 2.5),
        "motorcycle": FootprintSize(2.2, 0.8),
        "bicycle": FootprintSize(1.8, 0.6),
        "person": FootprintSize(0.6, 0.6),
    }
)
if set(FOOTPRINT_SIZES) != set(ROAD_USER_CLASSES):  # every class needs a size
    raise ImportError("FOOTPRINT_SIZES and ROAD_USER_CLASSES disagree")
#: Footprint lengths and widths by class id (metres).
FOOTPRINT_LENGTHS_M: Final = np.array([FOOTPRINT_SIZES[c].length_m for c in ROAD_USER_CLASSES])
_LENGTHS: Final = FOOTPRINT_LENGTHS_M
_WIDTHS: Final = np.array([FOOTPRINT_SIZES[c].width_m for c in ROAD_USER_CLASSES])
_PERSON: Final = ROAD_USER_CLASSES.index("person")


def _check(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> None:
    if arr.shape != shape:
        raise ValueError(f"GroundTracks.{name} must have shape {shape}, got {arr.shape}")


@dataclass(frozen=True, slots=True)
class GroundTracks:
    """Ground-plane state of the tracks observed on one frame, as parallel arrays (row ``i`` = one track).

    ``xy_m (N,2)`` filtered footprint centre in the calibration's local ground frame (metres),
    ``velocity_mps (N,2)``, ``speed_mps (N,)`` its norm, ``heading (N,2)`` unit vector (NaN when the track
    never moved), ``stationary (N,)`` with hysteresis, ``valid (N,)`` true once the velocity has settled
    (speed, heading and ``stationary`` mean nothing before), ``length_m``/``width_m (N,)`` the class's
    typical footprint (:data:`FOOTPRINT_SIZES`), ``position_std_m (N,)`` and ``velocity_std_mps (N,)`` one
    standard deviation along the most uncertain axis, ``age_s (N,)`` time since the track's state started,
    ``consistent (N,)`` false while a recent measurement failed the innovation gate (a box merge, split
    or cut), ``yaw_rate_rps (N,)`` the smoothed rate of turn of the heading (rad/s, 0 below
    ``_YAW_MIN_SPEED_MPS``, where headings are noise), ``at_border (N,)`` true while the box touches the image
border (cut by it: its bottom-centre is not the road user's; always false for ground positions given
directly). Internal only: tracker ids and positions never leave the device.
    """

    t_s: float
    tracker_id: IntArray
    class_id: IntArray
    xy_m: F64
    velocity_mps: F64
    heading: F64
    speed_mps: F64
    stationary: BoolArray
    valid: BoolArray
    length_m: F64
    width_m: F64
    position_std_m: F64
    velocity_std_mps: F64
    age_s: F64
    consistent: BoolArray
    yaw_rate_rps: F64
    at_border: BoolArray

    def __post_init__(self) -> None:
        n = len(self.tracker_id)
        for name in ("tracker_id", "class_id", "speed_mps", "stationary", "valid", "length_m", "width_m",
                     "position_std_m", "velocity_std_mps", "age_s", "consistent", "yaw_rate_rps", "at_border"):
            _check(name, getattr(self, name), (n,))
        for name in ("xy_m", "velocity_mps", "heading"):
            _check(name, getattr(self, name), (n, 2))

    def __len__(self) -> int:
        return len(self.tracker_id)

    @property
    def x_m(self) -> F64:
        return self.xy_m[:, 0]

    @property
    def y_m(self) -> F64:
        return self.xy_m[:, 1]

    @property
    def vx_mps(self) -> F64:
        return self.velocity_mps[:, 0]

    @property
    def vy_mps(self) -> F64:
        return self.velocity_mps[:, 1]

    @classmethod
    def empty(cls, t_s: float) -> GroundTracks:
        z2, z1 = np.zeros((0, 2)), np.zeros((0,))
        zi, zb = np.zeros((0,), np.int64), np.zeros((0,), np.bool_)
        return cls(t_s, zi, zi.copy(), z2, z2.copy(), z2.copy(), z1, zb, zb.copy(), z1.copy(), z1.copy(),
                   z1.copy(), z1.copy(), z1.copy(), zb.copy(), z1.copy(), zb.copy())

    def index_of(self, tracker_id: int) -> int | None:
        """Row of ``tracker_id``, or None when that track was not observed on this frame."""
        rows = np.flatnonzero(self.tracker_id == tracker_id)
        return int(rows[0]) if len(rows) else None

    def speed_of(self, tracker_id: int) -> float | None:
        """Speed (m/s) of ``tracker_id`` on this frame; None when not observed or not yet valid."""
        i = self.index_of(tracker_id)
        return float(self.speed_mps[i]) if i is not None and self.valid[i] else None


@dataclass(slots=True)
class _TrackState:
    mean: F64  # (4,) x, y, vx, vy
    cov: F64  # (4, 4)
    first_t: float
    last_t: float
    observations: int = 1
    stationary: bool = False
    heading: F64 = field(default_factory=lambda: np.full(2, np.nan))
    history: deque[tuple[float, float, float]] | None = None
    outliers_in_row: int = 0
    inconsistent_until: float = -math.inf
    yaw_rate: float = 0.0  # rad/s, exponentially smoothed
    yaw_t: float = math.nan  # time of the heading the yaw rate was last updated from


@dataclass(frozen=True, slots=True)
class _Flags:
    """Per-row flags of one update, from the tracks' stored states."""

    heading: F64
    stationary: BoolArray
    valid: BoolArray
    consistent: BoolArray
    age: F64
    yaw: F64


class GroundKinematics:
    """Filters every track's ground position; one instance per camera (it owns all its state).

    With a ``calibration``, :meth:`update` takes the tracker's :class:`~edge.types.Tracks`. Without one,
    :meth:`update_ground` takes ground positions directly (already-extracted trajectories), with
    measurement noise ``measurement_noise_m``.
    """

    def __init__(
        self,
        config: KinematicsConfig,
        calibration: Calibration | None = None,
        measurement_noise_m: float = 0.1,
    ) -> None:
        if not (math.isfinite(measurement_noise_m) and measurement_noise_m > 0):
            raise ValueError(f"measurement_noise_m must be a finite number > 0 (metres), got {measurement_noise_m}")
        self.config = config
        self.calibration = calibration
        self.measurement_noise_m = measurement_noise_m
        self._state: dict[int, _TrackState] = {}

    @property
    def tracked_count(self) -> int:
        """Tracks with state held (bounded by the tracker's live tracks)."""
        return len(self._state)

    def history(self, tracker_id: int) -> F64:
        """Recent filtered positions of a live track, ``(K, 3)`` rows of ``t_s, x_m, y_m``, oldest first."""
        st = self._state.get(tracker_id)
        if st is None or st.history is None:
            return np.zeros((0, 3))
        return np.array(st.history, dtype=np.float64).reshape(-1, 3)

    def footprint_offsets(self, tracker_id: IntArray, class_id: IntArray, away: F64) -> F64:
        """Support distance ``s (N,)`` (m) of each footprint towards the camera, along unit ``away (N,2)``.

        Uses each track's last heading; unknown headings (new or never-moving tracks) take the mean of the
        half length and the half width. A pedestrian is a disc: its radius.
        """
        cls = np.clip(np.asarray(class_id, np.int64), 0, len(ROAD_USER_CLASSES) - 1)
        half_l, half_w = _LENGTHS[cls] / 2, _WIDTHS[cls] / 2
        heading = np.full((len(cls), 2), np.nan)
        for k, tid in enumerate(np.asarray(tracker_id).tolist()):
            st = self._state.get(int(tid))
            if st is not None:
                heading[k] = st.heading
        known = np.isfinite(heading).all(axis=1)
        along = np.abs(np.einsum("ij,ij->i", np.where(known[:, None], heading, 0.0), away))
        across = np.sqrt(np.clip(1.0 - along**2, 0.0, 1.0))
        s = np.where(known, half_l * along + half_w * across, (half_l + half_w) / 2)
        return np.where(cls == _PERSON, half_w, s)

    def update(self, tracks: Tracks, t_s: float, image_size_px: tuple[int, int] | None = None) -> GroundTracks:
        """Footprint centres of the tracks' boxes on the ground, filtered; frees state of ``tracks.ended_ids``.

        Tracks whose bottom-centre is at or above the horizon (no ground position) are left out. With the
        image's ``(width, height)``, boxes within ``BORDER_FRAC`` of its edges are flagged ``at_border``.
        """
        if self.calibration is None:
            raise ValueError("GroundKinematics.update needs a calibration; use update_ground for ground positions")
        cfg = self.config
        anchors = tracks.anchors().astype(np.float64)
        ground = self.calibration.image_to_ground(anchors)
        above = self.calibration.image_to_ground(anchors - [0.0, 1.0])  # one pixel up: away from the camera
        jac = self.calibration.jacobian(anchors)
        away = above - ground
        norm = np.hypot(away[:, 0], away[:, 1])
        ok = (np.isfinite(ground).all(axis=1) & np.isfinite(jac).all(axis=(1, 2)) & np.isfinite(norm)
              & (norm > 0))
        away = away[ok] / norm[ok, None]
        ids, classes = tracks.tracker_id[ok], tracks.class_id[ok]
        offset = self.footprint_offsets(ids, classes, away)
        box = tracks.xyxy[ok].astype(np.float64)
        sigma_px = cfg.measurement_noise_px + cfg.measurement_noise_box_frac * np.stack(
            [box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]], axis=1)
        j = jac[ok]
        pixel_cov = j @ (sigma_px[:, :, None] * np.eye(2)[None] * sigma_px[:, None, :]) @ j.transpose(0, 2, 1)
        at_border = None
        if image_size_px is not None:
            w, h = image_size_px
            mx, my = BORDER_FRAC * w, BORDER_FRAC * h
            at_border = (box[:, 0] <= mx) | (box[:, 1] <= my) | (box[:, 2] >= w - mx) | (box[:, 3] >= h - my)
        return self.update_ground(ids, classes, ground[ok], t_s, tracks.ended_ids, measurement_cov=pixel_cov,
                                  offset_m=offset[:, None] * away, systematic_m=cfg.footprint_offset_frac * offset,
                                  at_border=at_border)

    def update_ground(
        self,
        tracker_id: npt.ArrayLike,
        class_id: npt.ArrayLike,
        xy_m: npt.ArrayLike,
        t_s: float,
        ended_ids: Sequence[int] = (),
        measurement_cov: F64 | None = None,
        offset_m: F64 | None = None,
        systematic_m: F64 | None = None,
        at_border: BoolArray | None = None,
    ) -> GroundTracks:
        """Filter ground positions ``xy_m (N,2)`` of tracks ``tracker_id (N,)`` observed at ``t_s``.

        ``measurement_cov (N,2,2)`` is each position's noise covariance (m^2); default isotropic
        ``measurement_noise_m``. ``offset_m (N,2)`` is added to the filtered positions on output (the
        footprint centre from the filtered contact point): it is not filtered, so a change of the offset
        (a heading becoming known) moves the position but never shows as a velocity. ``systematic_m (N,)``
        is the offset's own uncertainty, a bias that does not average out over frames (added to
        ``position_std_m``). ``at_border (N,)`` flags boxes cut by the image border (default none).
        A time step <= 0 (a repeated time stamp) updates without predicting.
        """
        for tid in ended_ids:
            self._state.pop(int(tid), None)
        ids, classes, z = _observations(tracker_id, class_id, xy_m)
        n = len(ids)
        if n == 0:
            return GroundTracks.empty(t_s)
        floor = _MEASUREMENT_FLOOR_M**2 * _EYE2
        if measurement_cov is None:
            r = np.tile((self.measurement_noise_m**2) * _EYE2 + floor, (n, 1, 1))
        else:
            r = np.asarray(measurement_cov, dtype=np.float64).reshape(n, 2, 2) + floor
        bias = np.zeros(n) if systematic_m is None else np.asarray(systematic_m, np.float64).reshape(n)
        shift = np.zeros((n, 2)) if offset_m is None else np.asarray(offset_m, np.float64).reshape(n, 2)

        mean, cov, outlier = self._filter(ids, z, r, t_s)
        st8 = self._advance(ids, z, r, mean, cov, outlier, shift, t_s)
        class_idx = np.clip(classes, 0, len(ROAD_USER_CLASSES) - 1)
        return GroundTracks(
            t_s=t_s,
            tracker_id=ids.copy(),
            class_id=classes.copy(),
            xy_m=mean[:, :2] + shift,
            velocity_mps=mean[:, 2:].copy(),
            heading=st8.heading,
            speed_mps=np.hypot(mean[:, 2], mean[:, 3]),
            stationary=st8.stationary,
            valid=st8.valid,
            length_m=_LENGTHS[class_idx],
            width_m=_WIDTHS[class_idx],
            position_std_m=np.sqrt(_largest_eigenvalue(cov[:, :2, :2]) + bias**2),
            velocity_std_mps=np.sqrt(_largest_eigenvalue(cov[:, 2:, 2:])),
            age_s=st8.age,
            consistent=st8.consistent,
            yaw_rate_rps=st8.yaw,
            at_border=np.zeros(n, dtype=bool) if at_border is None else np.asarray(at_border, bool).reshape(n),
        )

    def _filter(self, ids: IntArray, z: F64, r: F64, t_s: float) -> tuple[F64, F64, BoolArray]:
        """Kalman step of every row: ``(mean (N,4), cov (N,4,4), outlier (N,))``; the states are not changed."""
        n = len(ids)
        known = np.array([int(i) in self._state for i in ids], dtype=bool)
        mean = np.zeros((n, 4))
        cov = np.zeros((n, 4, 4))
        outlier = np.zeros(n, dtype=bool)
        # New tracks: at the measurement, at rest, with a wide velocity prior.
        new = ~known
        mean[new, :2] = z[new]
        cov[new, :2, :2] = r[new]
        cov[new, 2, 2] = cov[new, 3, 3] = INITIAL_SPEED_STD_MPS**2
        # Known tracks: predict over the real time step, then update with the measurement unless it fails
        # the innovation gate.
        if known.any():
            rows = np.flatnonzero(known)
            states = [self._state[int(ids[i])] for i in rows]
            m = np.stack([s.mean for s in states])
            p = np.stack([s.cov for s in states])
            dt = np.maximum(np.array([t_s - s.last_t for s in states]), 0.0)
            m, p = _predict(m, p, dt, self.config.acceleration_noise_mps2)
            settled = np.array([s.observations >= _MIN_OBSERVATIONS and t_s - s.first_t >= self.config.velocity_settle_s
                                for s in states])
            # a young track's velocity is still its prior guess: its innovations say nothing about the boxes
            gated = settled & (_nis(m, p, z[rows], r[rows]) > INNOVATION_GATE_CHI2)
            mu, pu = _update(m, p, z[rows], r[rows])
            mean[rows] = np.where(gated[:, None], m, mu)
            cov[rows] = np.where(gated[:, None, None], p, pu)
            outlier[rows] = gated
        return mean, cov, outlier

    def _advance(self, ids: IntArray, z: F64, r: F64, mean: F64, cov: F64, outlier: BoolArray, shift: F64,
                 t_s: float) -> _Flags:
        """Store each track's new state (restarting one that jumped for good) and return its flags."""
        n = len(ids)
        heading = np.full((n, 2), np.nan)
        stationary = np.zeros(n, dtype=bool)
        valid = np.zeros(n, dtype=bool)
        consistent = np.ones(n, dtype=bool)
        age = np.zeros(n)
        yaw = np.zeros(n)
        for i in range(n):
            st = self._store(int(ids[i]), z[i], r[i], mean[i], cov[i], bool(outlier[i]), t_s)
            st_valid = self._motion(st, mean[i], t_s)
            if st.history is not None and not outlier[i]:
                st.history.append((t_s, float(mean[i, 0] + shift[i, 0]), float(mean[i, 1] + shift[i, 1])))
            valid[i] = st_valid
            stationary[i] = st.stationary and st_valid
            heading[i] = st.heading
            consistent[i] = t_s >= st.inconsistent_until
            age[i] = t_s - st.first_t
            yaw[i] = st.yaw_rate
        return _Flags(heading, stationary, valid, consistent, age, yaw)

    def _store(self, tid: int, z: F64, r: F64, mean: F64, cov: F64, outlier: bool, t_s: float) -> _TrackState:
        """Keep one track's new ``mean``/``cov`` (rows, changed in place on a restart) in its state."""
        cfg = self.config
        st = self._state.get(tid)
        if st is None:
            history: deque[tuple[float, float, float]] | None = (
                deque(maxlen=cfg.history_samples) if cfg.history_samples else None
            )
            st = _TrackState(mean.copy(), cov.copy(), first_t=t_s, last_t=t_s, history=history)
            self._state[tid] = st
        elif outlier and st.outliers_in_row + 1 >= _RESTART_AFTER_OUTLIERS:
            # the track jumped for good (an id passed to another road user, a box re-formed): restart
            mean[:2], mean[2:] = z, st.mean[2:]
            cov[:] = 0.0
            cov[:2, :2] = r
            cov[2, 2] = cov[3, 3] = INITIAL_SPEED_STD_MPS**2
            st.mean, st.cov = mean.copy(), cov.copy()
            st.first_t, st.last_t, st.observations, st.outliers_in_row = t_s, t_s, 1, 0
            st.inconsistent_until = t_s + cfg.consistency_hold_s
            if st.history is not None:
                st.history.clear()
        else:
            st.mean, st.cov = mean.copy(), cov.copy()
            st.last_t = max(st.last_t, t_s)
            if outlier:
                st.outliers_in_row += 1
                st.inconsistent_until = t_s + cfg.consistency_hold_s
            else:
                st.outliers_in_row = 0
                st.observations += 1
        return st

    def _motion(self, st: _TrackState, mean: F64, t_s: float) -> bool:
        """Update the stationary flag, heading and yaw rate of a settled track; return whether it is settled."""
        cfg = self.config
        speed = math.hypot(mean[2], mean[3])
        settled = st.observations >= _MIN_OBSERVATIONS and t_s - st.first_t >= cfg.velocity_settle_s
        if settled:
            if st.stationary and speed > cfg.stationary_exit_speed_mps:
                st.stationary = False
            elif not st.stationary and speed < cfg.stationary_enter_speed_mps:
                st.stationary = True
            if not st.stationary and speed > 0:
                heading = mean[2:] / speed
                st.yaw_rate = self._yaw_rate(st, heading, speed, t_s)
                st.heading = heading
            else:
                st.yaw_rate = 0.0
        return settled

    @staticmethod
    def _yaw_rate(st: _TrackState, heading: F64, speed_mps: float, t_s: float) -> float:
        """The track's smoothed yaw rate after its heading moved from ``st.heading`` to ``heading``."""
        dt = t_s - st.yaw_t if math.isfinite(st.yaw_t) else 0.0
        st.yaw_t = t_s
        if speed_mps < _YAW_MIN_SPEED_MPS or dt <= 0 or not np.isfinite(st.heading).all():
            return st.yaw_rate * math.exp(-dt / _YAW_TAU_S) if dt > 0 else st.yaw_rate
        turn = math.atan2(st.heading[0] * heading[1] - st.heading[1] * heading[0], float(st.heading @ heading))
        w = 1.0 - math.exp(-dt / _YAW_TAU_S)
        return float(np.clip((1 - w) * st.yaw_rate + w * turn / dt, -_YAW_MAX_RPS, _YAW_MAX_RPS))


def _observations(
    tracker_id: npt.ArrayLike, class_id: npt.ArrayLike, xy_m: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], F64]:
    """One frame's ids, classes and positions ``(N, 2)`` as arrays; refuses mismatched rows and repeated ids."""
    ids = np.asarray(tracker_id, dtype=np.int64).reshape(-1)
    classes = np.asarray(class_id, dtype=np.int64).reshape(-1)
    z = np.asarray(xy_m, dtype=np.float64).reshape(-1, 2)
    n = len(ids)
    if len(classes) != n or len(z) != n:
        raise ValueError(f"tracker_id, class_id and xy_m must have {n} rows, got {len(classes)} and {len(z)}")
    if len(set(ids.tolist())) != n:
        raise ValueError("tracker_id must not repeat within one frame")
    return ids, classes, z


def _largest_eigenvalue(cov: F64) -> F64:
    """Largest eigenvalue of each symmetric 2x2 matrix in ``(N,2,2)`` (closed form)."""
    a, b, d = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    out: F64 = (a + d) / 2 + np.sqrt(((a - d) / 2) ** 2 + b**2)
    return out


def _nis(mean: F64, cov: F64, z: F64, r: F64) -> F64:
    """Normalised innovation squared of position measurements ``z (N,2)`` against predictions."""
    s = cov[:, :2, :2] + r
    innovation = z - mean[:, :2]
    out: F64 = np.einsum("ni,nij,nj->n", innovation, np.linalg.inv(s), innovation)
    return out


def _predict(mean: F64, cov: F64, dt: F64, sigma_a: float) -> tuple[F64, F64]:
    """Constant-velocity prediction of ``(N,4)`` means and ``(N,4,4)`` covariances over ``dt (N,)`` seconds."""
    n = len(mean)
    f = np.tile(_EYE4, (n, 1, 1))
    f[:, 0, 2] = f[:, 1, 3] = dt
    q = np.zeros((n, 4, 4))
    q_pp, q_pv, q_vv = dt**4 / 4, dt**3 / 2, dt**2
    for a in (0, 1):  # x with vx, y with vy
        q[:, a, a] = q_pp
        q[:, a, a + 2] = q[:, a + 2, a] = q_pv
        q[:, a + 2, a + 2] = q_vv
    mean = np.einsum("nij,nj->ni", f, mean)
    cov = f @ cov @ f.transpose(0, 2, 1) + sigma_a**2 * q
    return mean, cov


def _update(mean: F64, cov: F64, z: F64, r: F64) -> tuple[F64, F64]:
    """Kalman update with position measurements ``z (N,2)`` of covariance ``r (N,2,2)`` (Joseph form)."""
    s = cov[:, :2, :2] + r
    gain = cov[:, :, :2] @ np.linalg.inv(s)  # (N,4,2)
    innovation = z - mean[:, :2]
    mean = mean + np.einsum("nij,nj->ni", gain, innovation)
    i_kh = np.tile(_EYE4, (len(cov), 1, 1))
    i_kh[:, :, :2] -= gain
    cov = i_kh @ cov @ i_kh.transpose(0, 2, 1) + gain @ r @ gain.transpose(0, 2, 1)
    return mean, cov
