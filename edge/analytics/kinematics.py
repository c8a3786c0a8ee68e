"""Per-track ground-plane state: smoothed position, velocity, speed, heading and a stationary flag.

Each track's ground contact point (the bottom-centre of its box, see ``Tracks.anchors``) is mapped to the
ground plane through the camera's :class:`~edge.geometry.Calibration` and filtered by a small Kalman filter
per track, in metres and seconds:

* state ``(x, y, vx, vy)``, constant-velocity model; time steps come from the frames' ``t_s``, so
  irregular frame intervals and frames where a track was not matched (it is lost, then found again)
  are handled by predicting over the real gap;
* process noise: an acceleration held constant over each step, zero-mean with standard deviation
  ``acceleration_noise_mps2`` (the discrete white noise acceleration model of Bar-Shalom, Li and
  Kirubarajan, 2001, *Estimation with Applications to Tracking and Navigation*, ch. 6): per axis
  ``Q = sigma_a^2 [[dt^4/4, dt^3/2], [dt^3/2, dt^2]]``;
* measurement noise: ``measurement_noise_px`` in the image, mapped to the ground by the homography's
  Jacobian at the point (``R = J diag(sigma^2) J^T``). One pixel is ~1 cm near the camera and tens of
  centimetres far away, so far road users are smoothed more, as they should be;
* a new track starts at its first position with zero velocity and a wide velocity uncertainty
  (``INITIAL_SPEED_STD_MPS``); its speed and heading are flagged ``valid`` once it has been observed for
  ``velocity_settle_s`` and at least 3 times.

Heading is the direction of the filtered velocity while the track moves; a stationary road user keeps the
heading it last moved with (a car does not turn on the spot), and one never seen moving has heading NaN.
``stationary`` has hysteresis: it is entered below ``stationary_enter_speed_mps`` and left above
``stationary_exit_speed_mps``. The filter's speed at a standstill is a positive number (the norm of a noisy
zero vector), so the enter threshold must sit above that noise.

Known limits: the bottom-centre of a box is the ground point nearest the camera, not the footprint's centre
(a car seen from behind is displaced by about half its length toward the camera); speeds are unaffected
while the view angle changes slowly. A box cut by the image edge or an occluder moves its bottom-centre;
there is no outlier gate, so such a jump shows as a short speed spike.

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
_LENGTHS: Final = np.array([FOOTPRINT_SIZES[c].length_m for c in ROAD_USER_CLASSES])
_WIDTHS: Final = np.array([FOOTPRINT_SIZES[c].width_m for c in ROAD_USER_CLASSES])


def _check(name: str, arr: np.ndarray, shape: tuple[int, ...]) -> None:
    if arr.shape != shape:
        raise ValueError(f"GroundTracks.{name} must have shape {shape}, got {arr.shape}")


@dataclass(frozen=True, slots=True)
class GroundTracks:
    """Ground-plane state of the tracks observed on one frame, as parallel arrays (row ``i`` = one track).

    ``xy_m (N,2)`` filtered position in the calibration's local ground frame (metres), ``velocity_mps
    (N,2)``, ``speed_mps (N,)`` its norm, ``heading (N,2)`` unit vector (NaN when the track never moved),
    ``stationary (N,)`` with hysteresis, ``valid (N,)`` true once the velocity has settled (speed, heading
    and ``stationary`` mean nothing before), ``length_m``/``width_m (N,)`` the class's typical footprint
    (:data:`FOOTPRINT_SIZES`). Internal only: tracker ids and positions never leave the device.
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

    def __post_init__(self) -> None:
        n = len(self.tracker_id)
        for name in ("tracker_id", "class_id", "speed_mps", "stationary", "valid", "length_m", "width_m"):
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
        return cls(t_s, zi, zi.copy(), z2, z2.copy(), z2.copy(), z1, zb, zb.copy(), z1.copy(), z1.copy())

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

    def update(self, tracks: Tracks, t_s: float) -> GroundTracks:
        """Map the tracks' bottom-centres to the ground and filter them; frees state of ``tracks.ended_ids``.

        Tracks whose bottom-centre is at or above the horizon (no ground position) are left out.
        """
        if self.calibration is None:
            raise ValueError("GroundKinematics.update needs a calibration; use update_ground for ground positions")
        anchors = tracks.anchors().astype(np.float64)
        xy = self.calibration.image_to_ground(anchors)
        jac = self.calibration.jacobian(anchors)
        ok = np.isfinite(xy).all(axis=1) & np.isfinite(jac).all(axis=(1, 2))
        sigma2 = self.config.measurement_noise_px**2
        cov = sigma2 * jac[ok] @ jac[ok].transpose(0, 2, 1)
        return self.update_ground(
            tracks.tracker_id[ok], tracks.class_id[ok], xy[ok], t_s, tracks.ended_ids, measurement_cov=cov
        )

    def update_ground(
        self,
        tracker_id: npt.ArrayLike,
        class_id: npt.ArrayLike,
        xy_m: npt.ArrayLike,
        t_s: float,
        ended_ids: Sequence[int] = (),
        measurement_cov: F64 | None = None,
    ) -> GroundTracks:
        """Filter ground positions ``xy_m (N,2)`` of tracks ``tracker_id (N,)`` observed at ``t_s``.

        ``measurement_cov (N,2,2)`` is each position's noise covariance (m^2); default isotropic
        ``measurement_noise_m``. A time step <= 0 (a repeated time stamp) updates without predicting.
        """
        for tid in ended_ids:
            self._state.pop(int(tid), None)
        ids = np.asarray(tracker_id, dtype=np.int64).reshape(-1)
        classes = np.asarray(class_id, dtype=np.int64).reshape(-1)
        z = np.asarray(xy_m, dtype=np.float64).reshape(-1, 2)
        n = len(ids)
        if len(classes) != n or len(z) != n:
            raise ValueError(f"tracker_id, class_id and xy_m must have {n} rows, got {len(classes)} and {len(z)}")
        if len(set(ids.tolist())) != n:
            raise ValueError("tracker_id must not repeat within one frame")
        if n == 0:
            return GroundTracks.empty(t_s)
        floor = _MEASUREMENT_FLOOR_M**2 * _EYE2
        if measurement_cov is None:
            r = np.tile((self.measurement_noise_m**2) * _EYE2 + floor, (n, 1, 1))
        else:
            r = np.asarray(measurement_cov, dtype=np.float64).reshape(n, 2, 2) + floor

        known = np.array([int(i) in self._state for i in ids], dtype=bool)
        mean = np.zeros((n, 4))
        cov = np.zeros((n, 4, 4))
        # New tracks: at the measurement, at rest, with a wide velocity prior.
        new = ~known
        mean[new, :2] = z[new]
        cov[new, :2, :2] = r[new]
        cov[new, 2, 2] = cov[new, 3, 3] = INITIAL_SPEED_STD_MPS**2
        # Known tracks: predict over the real time step, then update with the measurement.
        if known.any():
            rows = np.flatnonzero(known)
            states = [self._state[int(ids[i])] for i in rows]
            m = np.stack([s.mean for s in states])
            p = np.stack([s.cov for s in states])
            dt = np.maximum(np.array([t_s - s.last_t for s in states]), 0.0)
            m, p = _predict(m, p, dt, self.config.acceleration_noise_mps2)
            mean[rows], cov[rows] = _update(m, p, z[rows], r[rows])

        cfg = self.config
        speed = np.hypot(mean[:, 2], mean[:, 3])
        heading = np.full((n, 2), np.nan)
        stationary = np.zeros(n, dtype=bool)
        valid = np.zeros(n, dtype=bool)
        for i in range(n):
            tid = int(ids[i])
            st = self._state.get(tid)
            if st is None:
                history: deque[tuple[float, float, float]] | None = (
                    deque(maxlen=cfg.history_samples) if cfg.history_samples else None
                )
                st = _TrackState(mean[i].copy(), cov[i].copy(), first_t=t_s, last_t=t_s, history=history)
                self._state[tid] = st
            else:
                st.mean, st.cov = mean[i].copy(), cov[i].copy()
                st.last_t = max(st.last_t, t_s)
                st.observations += 1
            st_valid = st.observations >= _MIN_OBSERVATIONS and t_s - st.first_t >= cfg.velocity_settle_s
            if st_valid:
                if st.stationary and speed[i] > cfg.stationary_exit_speed_mps:
                    st.stationary = False
                elif not st.stationary and speed[i] < cfg.stationary_enter_speed_mps:
                    st.stationary = True
                if not st.stationary and speed[i] > 0:
                    st.heading = mean[i, 2:] / speed[i]
            if st.history is not None:
                st.history.append((t_s, float(mean[i, 0]), float(mean[i, 1])))
            valid[i] = st_valid
            stationary[i] = st.stationary and st_valid
            heading[i] = st.heading
        class_idx = np.clip(classes, 0, len(ROAD_USER_CLASSES) - 1)
        return GroundTracks(
            t_s=t_s,
            tracker_id=ids.copy(),
            class_id=classes.copy(),
            xy_m=mean[:, :2].copy(),
            velocity_mps=mean[:, 2:].copy(),
            heading=heading,
            speed_mps=speed,
            stationary=stationary,
            valid=valid,
            length_m=_LENGTHS[class_idx],
            width_m=_WIDTHS[class_idx],
        )


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
