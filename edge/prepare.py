"""Start-up checks beyond the schema, on the main thread, before any worker thread starts.

pydantic (``edge.config``) checks each value and the protocol's limits. What needs more than the values
is checked here, so that ``edge validate-config``, ``edge attest``, ``edge replay`` and ``edge run``
refuse the same configs, each problem with its YAML path, instead of a camera worker crashing on it
later (and its watchdog restarting it ten times):

* every camera's calibration is fitted (a degenerate one, e.g. collinear points, is refused);
* counting lines drawn on the ground plane (``points_m``) are projected into the image through it
  (:func:`lines_in_pixels`): a point behind the camera is refused; every later check, and every consumer of
  the returned config, sees pixel lines only;
* no camera's window records can exceed the 4 KB payload limit: the analytics the camera would run
  (``edge.analytics.registry``) are built and their worst-case records sized;
* with clips on and encrypted, the city's public key is read and checked (missing, unreadable, not a
  key, or a private key);
* on a device with clips on: clips are encrypted (or ``clips.unencrypted_lab`` says a lab opts out), and
  ``clips.store_dir`` holds only what the clip store writes (it sweeps clip names it cannot account for,
  so it must not share a folder with other files);
* the detector model is found in the manifest and its file's sha256 checked (``check_model``);
* with MQTT on, the outbox path can be opened for writing (``edge.publish.outbox.outbox_problem``: not a
  folder, not unreadable, its folder creatable and writable), checked without creating anything;
* where the frame size is known (a file source, or the video given to ``replay``), every counting line,
  movement zone and calibration point lies in the frame: a line outside it would count zero, silently.

The fitted calibrations, the key and the config with every line in pixels are returned, so callers do not
load them twice. ``edge.pipeline.CameraPipeline`` projects its camera's ground lines with the same
:func:`lines_in_pixels`, so a pipeline built from the config as loaded counts on the same pixel lines.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import av
import cv2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from pydantic import ValidationError

from edge.analytics.kinematics import GroundKinematics
from edge.analytics.registry import AnalyticsSetup, build_analytics
from edge.analytics.windows import worst_case_bytes
from edge.config import CameraConfig, EdgeConfig, FileSourceConfig, LineConfig, MqttConfig
from edge.errors import ClipError, ConfigError, ModelError
from edge.geometry import Calibration
from edge.models import load_manifest, read_verified
from edge.payloads import MAX_PAYLOAD_BYTES

#: A ground point projecting farther than this from the image origin is (nearly) on the horizon: at infinity.
_MAX_PROJECTED_PX: Final = 1e6


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the checks built: the config with every counting line in pixels (:func:`lines_in_pixels`),
    per-camera calibrations (by camera name), the clip key, the model file."""

    config: EdgeConfig
    calibrations: dict[str, Calibration] = field(default_factory=dict)
    clip_public_key: X25519PublicKey | None = None
    model_path: Path | None = None


def video_size(path: Path) -> tuple[int, int] | None:
    """``(width, height)`` of a file's first video stream, or None when it cannot be read (the source
    then reports that itself when it opens)."""
    try:
        with av.open(str(path)) as container:
            ctx = container.streams.video[0].codec_context
            return (int(ctx.width), int(ctx.height)) if ctx.width and ctx.height else None
    except (av.error.FFmpegError, IndexError, OSError):
        return None


def geometry_problems(camera: CameraConfig, index: int, size: tuple[int, int], *,
                      ground_lines: Collection[int] = ()) -> list[str]:
    """Lines, zones and calibration points of ``camera`` (``cameras[index]``) outside a ``size`` frame.
    ``ground_lines``: indexes of the lines given as ``points_m`` (projected by :func:`lines_in_pixels`)."""
    w, h = size
    where = f"cameras[{index}]"
    fix = f"the frame is {w}x{h} px; redraw it on a frame of this camera (tools/render_setup.py shows them)"
    problems = []
    for k, line in enumerate(camera.lines):
        pts = line.points_px
        if pts is None:
            continue  # a ground line that could not be projected (its calibration failed): reported already
        if not any(cv2.clipLine((0, 0, w, h), _px(a), _px(b))[0] for a, b in itertools.pairwise(pts)):
            field, how = ("points_m", " (projected through the calibration)") if k in ground_lines else (
                "points_px", "")
            problems.append(f"{where}.lines[{k}].{field}: line {line.name!r}{how} lies outside the frame; {fix}")
    for k, zone in enumerate(camera.movements.zones if camera.movements else ()):
        if not any(_inside(p, size) for p in zone.points_px):
            problems.append(f"{where}.movements.zones[{k}].points_px: zone {zone.name!r} lies outside the frame; "
                            f"{fix}")
    for k, point in enumerate(camera.calibration.points if camera.calibration else ()):
        if not _inside(point.image_px, size):
            problems.append(f"{where}.calibration.points[{k}].image_px: {point.image_px} is outside the frame; "
                            f"{fix}")
    return problems


