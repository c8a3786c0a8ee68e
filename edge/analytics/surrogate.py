"""Surrogate safety measures on the ground plane: TTC, DRAC, PET and the SSAM conflict type.

Everything here is pure numpy/math, in metres and seconds, on a calibrated ground plane (see
docs/DESIGN.md, "Ground plane and near-miss"). The plane may be local or UTM; any right-handed or
left-handed orientation works, because only distances, overlaps and unsigned angles are used.

Definitions and sources
-----------------------
TTC, time to collision (Hayward, J. C., 1972. *Near-miss determination through use of a scale of
    danger.* Highway Research Record 384, 24-34): the time until two road users collide if both keep
    their current velocity. In 2-D (as in SSMsOnPlane, Jiao et al., https://github.com/Yiru-Jiao/
    SSMsOnPlane, ``longitudinal_ssms.TTC``): the first future time at which the two footprints overlap,
    both translating at constant velocity with fixed headings. Computed exactly by the separating-axis
    theorem (SAT), not by time stepping: two convex polygons overlap iff their projections overlap on
    every edge normal; in relative motion each projection overlap is an open time interval, and the
    collision interval is the intersection of those intervals over the 4 axes of two rectangles.
DRAC, deceleration rate to avoid the crash (Cooper, D. F. and Ferguson, N., 1976. *Traffic studies at
    T-junctions - a conflict simulation model.* Traffic Engineering and Control 17(7), 306-309):
    ``dv**2 / (2 * d)`` with, following SSMsOnPlane, ``dv = |v_a - v_b|`` the norm of the *relative
    velocity vector* and ``d`` the distance the footprints travel relative to each other until first
    contact (``dv * TTC``), so ``DRAC = dv / (2 * TTC)``. It is the constant relative deceleration that
    brings the relative velocity to zero exactly at contact.
PET, post-encroachment time (Allen, B. L., Shin, B. T. and Cooper, P. J., 1978. *Analysis of traffic
    conflicts and collisions.* Transportation Research Record 667, 67-74): for two paths that cross,
    the time from the first road user leaving the shared (conflict) area to the second one entering it.
Conflict type (FHWA SSAM v2: Gettman, D., Pu, L., Sayed, T. and Shelby, S., 2008. *Surrogate Safety
    Assessment Model and Validation: Final Report.* FHWA-HRT-08-051): by the angle between the headings,
    rear-end below 30 deg, crossing above 85 deg, lane change (here "angled") in between.

Conventions (the same as the SSMsOnPlane reference values in
``../shared/trajectories/highd-pairs-ssm/samples_with_reference_ssms.csv``):

* TTC is ``math.inf`` when the footprints never overlap at current velocities (or only after
  ``horizon_s``), and ``-1.0`` when they already overlap at t = 0.
* DRAC is ``0.0`` when not on a collision course (within the horizon), ``-1.0`` when overlapping.
* Footprints are open sets: touching edges are not an overlap, so two boxes closing at 1 m/s from 1 m
  apart have TTC 1.0 s, and boxes sliding along each other's sides never collide.

Footprints
----------
A vehicle is a :class:`Footprint`: an oriented rectangle (centre, unit heading, length along the
heading, width across it). A pedestrian is a :class:`Disc`: people are nearly round seen from above
(0.5-0.7 m across) and their heading from a tracker at walking speed is noise, so a disc keeps TTC
independent of a heading we do not know. Disc-rectangle TTC is also exact: the disc centre moving
against the rectangle inflated by the radius (a rounded rectangle, the Minkowski sum), which is the
union of two axis-aligned slabs and four corner circles.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from edge.types import F64

__all__ = [
    "CROSSING_MIN_ANGLE_DEG",
    "REAR_END_MAX_ANGLE_DEG",
    "ConflictType",
    "Disc",
    "Footprint",
    "Footprints",
    "Shape",
    "Vec2",
    "conflict_type",
    "drac_batch",
    "drac_mps2",
    "heading_angle_deg",
    "pet_s",
    "ttc_batch",
    "ttc_s",
]

#: A 2-D vector (velocity in m/s, heading, position in m) as plain floats.
Vec2 = tuple[float, float]
ConflictType = Literal["rear_end", "crossing", "angled"]

#: FHWA SSAM v2 (Gettman et al. 2008): heading angle below this is a rear-end conflict.
REAR_END_MAX_ANGLE_DEG: Final = 30.0
#: FHWA SSAM v2: heading angle above this is a crossing conflict (head-on included, 180 deg).
CROSSING_MIN_ANGLE_DEG: Final = 85.0

_OVERLAPPING: Final = -1.0


def _positive(value: float, name: str) -> None:
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{name} must be a finite number > 0 (metres), got {value!r}")


@dataclass(frozen=True, slots=True)
class Footprint:
    """An oriented rectangle on the ground plane: a vehicle's footprint.

    ``(x_m, y_m)`` is the centre (centroid), ``(heading_x, heading_y)`` the direction the vehicle faces.
    The heading is normalised on construction, so any non-zero vector will do. ``length_m`` runs along
    the heading, ``width_m`` across it.
    """

    x_m: float
    y_m: float
    heading_x: float
    heading_y: float
    length_m: float
    width_m: float

    def __post_init__(self) -> None:
        _positive(self.length_m, "Footprint.length_m")
        _positive(self.width_m, "Footprint.width_m")
        norm = math.hypot(self.heading_x, self.heading_y)
        if not (math.isfinite(norm) and norm > 0.0):
            raise ValueError(
                f"Footprint heading must be a finite non-zero vector, got ({self.heading_x!r}, "
                f"{self.heading_y!r}); pass the direction the road user faces, e.g. its unit velocity"
            )
        object.__setattr__(self, "heading_x", self.heading_x / norm)
        object.__setattr__(self, "heading_y", self.heading_y / norm)

    def corners(self) -> F64:
        """The 4 corners, shape ``(4, 2)``, metres.

        Order: front-left, rear-left, rear-right, front-right, where "left" is the heading rotated by
        +90 deg; that is counter-clockwise in a y-up frame (clockwise on a y-down image).
        """
        hx, hy = self.heading_x, self.heading_y
        fx, fy = hx * self.length_m / 2.0, hy * self.length_m / 2.0  # centre -> front
        lx, ly = -hy * self.width_m / 2.0, hx * self.width_m / 2.0  # centre -> left side
        offsets = np.array(
            [(fx + lx, fy + ly), (-fx + lx, -fy + ly), (-fx - lx, -fy - ly), (fx - lx, fy - ly)],
            dtype=np.float64,
        )
        return offsets + np.array([self.x_m, self.y_m], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Disc:
    """A disc on the ground plane: a pedestrian's footprint (centre and radius, metres)."""

    x_m: float
    y_m: float
    radius_m: float

    def __post_init__(self) -> None:
        _positive(self.radius_m, "Disc.radius_m")


