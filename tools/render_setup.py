"""Draw a camera's setup on one frame of a video: calibrated ground grid, reference points, lines and zones.

    python tools/render_setup.py VIDEO -c CONFIG -o out.png [--camera NAME] [--frame N] [--grid-m 5]

An offline engineering tool for checking a configuration by eye (does the 5 m grid lie flat on the road,
do the reference points reproject onto themselves, do the zones cover the approaches?). It writes a
picture of a video frame, so it is never part of the device service (protocol P2: no frame is persisted
there); run it on a workstation, on footage you are allowed to keep.

What is drawn:

* the ground grid every ``--grid-m`` metres over the calibrated area (the reference points' extent plus a
  margin), with the local frame's x axis red and y axis green from the origin; with a UTM calibration x is
  east and y north. Grid lines stop where a pixel covers more than ``--max-m-per-px`` metres (towards the
  horizon the mapping is too coarse to mean anything), and the horizon is drawn dashed when in view;
* each reference point: a circle where it was clicked, a cross where its surveyed ground position maps
  back into the image, and its error in metres;
* counting lines (white) with the direction names on the side each direction crosses towards;
* movement zones, filled translucent, with their names.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.config import CameraConfig, load_config
from edge.errors import EdgeError
from edge.geometry import Calibration
from edge.prepare import lines_in_pixels
from edge.source import FileSource

Image = npt.NDArray[np.uint8]
F64 = npt.NDArray[np.float64]

GRID = (0, 215, 255)  # BGR amber
AXIS_X = (40, 40, 230)
AXIS_Y = (40, 200, 40)
ZONE_COLOURS = [(230, 120, 30), (30, 160, 230), (180, 60, 200), (60, 200, 120), (200, 200, 40), (90, 90, 240)]


def read_frame(video: Path, index: int) -> Image:
    with FileSource(video) as source:
        for frame in source:
            if frame.index >= index:
                return frame.image.copy()
    raise SystemExit(f"{video} has fewer than {index + 1} frames")


def _polyline(img: Image, pts: F64, colour: tuple[int, int, int], thickness: int) -> None:
    """Draw the finite runs of an image-space polyline (NaN points break it)."""
    ok: list[bool] = (np.isfinite(pts[:, 0]) & np.isfinite(pts[:, 1])).tolist()
    run: list[list[int]] = []
    for p, good in zip(pts, ok, strict=True):
        if good and np.abs(p).max() < 1e5:
            run.append([round(p[0]), round(p[1])])
            continue
        if len(run) > 1:
            cv2.polylines(img, [np.array(run, np.int32)], False, colour, thickness, cv2.LINE_AA)
        run = []
    if len(run) > 1:
        cv2.polylines(img, [np.array(run, np.int32)], False, colour, thickness, cv2.LINE_AA)


def _label(img: Image, text: str, at: tuple[float, float], colour: tuple[int, int, int], scale: float = 0.45) -> None:
    x, y = round(at[0]), round(at[1])
    # a dark halo from shifted copies (a thicker stroke changes the glyph advance in some OpenCV versions)
    for dx, dy in ((-1, -1), (-1, 1), (1, -1), (1, 1), (0, 2), (2, 0), (0, -2), (-2, 0)):
        cv2.putText(img, text, (x + dx, y + dy), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 1, cv2.LINE_AA)


def draw_grid(img: Image, cal: Calibration, grid_m: float, margin_m: float, max_m_per_px: float) -> None:
    lo = np.floor((cal.ground_m.min(axis=0) - margin_m) / grid_m) * grid_m
    hi = np.ceil((cal.ground_m.max(axis=0) + margin_m) / grid_m) * grid_m
    h, w = img.shape[:2]

    def visible(pts_m: F64) -> F64:
        px = cal.ground_to_image(pts_m)
        ok = np.isfinite(px).all(axis=1)
        gsd = np.full(len(px), np.inf)
        gsd[ok] = cal.metres_per_pixel(px[ok])
        px[~(gsd <= max_m_per_px)] = np.nan
        return px

    for axis in (0, 1):
        for value in np.arange(lo[axis], hi[axis] + grid_m / 2, grid_m):
            t = np.linspace(lo[1 - axis], hi[1 - axis], 400)
            pts = np.empty((len(t), 2))
            pts[:, axis], pts[:, 1 - axis] = value, t
            on_axis = abs(value) < 1e-9
            colour = (AXIS_Y if axis == 0 else AXIS_X) if on_axis else GRID
            _polyline(img, visible(pts), colour, 2 if on_axis else 1)
    # axis labels at +grid along each axis
    for vec, name, colour in (((grid_m, 0.0), "x", AXIS_X), ((0.0, grid_m), "y", AXIS_Y)):
        p = visible(np.array([vec]))[0]
        if np.isfinite(p).all() and 0 <= p[0] < w and 0 <= p[1] < h:
            _label(img, f"{name} {grid_m:g} m" + (" (E)" if name == "x" and cal.utm_zone else "")
                   + (" (N)" if name == "y" and cal.utm_zone else ""), (p[0] + 4, p[1] - 4), colour)
    horizon = cal.horizon_px()
    if horizon is not None:
        a, b, c = horizon
        xs = np.arange(0, w, 12.0)
        if abs(b) > 1e-12:
            for x0 in xs[::2]:
                y0, y1 = -(a * x0 + c) / b, -(a * (x0 + 12) + c) / b
                if 0 <= y0 < h:
                    cv2.line(img, (round(x0), round(y0)), (round(x0 + 12), round(y1)), GRID, 1, cv2.LINE_AA)


def draw_reference_points(img: Image, cal: Calibration) -> None:
    back = cal.ground_to_image(cal.ground_m)
    for i, (p, q, err) in enumerate(zip(cal.image_px, back, cal.reprojection.per_point_m, strict=True)):
        cv2.circle(img, (round(p[0]), round(p[1])), 6, (255, 255, 255), 2, cv2.LINE_AA)
        if np.isfinite(q).all():
            cv2.drawMarker(img, (round(q[0]), round(q[1])), (0, 0, 255), cv2.MARKER_CROSS, 12, 2)
        _label(img, f"P{i} {err:.2f} m", (p[0] + 8, p[1] + 16), (255, 255, 255))


def draw_lines(img: Image, camera: CameraConfig) -> None:
    from edge.config import default_direction_names

    for line in camera.lines:
        pts = np.array(line.pixel_points, np.float64)
        cv2.polylines(img, [pts.round().astype(np.int32)], False, (255, 255, 255), 2, cv2.LINE_AA)
        names = line.directions or default_direction_names(line.pixel_points)
        a, b = pts[0], pts[1]
        mid = (a + b) / 2
        d = (b - a) / np.hypot(*(b - a))
        left = np.array([d[1], -d[0]])  # the left of a -> b on screen (y down)
        _label(img, line.name, (mid[0] + 4, mid[1] - 4), (255, 255, 255), 0.5)
        _label(img, f"->{names[0]}", tuple(mid + 22 * left), (220, 220, 220), 0.4)
        _label(img, f"->{names[1]}", tuple(mid - 22 * left), (220, 220, 220), 0.4)


def draw_zones(img: Image, camera: CameraConfig) -> None:
    if camera.movements is None:
        return
    overlay = img.copy()
    for k, zone in enumerate(camera.movements.zones):
        pts = np.array(zone.points_px).round().astype(np.int32)
        cv2.fillPoly(overlay, [pts], ZONE_COLOURS[k % len(ZONE_COLOURS)])
    cv2.addWeighted(overlay, 0.35, img, 0.65, 0, dst=img)
    for k, zone in enumerate(camera.movements.zones):
        pts = np.array(zone.points_px)
        colour = ZONE_COLOURS[k % len(ZONE_COLOURS)]
        cv2.polylines(img, [pts.round().astype(np.int32)], True, colour, 2, cv2.LINE_AA)
        c = pts.mean(axis=0)
        _label(img, zone.name, (c[0] - 15, c[1]), colour, 0.6)


def render(image: Image, camera: CameraConfig, grid_m: float = 5.0, margin_m: float = 15.0,
           max_m_per_px: float = 0.5) -> Image:
    img = image.copy()
    draw_zones(img, camera)
    if camera.calibration is not None:
        cal = Calibration.from_config(camera.calibration, where=f"cameras.{camera.name}.calibration")
        camera = lines_in_pixels(camera, cal, f"cameras.{camera.name}")  # lines given as points_m, in the image
        draw_grid(img, cal, grid_m, margin_m, max_m_per_px)
        draw_reference_points(img, cal)
        rep = cal.reprojection
        n = len(cal.image_px)
        lines = [f"reprojection RMS {rep.rms_m:.2f} m, max {rep.max_m:.2f} m at the {n} reference points"]
        if np.isfinite(rep.leave_one_out_rms_m):
            lines.append(f"leave-one-out RMS {rep.leave_one_out_rms_m:.2f} m, max {rep.leave_one_out_max_m:.2f} m")
        for k, text in enumerate(reversed(lines)):
            _label(img, text, (8, img.shape[0] - 10 - 18 * k), (255, 255, 255), 0.45)
    draw_lines(img, camera)
    return img


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Render a camera's ground grid, lines and zones on one video frame.")
    ap.add_argument("video", type=Path)
    ap.add_argument("-c", "--config", type=Path, required=True)
    ap.add_argument("-o", "--output", type=Path, required=True, help="PNG file to write")
    ap.add_argument("--camera", help="camera name (default: the first)")
    ap.add_argument("--frame", type=int, default=0, help="frame index to draw on")
    ap.add_argument("--grid-m", type=float, default=5.0, help="grid spacing in metres")
    ap.add_argument("--margin-m", type=float, default=15.0, help="grid extent beyond the reference points")
    ap.add_argument("--max-m-per-px", type=float, default=0.5, help="hide grid where a pixel covers more ground")
    args = ap.parse_args(argv)
    try:
        config = load_config(args.config)
        camera = config.camera(args.camera)
        out = render(read_frame(args.video, args.frame), camera, args.grid_m, args.margin_m, args.max_m_per_px)
    except EdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.output), out):
        print(f"error: could not write {args.output}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