def payload_problems(camera: CameraConfig, index: int, calibration: Calibration | None) -> list[str]:
    """The window records of ``camera`` (``cameras[index]``, with its fitted ``calibration``) could
    exceed ``MAX_PAYLOAD_BYTES``: sized from the worst-case fragments of the analytics it would run."""
    kinematics = GroundKinematics(camera.kinematics, calibration) if calibration is not None else None
    size = worst_case_bytes(build_analytics(AnalyticsSetup.from_camera(camera, kinematics)))
    if size <= MAX_PAYLOAD_BYTES:
        return []
    zones = len(camera.movements.zones) if camera.movements else 0
    return [f"cameras[{index}]: {len(camera.lines)} lines and {zones} zones make window records of up to {size} "
            f"bytes, over the {MAX_PAYLOAD_BYTES}-byte payload limit; use fewer lines or zones, or shorter names"]


def lines_in_pixels(camera: CameraConfig, calibration: Calibration | None, where: str) -> CameraConfig:
    """``camera`` with every counting line in image pixels: a line drawn on the ground plane (``points_m``,
    metres in the frame of the calibration's reference points) is projected through the fitted
    ``calibration``; a ``points_px`` line is kept as it is. ``where`` is the camera's YAML path
    (``cameras[0]``). Raises ``ConfigError`` listing, with its YAML path, each line that has no image: no
    calibration, a point behind the camera (beyond the image's horizon), or points that land within 1 px."""
    if all(line.points_m is None for line in camera.lines):
        return camera
    problems: list[str] = []
    lines: list[LineConfig] = []
    for k, line in enumerate(camera.lines):
        try:
            lines.append(line if line.points_m is None else _line_in_pixels(line, calibration,
                                                                            f"{where}.lines[{k}].points_m"))
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(f"{where}: ground lines cannot be placed in the image", problems)
    return camera.model_copy(update={"lines": tuple(lines)})


def _line_in_pixels(line: LineConfig, calibration: Calibration | None, where: str) -> LineConfig:
    """A ``points_m`` line as the equivalent ``points_px`` line (same name and directions)."""
    points_m = line.points_m or ()
    if calibration is None:
        raise ConfigError(f"{where}: line {line.name!r} is drawn on the ground plane (metres) and needs the "
                          "camera's calibration; add a calibration section or give the line as points_px")
    image = calibration.ground_to_image(calibration.from_world(points_m))
    for i, (ground, px) in enumerate(zip(points_m, image, strict=True)):
        if not (np.isfinite(px).all() and np.abs(px).max() <= _MAX_PROJECTED_PX):
            raise ConfigError(
                f"{where}[{i}]: ground point {list(ground)} of line {line.name!r} lies behind the camera (on or "
                "beyond the image's horizon) and has no image position; check the point, and that it is in the "
                "frame of the calibration's ground_m"
            )
    pixels = tuple((float(x), float(y)) for x, y in image)
    try:
        return LineConfig(name=line.name, points_px=pixels, directions=line.directions)
    except ValidationError as exc:
        reasons = "; ".join(e["msg"] for e in exc.errors())
        shown = [[round(x, 1), round(y, 1)] for x, y in pixels]
        raise ConfigError(f"{where}: line {line.name!r} projects into the image at {shown}: {reasons}; move its "
                          "points apart") from None


def _px(p: tuple[float, float]) -> tuple[int, int]:
    return round(p[0]), round(p[1])


def _inside(p: tuple[float, float], size: tuple[int, int]) -> bool:
    return 0 <= p[0] <= size[0] and 0 <= p[1] <= size[1]