#: Any footprint :func:`ttc_s` and :func:`drac_mps2` accept.
Shape = Footprint | Disc


@dataclass(frozen=True, slots=True)
class Footprints:
    """N oriented rectangles as parallel arrays, for the vectorised :func:`ttc_batch` / :func:`drac_batch`.

    ``xy_m`` ``(N, 2)`` centres, ``heading`` ``(N, 2)`` facing directions (normalised on construction),
    ``length_m`` and ``width_m`` ``(N,)``. Row ``i`` of every array is the same road user.
    """

    xy_m: F64
    heading: F64
    length_m: F64
    width_m: F64

    def __post_init__(self) -> None:
        xy = np.asarray(self.xy_m, dtype=np.float64)
        heading = np.asarray(self.heading, dtype=np.float64)
        length = np.asarray(self.length_m, dtype=np.float64)
        width = np.asarray(self.width_m, dtype=np.float64)
        if xy.ndim != 2 or xy.shape[1] != 2:
            raise ValueError(f"Footprints.xy_m must have shape (N, 2), got {xy.shape}")
        n = xy.shape[0]
        if heading.shape != (n, 2):
            raise ValueError(f"Footprints.heading must have shape ({n}, 2) like xy_m, got {heading.shape}")
        for name, arr in (("length_m", length), ("width_m", width)):
            if arr.shape != (n,):
                raise ValueError(f"Footprints.{name} must have shape ({n},) like xy_m, got {arr.shape}")
            if not np.all(np.isfinite(arr) & (arr > 0.0)):
                raise ValueError(f"Footprints.{name} must be finite and > 0 (metres) in every row")
        norm = np.hypot(heading[:, 0], heading[:, 1])
        if not np.all(np.isfinite(norm) & (norm > 0.0)):
            raise ValueError("Footprints.heading must be a finite non-zero vector in every row")
        object.__setattr__(self, "xy_m", xy)
        object.__setattr__(self, "heading", heading / norm[:, None])
        object.__setattr__(self, "length_m", length)
        object.__setattr__(self, "width_m", width)

    def __len__(self) -> int:
        return int(self.xy_m.shape[0])

    @classmethod
    def of(cls, footprints: Sequence[Footprint]) -> Footprints:
        """Stack single footprints into parallel arrays."""
        return cls(
            xy_m=np.array([(f.x_m, f.y_m) for f in footprints], dtype=np.float64).reshape(-1, 2),
            heading=np.array([(f.heading_x, f.heading_y) for f in footprints], dtype=np.float64).reshape(
                -1, 2
            ),
            length_m=np.array([f.length_m for f in footprints], dtype=np.float64),
            width_m=np.array([f.width_m for f in footprints], dtype=np.float64),
        )


