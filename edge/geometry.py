"""Ground plane: the image-to-ground homography of one camera, from surveyed reference points.

Frames
------
*Image*: source-frame pixels, x right, y down (as everywhere in ``edge``).
*Ground*: a local metric frame on the road surface, float64 metres. The reference points' ground
coordinates are given either in a local frame (a site plan, a tape) or as UTM easting/northing; either
way ``origin_m`` (default: their centroid) is subtracted first, so the numbers the homography works on
are tens of metres, not millions, and no precision is lost (a float32 UTM northing has a 0.5 m step).
UTM grid distances differ from true ground distances by the grid scale factor (0.9996 on the central
meridian, up to about 1.001 at a zone's edge): far below the calibration's own error, so it is ignored.

Model
-----
A road surface that is (locally) a plane maps to the image by a homography ``H`` (3x3, 8 degrees of
freedom): ``g ~ H @ [u, v, 1]``. Four point pairs with no three on one line fix it exactly; more points
are fitted in the least-squares sense (``cv2.findHomography`` with method 0: a normalised DLT refined
by Levenberg-Marquardt on the ground-side error, so the error minimised is in metres). The fit is
refused, with a :class:`~edge.errors.ConfigError` naming the field and the fix, when

* there are fewer than 4 points, or two points share an image or a ground position;
* the points are (nearly) degenerate: all on one line, or 3 of 4 on one line. This is measured by the
  conditioning of the Hartley-normalised DLT system: the ratio of its largest singular value to the
  second smallest (the smallest is ~0 for any consistent fit). A degenerate set leaves a second
  near-zero singular value, i.e. a family of homographies fits equally well;
* the reference points do not all lie on the same side of the image's horizon line (the image of the
  ground plane's line at infinity, where the homography's third row is 0): a swapped pair or a point
  off the road plane;
* a reference point maps farther than ``max_reprojection_error_m`` from its surveyed position.

The reprojection error is reported in metres (RMS and max over the reference points) and, from 5
points on, as a leave-one-out error: each point predicted by the fit to the others, which is the honest
estimate of the error between the reference points (a fit always looks good on its own points).

Points above the horizon (sky, distant buildings) have no ground position: :meth:`Calibration.image_to_ground`
returns NaN for them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import ValidationError

from edge.config import CalibrationConfig, ReferencePointConfig
from edge.errors import ConfigError
from edge.types import F64, BoolArray

__all__ = [
    "MAX_CONDITION",
    "Calibration",
    "ReprojectionError",
    "calibration_config_from_otrfpts",
]


#: Largest accepted conditioning ratio (largest / second-smallest singular value of the normalised DLT
#: system). Well-spread real point sets give under 100 (the OTC and Radeberg references: about 7, a square:
#: about 4); points exactly on one line give 1e16, and a fourth point 1 px off the line through three others
#: (600 px apart) still about 800. 1e4 refuses every exactly degenerate set with a wide margin.
MAX_CONDITION: Final = 1e4
#: A homogeneous scale ``w`` below this (relative to the largest at the reference points) is "on the horizon".
_HORIZON_EPS: Final = 1e-9


@dataclass(frozen=True, slots=True)
class ReprojectionError:
    """How well the homography reproduces the reference points, metres on the ground.

    ``per_point_m`` is each point's error (image mapped to ground, against its surveyed position);
    ``leave_one_out_m`` each point predicted by a fit to the other points (NaN with fewer than 5 points,
    where the other 4 are fitted exactly and nothing is left to check). ``inliers`` marks the points the
    fit used (all of them unless ``method`` is ransac).
    """

    rms_m: float
    max_m: float
    per_point_m: F64
    leave_one_out_rms_m: float
    leave_one_out_max_m: float
    leave_one_out_m: F64
    inliers: npt.NDArray[np.bool_]

    def summary(self) -> str:
        loo = (
            f", leave-one-out RMS {self.leave_one_out_rms_m:.3f} m, max {self.leave_one_out_max_m:.3f} m"
            if math.isfinite(self.leave_one_out_rms_m)
            else ", leave-one-out n/a (fewer than 5 points)"
        )
        out = int(np.count_nonzero(~self.inliers))
        return f"reprojection RMS {self.rms_m:.3f} m, max {self.max_m:.3f} m{loo}" + (
            f", {out} outlier(s) dropped" if out else ""
        )


def _points(values: npt.ArrayLike, name: str) -> F64:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {arr.shape}")
    return arr


def _hartley(points: F64) -> F64:
    """Similarity moving the centroid to 0 and the mean distance to sqrt(2) (Hartley 1997)."""
    centre = points.mean(axis=0)
    mean_dist = float(np.mean(np.hypot(*(points - centre).T)))
    s = math.sqrt(2.0) / mean_dist if mean_dist > 0 else 1.0
    return np.array([[s, 0.0, -s * centre[0]], [0.0, s, -s * centre[1]], [0.0, 0.0, 1.0]])


def _apply(h: F64, points: F64) -> tuple[F64, F64]:
    """``h`` applied to points ``(N, 2)``: the dehomogenised points and the homogeneous scale ``w``."""
    homog = points @ h[:, :2].T + h[:, 2]
    w = homog[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return homog[:, :2] / w[:, None], w


def dlt_condition(image_px: F64, ground_m: F64) -> float:
    """Conditioning of the normalised DLT system: largest over second-smallest singular value.

    A homography has 8 degrees of freedom; the 2N x 9 system has a 1-D null space for a well-posed
    point set. A degenerate set (collinear points, 3 of 4 on a line) has a larger null space, so its
    second-smallest singular value is ~0 and this ratio explodes.
    """
    ti, tg = _hartley(image_px), _hartley(ground_m)
    a = image_px @ ti[:2, :2].T + ti[:2, 2]
    b = ground_m @ tg[:2, :2].T + tg[:2, 2]
    n = len(a)
    rows = np.zeros((2 * n, 9))
    one = np.ones(n)
    rows[0::2, 0:3] = np.column_stack([a, one])
    rows[0::2, 6:9] = -b[:, :1] * np.column_stack([a, one])
    rows[1::2, 3:6] = np.column_stack([a, one])
    rows[1::2, 6:9] = -b[:, 1:2] * np.column_stack([a, one])
    s = np.linalg.svd(rows, compute_uv=False)  # descending; 8 values for 4 points (the 9th is 0 by shape)
    second_smallest = s[7]
    return float(s[0] / second_smallest) if second_smallest > 0 else math.inf


class Calibration:
    """Image <-> ground mapping of one camera (see the module docstring for frames and checks).

    Build it with :meth:`from_config` (from YAML) or directly from arrays: ``image_px`` ``(N, 2)`` pixels,
    ``ground_m`` ``(N, 2)`` metres in the ground frame of the reference points (UTM or local);
    ``origin_m`` is subtracted from them (default: their centroid). ``where`` names the config field in
    error messages. Raises :class:`ConfigError` for a degenerate or inconsistent calibration.
    """

    def __init__(
        self,
        image_px: npt.ArrayLike,
        ground_m: npt.ArrayLike,
        *,
        origin_m: tuple[float, float] | None = None,
        utm_zone: str | None = None,
        method: Literal["least_squares", "ransac"] = "least_squares",
        ransac_threshold_m: float = 0.5,
        max_reprojection_error_m: float = 1.0,
        where: str = "calibration",
    ) -> None:
        img = _points(image_px, "image_px")
        world = _points(ground_m, "ground_m")
        _check_point_counts(img, world, where)
        origin = (
            np.asarray(origin_m, dtype=np.float64) if origin_m is not None else world.mean(axis=0)
        )
        ground = world - origin  # float64, metres in the local frame
        condition = _check_spread(img, ground, where)
        h_fit, inliers = _fit(img, ground, method, ransac_threshold_m, where)
        _, w = _apply(h_fit, img)
        if w[0] < 0:  # make w > 0 for every point in front of the camera
            h_fit = -h_fit
        self._h: F64 = h_fit / np.abs(h_fit).max()
        self._h_inv: F64 = np.linalg.inv(self._h)
        self._w_scale = float(np.abs(img @ self._h[2, :2] + self._h[2, 2]).max())
        self.origin_m: tuple[float, float] = (float(origin[0]), float(origin[1]))
        self.utm_zone = utm_zone
        self.image_px: F64 = img
        self.ground_m: F64 = ground
        self.condition = condition

        per_point = np.hypot(*(self.image_to_ground(img) - ground).T)
        loo = self._leave_one_out(img, ground, method, ransac_threshold_m) if len(img) >= 5 else np.full(
            len(img), np.nan
        )
        used = per_point[inliers]
        self.reprojection = ReprojectionError(
            rms_m=float(np.sqrt(np.mean(used**2))),
            max_m=float(used.max()),
            per_point_m=per_point,
            leave_one_out_rms_m=float(np.sqrt(np.mean(loo**2))),
            leave_one_out_max_m=float(loo.max()),
            leave_one_out_m=loo,
            inliers=inliers,
        )
        if self.reprojection.max_m > max_reprojection_error_m:
            worst = int(np.argmax(np.where(inliers, per_point, -1.0)))
            raise ConfigError(
                f"{where}.points[{worst}]: maps {per_point[worst]:.2f} m from its ground position "
                f"(limit max_reprojection_error_m = {max_reprojection_error_m} m); check that point's image and "
                "ground coordinates and their pairing, or raise the limit if the survey is that coarse"
            )

    @staticmethod
    def _leave_one_out(img: F64, ground: F64, method: str, threshold: float) -> F64:
        out = np.full(len(img), np.nan)
        for k in range(len(img)):
            keep = np.arange(len(img)) != k
            if method == "ransac" and keep.sum() >= 5:
                h, _ = cv2.findHomography(img[keep], ground[keep], cv2.RANSAC, threshold)
            else:
                h, _ = cv2.findHomography(img[keep], ground[keep], 0)
            if h is not None:
                pred, _ = _apply(np.asarray(h, dtype=np.float64), img[k : k + 1])
                out[k] = float(np.hypot(*(pred[0] - ground[k])))
        return out

    @classmethod
    def from_config(cls, config: CalibrationConfig, where: str = "calibration") -> Calibration:
        """Build from the YAML model; ``where`` is the field's YAML path for error messages."""
        return cls(
            [p.image_px for p in config.points],
            [p.ground_m for p in config.points],
            origin_m=config.origin_m,
            utm_zone=config.utm_zone,
            method=config.method,
            ransac_threshold_m=config.ransac_threshold_m,
            max_reprojection_error_m=config.max_reprojection_error_m,
            where=where,
        )

    @property
    def homography(self) -> F64:
        """Image -> ground (local frame) homography, 3x3, scaled so ``w > 0`` in front of the camera."""
        return self._h.copy()

    @property
    def inverse_homography(self) -> F64:
        """Ground (local frame) -> image homography, 3x3."""
        return self._h_inv.copy()

    def image_to_ground(self, points_px: npt.ArrayLike) -> F64:
        """Pixels ``(N, 2)`` -> local ground metres ``(N, 2)``, float64; NaN for points at or above the horizon."""
        pts = _points(points_px, "points_px")
        ground, w = _apply(self._h, pts)
        ground[~(w > _HORIZON_EPS * self._w_scale)] = np.nan
        return ground

    def ground_to_image(self, points_m: npt.ArrayLike) -> F64:
        """Local ground metres ``(N, 2)`` -> pixels ``(N, 2)``; NaN for ground points behind the camera."""
        pts = _points(points_m, "points_m")
        img, _ = _apply(self._h_inv, pts)
        # A ground point is in front of the camera iff its image maps back with w > 0.
        _, w_back = _apply(self._h, np.nan_to_num(img, nan=0.0, posinf=0.0, neginf=0.0))
        img[~(w_back > 0) | ~np.isfinite(img).all(axis=1)] = np.nan
        return img

    def to_world(self, points_m: npt.ArrayLike) -> F64:
        """Local ground metres -> the reference points' frame (e.g. UTM), adding ``origin_m``."""
        out: F64 = _points(points_m, "points_m") + np.asarray(self.origin_m)
        return out

    def from_world(self, points: npt.ArrayLike) -> F64:
        """The reference points' frame (e.g. UTM) -> local ground metres, subtracting ``origin_m``."""
        out: F64 = _points(points, "points") - np.asarray(self.origin_m)
        return out

    def jacobian(self, points_px: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """d(ground)/d(image) at each point, ``(N, 2, 2)`` metres per pixel (NaN above the horizon).

        Maps image-space uncertainty to the ground: a pixel covariance ``C`` becomes ``J @ C @ J.T``.
        """
        pts = _points(points_px, "points_px")
        h = self._h
        homog = pts @ h[:, :2].T + h[:, 2]
        u, v, w = homog[:, 0], homog[:, 1], homog[:, 2]
        jac = np.empty((len(pts), 2, 2))
        with np.errstate(divide="ignore", invalid="ignore"):
            w2 = w * w
            jac[:, 0, 0] = (h[0, 0] * w - u * h[2, 0]) / w2
            jac[:, 0, 1] = (h[0, 1] * w - u * h[2, 1]) / w2
            jac[:, 1, 0] = (h[1, 0] * w - v * h[2, 0]) / w2
            jac[:, 1, 1] = (h[1, 1] * w - v * h[2, 1]) / w2
        jac[~(w > _HORIZON_EPS * self._w_scale)] = np.nan
        return jac

    def metres_per_pixel(self, points_px: npt.ArrayLike) -> F64:
        """Ground sampling distance at each image point, ``sqrt(|det J|)`` metres per pixel (NaN above the horizon)."""
        jac = self.jacobian(points_px)
        out: F64 = np.full(len(jac), np.nan)
        ok = np.isfinite(jac).all(axis=(1, 2))
        out[ok] = np.sqrt(np.abs(np.linalg.det(jac[ok])))
        return out

    def horizon_px(self) -> tuple[float, float, float] | None:
        """The image's horizon line ``a*x + b*y + c = 0`` (ground at infinity), or None for a top-down view."""
        a, b, c = (float(x) for x in self._h[2])
        if math.hypot(a, b) < 1e-12 * abs(c):
            return None
        return a, b, c


def calibration_config_from_otrfpts(data: Mapping[str, Any], **options: Any) -> CalibrationConfig:
    """A calibration config from an OpenTrafficCam ``.otrfpts`` document (already parsed from JSON).

    The document maps point names to ``x_px, y_px, zone_utm, hemisphere, lon_utm`` (easting) and
    ``lat_utm`` (northing). Every point must share one zone. ``options`` are further
    :class:`~edge.config.CalibrationConfig` fields (e.g. ``origin_m``).
    """
    points = []
    zones = set()
    for name, p in data.items():
        try:
            points.append(
                ReferencePointConfig(
                    image_px=(float(p["x_px"]), float(p["y_px"])),
                    ground_m=(float(p["lon_utm"]), float(p["lat_utm"])),
                )
            )
            zones.add(f"{int(p['zone_utm'])}{str(p['hemisphere']).upper()}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"reference point {name!r}: expected x_px, y_px, zone_utm, hemisphere, lon_utm, "
                              f"lat_utm ({exc})") from None
    if len(zones) != 1:
        raise ConfigError(f"reference points span several UTM zones {sorted(zones)}; use points of one zone")
    try:
        return CalibrationConfig(points=tuple(points), utm_zone=zones.pop(), **options)
    except ValidationError as exc:
        raise ConfigError("reference points: not a valid calibration", [
            f"calibration.{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()
        ]) from None


def _check_point_counts(img: F64, world: F64, where: str) -> None:
    if len(img) != len(world):
        raise ConfigError(f"{where}.points: {len(img)} image points but {len(world)} ground points")
    if len(img) < 4:
        raise ConfigError(
            f"{where}.points: a homography needs at least 4 reference points, got {len(img)}; add points "
            "on the road surface spread over the area to be measured (5 or more, so the error can be checked)"
        )
    if not (np.isfinite(img).all() and np.isfinite(world).all()):
        raise ConfigError(f"{where}.points: every coordinate must be a finite number")


def _check_spread(img: F64, ground: F64, where: str) -> float:
    """Refuse duplicate and degenerate (collinear) reference points; return the DLT conditioning."""
    for name, pts, tol, unit in (("image_px", img, 1.0, "1 px"), ("ground_m", ground, 0.01, "1 cm")):
        d = np.hypot(*(pts[:, None, :] - pts[None, :, :]).transpose(2, 0, 1))
        np.fill_diagonal(d, np.inf)
        if (d < tol).any():
            i, j = np.unravel_index(int(np.argmin(d)), d.shape)
            raise ConfigError(
                f"{where}.points: points {min(i, j)} and {max(i, j)} have the same {name} (closer than "
                f"{unit}); remove the duplicate"
            )
    condition = dlt_condition(img, ground)
    if not condition <= MAX_CONDITION:
        raise ConfigError(
            f"{where}.points: the reference points are degenerate (all on one line, or 3 of 4 on one line; "
            f"conditioning {condition:.3g} > {MAX_CONDITION:.0g}); use at least 4 points spread over the "
            "area in both directions, no 3 of them on one line"
        )
    return condition


def _fit(img: F64, ground: F64, method: str, ransac_threshold_m: float, where: str) -> tuple[F64, BoolArray]:
    """The image -> ground homography (least squares or RANSAC) and which points it counts as inliers."""
    if method == "ransac":
        if len(img) < 5:
            raise ConfigError(f"{where}.method: ransac needs at least 5 points, got {len(img)}")
        h, mask = cv2.findHomography(img, ground, cv2.RANSAC, ransac_threshold_m)
    else:
        h, mask = cv2.findHomography(img, ground, 0)
    if h is None:
        raise ConfigError(
            f"{where}.points: no homography fits these points; check that each image point is paired with "
            "its own ground point"
        )
    inliers = np.asarray(mask, dtype=bool).reshape(-1) if mask is not None else np.ones(len(img), dtype=bool)
    return np.asarray(h, dtype=np.float64), inliers
