"""Start-up checks beyond the schema, on the main thread, before any worker thread starts.

pydantic (``edge.config``) checks each value, the protocol's limits and the payload sizes. What needs
more than the values is checked here, so that ``edge validate-config``, ``edge attest``, ``edge replay``
and ``edge run`` refuse the same configs, each problem with its YAML path, instead of a camera worker
crashing on it later (and its watchdog restarting it ten times):

* every camera's calibration is fitted (a degenerate one, e.g. collinear points, is refused);
* with clips on and encrypted, the city's public key is read and checked (missing, unreadable, not a
  key, or a private key);
* the detector model is found in the manifest and its file's sha256 checked (``check_model``).

The fitted calibrations and the key are returned, so callers do not load them twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from edge.config import EdgeConfig
from edge.errors import ClipError, ConfigError, ModelError
from edge.geometry import Calibration
from edge.models import load_manifest, read_verified


@dataclass(frozen=True, slots=True)
class Prepared:
    """What the checks built: per-camera calibrations (by camera name), the clip key, the model file."""

    config: EdgeConfig
    calibrations: dict[str, Calibration] = field(default_factory=dict)
    clip_public_key: X25519PublicKey | None = None
    model_path: Path | None = None


def prepare(config: EdgeConfig, *, check_model: bool = True) -> Prepared:
    """Run every start-up check; raise one ``ConfigError`` listing each problem as 'yaml.path: message'."""
    from edge.clips import crypto

    problems: list[str] = []
    calibrations: dict[str, Calibration] = {}
    for k, cam in enumerate(config.cameras):
        if cam.calibration is None:
            continue
        try:
            calibrations[cam.name] = Calibration.from_config(cam.calibration, where=f"cameras[{k}].calibration")
        except ConfigError as exc:
            problems.extend(exc.errors or [str(exc)])
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