# --------------------------------------------------------------------------------------------------
# Overlap intervals. Each returns the open time interval (lo, hi) during which the two footprints
# overlap when both keep their velocities; an empty interval has lo >= hi. TTC and DRAC are read off it.
# --------------------------------------------------------------------------------------------------


def _slab_interval(d: F64, w: F64, r: F64) -> tuple[F64, F64]:
    """Times at which ``|d + w t| < r`` (1-D projections overlapping), elementwise.

    ``d`` is the separation of the centres on the axis, ``w`` its rate of change, ``r`` the sum of the
    projected half extents. With ``w == 0`` the interval is all time or empty.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-r - d) / w
        t2 = (r - d) / w
    lo = np.minimum(t1, t2)
    hi = np.maximum(t1, t2)
    still = w == 0.0
    inside = np.abs(d) < r
    lo = np.where(still, np.where(inside, -np.inf, np.inf), lo)
    hi = np.where(still, np.where(inside, np.inf, -np.inf), hi)
    return lo, hi


def _rect_rect_interval(a: Footprints, va: F64, b: Footprints, vb: F64) -> tuple[F64, F64]:
    """Collision interval of N rectangle pairs by the separating-axis theorem, vectorised.

    The candidate separating axes of two rectangles are their 4 edge normals: each one's heading and
    the heading's perpendicular. On axis ``n`` a rectangle with unit heading ``u``, half length ``l``
    and half width ``w`` projects to a half extent ``l |u.n| + w |u_perp.n|``.
    """
    ua, ub = a.heading, b.heading
    pa = np.stack([-ua[:, 1], ua[:, 0]], axis=1)
    pb = np.stack([-ub[:, 1], ub[:, 0]], axis=1)
    la, wa = a.length_m / 2.0, a.width_m / 2.0
    lb, wb = b.length_m / 2.0, b.width_m / 2.0
    d = b.xy_m - a.xy_m
    w = vb - va
    lo = np.full(len(a), -np.inf)
    hi = np.full(len(a), np.inf)
    for n in (ua, pa, ub, pb):
        r = (
            la * np.abs(np.einsum("ij,ij->i", ua, n))
            + wa * np.abs(np.einsum("ij,ij->i", pa, n))
            + lb * np.abs(np.einsum("ij,ij->i", ub, n))
            + wb * np.abs(np.einsum("ij,ij->i", pb, n))
        )
        axis_lo, axis_hi = _slab_interval(np.einsum("ij,ij->i", d, n), np.einsum("ij,ij->i", w, n), r)
        lo = np.maximum(lo, axis_lo)
        hi = np.minimum(hi, axis_hi)
    return lo, hi


def _disc_interval(qx: float, qy: float, wx: float, wy: float, r: float) -> tuple[float, float]:
    """Times at which the point ``q + w t`` is strictly inside the circle of radius ``r`` at the origin."""
    a = wx * wx + wy * wy
    b = qx * wx + qy * wy
    c = qx * qx + qy * qy - r * r
    if a == 0.0:
        return (-math.inf, math.inf) if c < 0.0 else (math.inf, -math.inf)
    disc = b * b - a * c
    if disc <= 0.0:
        return math.inf, -math.inf
    root = math.sqrt(disc)
    return (-b - root) / a, (-b + root) / a


def _scalar_slab(d: float, w: float, r: float) -> tuple[float, float]:
    if w == 0.0:
        return (-math.inf, math.inf) if abs(d) < r else (math.inf, -math.inf)
    t1, t2 = (-r - d) / w, (r - d) / w
    return min(t1, t2), max(t1, t2)


def _box_interval(qx: float, qy: float, wx: float, wy: float, hx: float, hy: float) -> tuple[float, float]:
    """Times at which ``q + w t`` is strictly inside the axis-aligned box ``|x| < hx, |y| < hy``."""
    x_lo, x_hi = _scalar_slab(qx, wx, hx)
    y_lo, y_hi = _scalar_slab(qy, wy, hy)
    return max(x_lo, y_lo), min(x_hi, y_hi)


def _disc_rect_interval(disc: Disc, vd: Vec2, rect: Footprint, vr: Vec2) -> tuple[float, float]:
    """Exact collision interval of a disc and a rectangle.

    In the rectangle's frame the disc centre moves on a straight line against the rectangle inflated by
    the radius: the union of two slabs (inflated along the length, and across the width) and four
    circles at the corners. That union is convex, so the times the line spends inside it form one
    interval: from the earliest entry into any part to the latest exit from any part.
    """
    ux, uy = rect.heading_x, rect.heading_y
    dx, dy = disc.x_m - rect.x_m, disc.y_m - rect.y_m
    wx, wy = vd[0] - vr[0], vd[1] - vr[1]
    # rectangle frame: first coordinate along the heading, second along the left perpendicular (-uy, ux)
    qx, qy = dx * ux + dy * uy, -dx * uy + dy * ux
    sx, sy = wx * ux + wy * uy, -wx * uy + wy * ux
    hl, hw, r = rect.length_m / 2.0, rect.width_m / 2.0, disc.radius_m
    parts = [_box_interval(qx, qy, sx, sy, hl + r, hw), _box_interval(qx, qy, sx, sy, hl, hw + r)]
    parts += [_disc_interval(qx - cx, qy - cy, sx, sy, r) for cx in (hl, -hl) for cy in (hw, -hw)]
    parts = [(lo, hi) for lo, hi in parts if lo < hi]
    if not parts:
        return math.inf, -math.inf
    return min(lo for lo, _ in parts), max(hi for _, hi in parts)


def _interval(a: Shape, va: Vec2, b: Shape, vb: Vec2) -> tuple[float, float]:
    if isinstance(a, Footprint) and isinstance(b, Footprint):
        lo, hi = _rect_rect_interval(
            Footprints.of([a]),
            np.array([va], dtype=np.float64),
            Footprints.of([b]),
            np.array([vb], dtype=np.float64),
        )
        return float(lo[0]), float(hi[0])
    if isinstance(a, Disc) and isinstance(b, Disc):
        return _disc_interval(
            b.x_m - a.x_m, b.y_m - a.y_m, vb[0] - va[0], vb[1] - va[1], a.radius_m + b.radius_m
        )
    if isinstance(a, Disc) and isinstance(b, Footprint):
        return _disc_rect_interval(a, va, b, vb)
    if isinstance(a, Footprint) and isinstance(b, Disc):
        return _disc_rect_interval(b, vb, a, va)
    raise TypeError(f"footprints must be Footprint or Disc, got {type(a).__name__} and {type(b).__name__}")


def _ttc_from_interval(lo: F64, hi: F64, horizon_s: float) -> F64:
    """TTC from collision intervals: -1 if overlapping now, inf if never (in the future, within horizon)."""
    never = (lo >= hi) | (hi <= 0.0) | (lo > horizon_s)
    # "+ 0.0" turns a -0.0 (touching now) into 0.0, so DRAC = dv / (2 * 0.0) is +inf
    return np.where(never, np.inf, np.where(lo < 0.0, _OVERLAPPING, lo + 0.0))


def _drac_from_ttc(ttc: F64, va: F64, vb: F64) -> F64:
    dv = np.hypot(va[..., 0] - vb[..., 0], va[..., 1] - vb[..., 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        # dv**2 / (2 * dv * ttc); ttc == 0 (touching now and closing) gives inf, as it should
        drac = dv / (2.0 * ttc)
    return np.where(np.isinf(ttc), 0.0, np.where(ttc < 0.0, _OVERLAPPING, drac))


def _check_horizon(horizon_s: float) -> None:
    if not horizon_s > 0.0:  # also refuses NaN
        raise ValueError(f"horizon_s must be > 0 seconds (math.inf for none), got {horizon_s!r}")


def ttc_s(a: Shape, va: Vec2, b: Shape, vb: Vec2, horizon_s: float = math.inf) -> float:
    """2-D time to collision in seconds (Hayward 1972, extended to oriented footprints).

    ``va``/``vb`` are ground-plane velocities in m/s. Both footprints translate at constant velocity;
    headings stay fixed (no yaw). Returns the first future time at which the footprints overlap,
    ``0.0`` if they touch now and are closing, ``-1.0`` if they overlap now, and ``math.inf`` if they
    never overlap or only after ``horizon_s``. Exact (closed form), see the module docstring.
    """
    _check_horizon(horizon_s)
    lo, hi = _interval(a, va, b, vb)
    return float(_ttc_from_interval(np.array([lo]), np.array([hi]), horizon_s)[0])


def drac_mps2(a: Shape, va: Vec2, b: Shape, vb: Vec2, horizon_s: float = math.inf) -> float:
    """Deceleration rate to avoid the crash in m/s^2 (Cooper and Ferguson 1976), as in SSMsOnPlane.

    ``DRAC = dv**2 / (2 * DTC)`` with ``dv = |va - vb|`` (norm of the relative velocity vector, not the
    difference of speeds) and ``DTC = dv * TTC`` the relative distance travelled until first contact,
    i.e. ``dv / (2 * TTC)``. ``0.0`` when not on a collision course (``ttc_s`` is inf), ``-1.0`` when
    the footprints overlap now, ``math.inf`` when they touch now and are closing.
    """
    ttc = ttc_s(a, va, b, vb, horizon_s)
    return float(
        _drac_from_ttc(np.array([ttc]), np.array([va], dtype=np.float64), np.array([vb], dtype=np.float64))[0]
    )


def _velocities(v: npt.ArrayLike, n: int, name: str) -> F64:
    arr = np.asarray(v, dtype=np.float64)
    if arr.shape != (n, 2):
        raise ValueError(f"{name} must have shape ({n}, 2) (m/s, one row per footprint), got {arr.shape}")
    return arr


def ttc_batch(
    a: Footprints, va: npt.ArrayLike, b: Footprints, vb: npt.ArrayLike, horizon_s: float = math.inf
) -> F64:
    """:func:`ttc_s` for N rectangle pairs at once: row ``i`` of ``a``, ``va`` against that of ``b``, ``vb``.

    ``va``, ``vb`` have shape ``(N, 2)`` (m/s). Returns ``(N,)`` float64 with the same conventions.
    """
    _check_horizon(horizon_s)
    if len(a) != len(b):
        raise ValueError(f"a and b must hold the same number of footprints, got {len(a)} and {len(b)}")
    va_arr, vb_arr = _velocities(va, len(a), "va"), _velocities(vb, len(b), "vb")
    lo, hi = _rect_rect_interval(a, va_arr, b, vb_arr)
    return _ttc_from_interval(lo, hi, horizon_s)


def drac_batch(
    a: Footprints, va: npt.ArrayLike, b: Footprints, vb: npt.ArrayLike, horizon_s: float = math.inf
) -> F64:
    """:func:`drac_mps2` for N rectangle pairs at once; shapes as in :func:`ttc_batch`."""
    ttc = ttc_batch(a, va, b, vb, horizon_s)
    return _drac_from_ttc(ttc, _velocities(va, len(a), "va"), _velocities(vb, len(b), "vb"))


# --------------------------------------------------------------------------------------------------
# PET
# --------------------------------------------------------------------------------------------------


def _track(track: npt.ArrayLike, name: str) -> tuple[F64, F64]:
    arr = np.asarray(track, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.shape[0] < 2:
        raise ValueError(f"{name} must have shape (N >= 2, 3) with columns t_s, x_m, y_m, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (drop or interpolate missing samples first)")
    if not np.all(np.diff(arr[:, 0]) > 0.0):
        raise ValueError(f"{name} times (column 0) must be strictly increasing")
    return arr[:, 0], arr[:, 1:]


def _first_crossing(pa: F64, pb: F64) -> tuple[int, float, int, float] | None:
    """First proper crossing of two polylines, as (segment of a, fraction along it, segment of b, fraction).

    All segment pairs are tested at once; "first" is the earliest point along path ``a``. Parallel and
    zero-length segments never count as crossing (a collinear overlap is a following, not a crossing).
    """
    p0, r = pa[:-1], np.diff(pa, axis=0)  # (n, 2)
    q0, s = pb[:-1], np.diff(pb, axis=0)  # (m, 2)
    qp = q0[None, :, :] - p0[:, None, :]  # (n, m, 2)
    denom = r[:, None, 0] * s[None, :, 1] - r[:, None, 1] * s[None, :, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = (qp[..., 0] * s[None, :, 1] - qp[..., 1] * s[None, :, 0]) / denom  # along a
        v = (qp[..., 0] * r[:, None, 1] - qp[..., 1] * r[:, None, 0]) / denom  # along b
    hit = (denom != 0.0) & (u >= 0.0) & (u <= 1.0) & (v >= 0.0) & (v <= 1.0)
    if not hit.any():
        return None
    ii, jj = np.nonzero(hit)
    k = int(np.argmin(ii + u[ii, jj]))
    i, j = int(ii[k]), int(jj[k])
    return i, float(u[i, j]), j, float(v[i, j])


def _time_at_arclength(t: F64, s: F64, target: float) -> float | None:
    """First time the cumulative path length ``s`` reaches ``target``; None if outside the track."""
    if target < 0.0 or target > s[-1]:
        return None
    k = int(np.searchsorted(s, target, side="left"))
    if k == 0:
        return float(t[0])
    frac = (target - s[k - 1]) / (s[k] - s[k - 1])  # s[k-1] < target <= s[k], so no zero division
    return float(t[k - 1] + frac * (t[k] - t[k - 1]))


def _conflict_half_lengths(
    seg_a: F64, seg_b: F64, size_a_m: tuple[float, float], size_b_m: tuple[float, float]
) -> tuple[float, float]:
    """How far from the crossing point each centre is while its footprint overlaps the conflict area (see
    ``pet_s``): ``length / 2 + other_width / (2 sin theta) + width * |cot theta| / 2``."""
    norm = float(np.hypot(*seg_a)) * float(np.hypot(*seg_b))
    cos = abs(float(seg_a @ seg_b)) / norm
    sin = abs(float(seg_a[0] * seg_b[1] - seg_a[1] * seg_b[0])) / norm
    (length_a, width_a), (length_b, width_b) = size_a_m, size_b_m
    half_a = length_a / 2.0 + width_b / (2.0 * sin) + width_a * cos / (2.0 * sin)
    half_b = length_b / 2.0 + width_a / (2.0 * sin) + width_b * cos / (2.0 * sin)
    return half_a, half_b


def pet_s(
    track_a: npt.ArrayLike,
    track_b: npt.ArrayLike,
    *,
    size_a_m: tuple[float, float],
    size_b_m: tuple[float, float],
) -> float | None:
    """Post-encroachment time in seconds (Allen et al. 1978) of two observed paths that cross.

    ``track_a``/``track_b``: arrays ``(N, 3)`` of ``t_s, x_m, y_m`` (centre positions, strictly
    increasing time, one shared clock). ``size_*_m``: ``(length_m, width_m)`` of each footprint; pass a
    pedestrian as a square ``(diameter, diameter)`` (a slight over-estimate of a disc).

    Approximation: the paths cross where the two polylines first intersect (earliest along ``a``).
    Near that point each path is taken as straight, along its crossing segment, with the footprint
    facing along it. Each road user sweeps a corridor as wide as itself; the conflict area is the
    intersection of the two corridors (a parallelogram at the crossing angle ``theta``). A rectangle
    overlaps the conflict area exactly while its centre is within

        ``h = length / 2 + other_width / (2 sin theta) + width * |cot theta| / 2``

    of the crossing point along its path (its footprint projected on the other corridor's normal). At
    90 deg that is ``length / 2 + other_width / 2``. Entry and exit times are interpolated linearly on
    path length between samples. For straight paths at constant heading this is exact; on curved paths
    it is as good as the straight-line approximation over a few metres.

    Returns ``later entry - earlier exit``, clamped at 0.0 when both were in the conflict area at the
    same time (the footprints *may* have touched). Returns None when the paths do not cross, or when a
    track does not cover its road user's whole passage through the conflict area (started inside it or
    ended before leaving). Near-parallel crossings make the conflict area very long; PET is then rarely
    observable and TTC is the better measure (rear-end and lane-change conflicts).
    """
    ta, pa = _track(track_a, "track_a")
    tb, pb = _track(track_b, "track_b")
    for name, size in (("size_a_m", size_a_m), ("size_b_m", size_b_m)):
        _positive(size[0], f"{name}[0] (length)")
        _positive(size[1], f"{name}[1] (width)")
    crossing = _first_crossing(pa, pb)
    if crossing is None:
        return None
    i, u, j, v = crossing
    seg_a, seg_b = pa[i + 1] - pa[i], pb[j + 1] - pb[j]
    len_a, len_b = float(np.hypot(*seg_a)), float(np.hypot(*seg_b))
    half_a, half_b = _conflict_half_lengths(seg_a, seg_b, size_a_m, size_b_m)
    s_a = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pa, axis=0).T))])
    s_b = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(pb, axis=0).T))])
    at_a = float(s_a[i]) + u * len_a
    at_b = float(s_b[j]) + v * len_b
    times = (
        _time_at_arclength(ta, s_a, at_a - half_a),
        _time_at_arclength(ta, s_a, at_a + half_a),
        _time_at_arclength(tb, s_b, at_b - half_b),
        _time_at_arclength(tb, s_b, at_b + half_b),
    )
    enter_a, exit_a, enter_b, exit_b = times
    if enter_a is None or exit_a is None or enter_b is None or exit_b is None:
        return None
    return max(0.0, max(enter_a, enter_b) - min(exit_a, exit_b))


# --------------------------------------------------------------------------------------------------
# Conflict type
# --------------------------------------------------------------------------------------------------


def heading_angle_deg(heading_a: Vec2, heading_b: Vec2) -> float:
    """Unsigned angle between two heading vectors, degrees in [0, 180] (rounded to 1e-9 deg)."""
    for name, h in (("heading_a", heading_a), ("heading_b", heading_b)):
        if not (math.isfinite(h[0]) and math.isfinite(h[1])) or (h[0] == 0.0 and h[1] == 0.0):
            raise ValueError(f"{name} must be a finite non-zero vector, got {h!r}")
    cross = heading_a[0] * heading_b[1] - heading_a[1] * heading_b[0]
    dot = heading_a[0] * heading_b[0] + heading_a[1] * heading_b[1]
    # rounding makes the thresholds exact for headings built from cos/sin of 30 or 85 deg
    return round(math.degrees(abs(math.atan2(cross, dot))), 9)


def conflict_type(heading_a: Vec2, heading_b: Vec2) -> ConflictType:
    """FHWA SSAM v2 conflict type from the angle between the headings (Gettman et al. 2008).

    ``"rear_end"`` below 30 deg, ``"crossing"`` above 85 deg (SSAM has no head-on class: opposite
    directions, 180 deg, are crossing), ``"angled"`` (SSAM's lane change) from 30 to 85 deg inclusive.
    """
    angle = heading_angle_deg(heading_a, heading_b)
    if angle < REAR_END_MAX_ANGLE_DEG:
        return "rear_end"
    if angle > CROSSING_MIN_ANGLE_DEG:
        return "crossing"
    return "angled"