def prepare_camera(camera: CameraConfig, index: int, size: tuple[int, int] | None
                   ) -> tuple[CameraConfig, Calibration | None, list[str]]:
    """The checks of one camera (``cameras[index]``, frame ``size`` where known): its calibration fitted,
    its ground lines projected (:func:`lines_in_pixels`), its geometry inside the frame, its records sized.
    Returns the camera with pixel lines (as given where projecting failed), the calibration (None when
    absent or refused) and the problems found."""
    problems: list[str] = []
    calibration = None
    fitted = True
    ground_lines = [k for k, line in enumerate(camera.lines) if line.points_m is not None]
    try:
        if camera.calibration is not None:
            calibration = Calibration.from_config(camera.calibration, where=f"cameras[{index}].calibration")
        camera = lines_in_pixels(camera, calibration, f"cameras[{index}]")
    except ConfigError as exc:
        problems.extend(exc.errors or [str(exc)])
        fitted = False
    if size is not None:
        problems[:0] = geometry_problems(camera, index, size, ground_lines=ground_lines)
    if fitted:  # sized once its calibration fits and its lines are placed (a calibrated camera has more records)
        problems.extend(payload_problems(camera, index, calibration))
    return camera, calibration, problems


def _mqtt_problems(mqtt: MqttConfig) -> list[str]:
    """The outbox can be opened; a password file is readable, not empty and not world-writable (a WARNING
    when other users may read it). The password of ``password_env`` lives in the service's environment and
    is checked when the service starts."""
    from edge.publish.mqtt import read_password
    from edge.publish.outbox import outbox_problem

    problems = []
    if outbox := outbox_problem(mqtt.outbox_path):
        problems.append(f"mqtt.outbox_path: {outbox}")
    if mqtt.password_file is not None:
        try:
            read_password(mqtt)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


def _device_clip_problems(config: EdgeConfig) -> list[str]:
    """What a device with clips on must have: encryption (or the attested lab opt-out) and a store folder
    of its own."""
    from edge.clips.store import refuse_foreign_files

    problems = []
    if config.clips.encryption is None and not config.clips.unencrypted_lab:
        problems.append("clips.encryption: a device writes clips encrypted to the city's public key; give "
                        "clips.encryption.public_key_file (make the pair with `edge clips keygen` on a city machine), "
                        "or, in a lab only, set clips.unencrypted_lab: true (the attestation reports it)")
    try:
        refuse_foreign_files(config.clips.store_dir)
    except ClipError as exc:
        problems.append(f"clips.store_dir: {exc}")
    return problems


def prepare(config: EdgeConfig, *, check_model: bool = True,
            frame_sizes: Mapping[str, tuple[int, int]] | None = None, device: bool = True) -> Prepared:
    """Run every start-up check; raise one ``ConfigError`` listing each problem as 'yaml.path: message'.

    ``frame_sizes`` maps camera names to their frame ``(width, height)`` where the caller knows it (the
    video of a replay); a camera whose source is a file is probed. ``device``: the config is to run on a
    device (``validate-config``, ``attest``, ``run``): with clips on, they must be encrypted (unless
    ``clips.unencrypted_lab``) and ``clips.store_dir`` must hold no file the clip store did not write. A
    replay, which keeps its clips in its output folder on the engineer's machine, passes False.
    """
    from edge.clips import crypto

    problems: list[str] = []
    calibrations: dict[str, Calibration] = {}
    cameras: list[CameraConfig] = []
    for k, cam in enumerate(config.cameras):
        size = (frame_sizes or {}).get(cam.name)
        if size is None and isinstance(cam.source, FileSourceConfig):
            size = video_size(cam.source.path)
        cam, calibration, found = prepare_camera(cam, k, size)
        problems.extend(found)
        cameras.append(cam)
        if calibration is not None:
            calibrations[cam.name] = calibration
    key = None
    if config.clips.enabled and config.clips.encryption is not None:
        try:
            key = crypto.load_public_key(config.clips.encryption.public_key_file)
        except ClipError as exc:
            problems.append(f"clips.encryption.public_key_file: {exc}")
    if config.clips.enabled and device:
        problems.extend(_device_clip_problems(config))
    if config.mqtt is not None:
        problems.extend(_mqtt_problems(config.mqtt))
    model_path = None
    if check_model:
        try:
            model_path, _ = read_verified(load_manifest().get(config.detector.model), config.detector.model_dir)
        except ModelError as exc:
            problems.append(f"detector.model: {exc}")
    if problems:
        raise ConfigError("the config cannot start", problems)
    return Prepared(config.model_copy(update={"cameras": tuple(cameras)}), calibrations, key, model_path)
