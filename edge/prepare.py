"""Start-up checks beyond the schema, on the main thread, before any worker thread starts.

pydantic (``edge.config``) checks each value and the protocol's limits. What needs more than the values
is checked here, so that ``edge validate-config``, ``edge attest``, ``edge replay`` and ``edge run``
refuse the same configs, each problem with its YAML path, instead of a camera worker crashing on it
later (and its watchdog restarting it ten times):

* every camera's calibration is fitted (a degenerate one, e.g. collinear points, is refused);
* no camera's window records can exceed the 4 KB payload limit: the analytics the camera would run
  (``edge.analytics.registry``) are built and their worst-case records sized;
* with clips on and encrypted, the city's public key is read and checked (missing, unreadable, not a
  key, or a private key);
* the detector model is found in the manifest and its file's sha256 checked (``check_model``);
* where the frame size is known (a file source, or the video given to ``replay``), every counting line,
  movement zone and calibration point lies in the frame: a line outside it would count zero, silently.

The fitted calibrations and the key are returned, so callers do not load them twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from edge.analytics.kinematics import GroundKinematics
from edge.analytics.registry import AnalyticsSetup, build_analytics
from edge.analytics.windows import worst_case_bytes
from edge.config import CameraConfig, EdgeConfig, FileSourceConfig
from edge.errors import ClipError, ConfigError, ModelError
from edge.geometry import Calibration
from edge.models import load_manifest, read_verified
from edge.payloads import MAX_PAYLOAD_BYTES


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the checks built: per-camera calibrations (by camera name), the clip key, the model file."""

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


def geometry_problems(camera: CameraConfig, index: int, size: tuple[int, int]) -> list[str]:
    """Lines, zones and calibration points of ``camera`` (``cameras[index]``) outside a ``size`` frame."""
    w, h = size
    where = f"cameras[{index}]"
    fix = f"the frame is {w}x{h} px; redraw it on a frame of this camera (tools/render_setup.py shows them)"
    problems = []
    for k, line in enumerate(camera.lines):
        pts = line.points_px
        if not any(cv2.clipLine((0, 0, w, h), _px(a), _px(b))[0] for a, b in itertools.pairwise(pts)):
            problems.append(f"{where}.lines[{k}].points_px: line {line.name!r} lies outside the frame; {fix}")
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


def _px(p: tuple[float, float]) -> tuple[int, int]:
    return round(p[0]), round(p[1])


def _inside(p: tuple[float, float], size: tuple[int, int]) -> bool:
    return 0 <= p[0] <= size[0] and 0 <= p[1] <= size[1]


def prepare(config: EdgeConfig, *, check_model: bool = True,
            frame_sizes: Mapping[str, tuple[int, int]] | None = None) -> Prepared:
    """Run every start-up check; raise one ``ConfigError`` listing each problem as 'yaml.path: message'.

    ``frame_sizes`` maps camera names to their frame ``(width, height)`` where the caller knows it (the
    video of a replay); a camera whose source is a file is probed.
    """
    from edge.clips import crypto

    problems: list[str] = []
    calibrations: dict[str, Calibration] = {}
    for k, cam in enumerate(config.cameras):
        size = (frame_sizes or {}).get(cam.name)
        if size is None and isinstance(cam.source, FileSourceConfig):
            size = video_size(cam.source.path)
        if size is not None:
            problems.extend(geometry_problems(cam, k, size))
        if cam.calibration is not None:
            try:
                calibrations[cam.name] = Calibration.from_config(cam.calibration, where=f"cameras[{k}].calibration")
            except ConfigError as exc:
                problems.extend(exc.errors or [str(exc)])
                continue  # sized once its calibration fits (a calibrated camera has more records)
        problems.extend(payload_problems(cam, k, calibrations.get(cam.name)))
    key = None
    if config.clips.enabled and config.clips.encryption is not None:
        try:
            key = crypto.load_public_key(config.clips.encryption.public_key_file)
        except ClipError as exc:
            problems.append(f"clips.encryption.public_key_file: {exc}")
    model_path = None
    if check_model:
        try:
            model_path, _ = read_verified(load_manifest().get(config.detector.model), config.detector.model_dir)
        except ModelError as exc:
            problems.append(f"detector.model: {exc}")
    if problems:
        raise ConfigError("the config cannot start", problems)
    return Prepared(config, calibrations, key, model_path)
