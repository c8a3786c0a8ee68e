"""Attestation (privacy invariant P6): what this device runs and whether its start-up checks passed.

Printed by ``edge attest -c CONFIG``, logged at start-up and published on the retained status topic.
It names the software version, the protocol and the effective limits (the protocol tightened by the
config), the sha256 of the config file and of the model, and the result of each check.
"""

from __future__ import annotations

import hashlib
import os
import resource
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge import __version__
from edge.config import EdgeConfig
from edge.errors import EdgeError
from edge.protocol import PROTOCOL


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def disable_core_dumps() -> None:
    """A core dump of this process could hold camera frames (P2): forbid them for the process."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _check_model(config: EdgeConfig) -> tuple[Check, str | None]:
    from edge.models import load_manifest, read_verified

    try:
        entry = load_manifest().get(config.detector.model)
        path, _ = read_verified(entry, config.detector.model_dir)
    except EdgeError as exc:
        return Check("model_sha256", False, str(exc)), None
    return Check("model_sha256", True, f"{path} matches the manifest"), entry.sha256


def _check_clip_store(config: EdgeConfig) -> Check:
    if not config.clips.enabled:
        return Check("clip_store", True, "clips disabled: no image ever reaches disk")
    root = config.clips.store_dir
    if not root.is_dir():
        return Check("clip_store", False, f"{root} does not exist yet (created at start-up with mode 0700)")
    mode = root.stat().st_mode & 0o777
    ok = mode == 0o700 and os.access(root, os.W_OK)
    return Check("clip_store", ok, f"{root} mode {mode:o}, writable {os.access(root, os.W_OK)}")


def _check_encoder() -> Check:
    from edge.clips.codec import encoder_name

    try:
        name = encoder_name()
    except EdgeError as exc:
        return Check("clip_encoder", False, str(exc))
    return Check("clip_encoder", True, f"{name}, one video stream per clip, no audio")


def _check_encrypted(config: EdgeConfig) -> Check:
    clips = config.clips
    if clips.encryption is not None:
        return Check("clips_encrypted", True, f"HPKE X25519 + AES-128-GCM to {clips.encryption.public_key_file}")
    if clips.unencrypted_lab:
        return Check("clips_encrypted", True, "NOT encrypted: lab opt-out (clips.unencrypted_lab); not for a street")
    return Check("clips_encrypted", False, "clips on without clips.encryption")


def attestation(config: EdgeConfig, config_path: Path) -> dict[str, Any]:
    """The attestation record as plain data (JSON-serialisable)."""
    model_check, model_sha = _check_model(config)
    core_soft, _ = resource.getrlimit(resource.RLIMIT_CORE)
    checks = [
        model_check,
        Check("config_within_protocol", True, f"validated against {PROTOCOL.id}"),
        Check("audio_disabled", not config.privacy.record_audio, "audio streams are discarded by the demuxer"),
        Check("core_dumps_disabled", core_soft == 0, f"RLIMIT_CORE soft limit {core_soft}"),
        _check_clip_store(config),
    ]
    if config.clips.enabled:
        checks.append(_check_encoder())
        checks.append(_check_encrypted(config))
    clips = config.clips
    return {
        "software": {"name": "edge", "version": __version__},
        "protocol": PROTOCOL.describe(),
        "effective_limits": {
            "audio": False,
            "clips_enabled": clips.enabled,
            "max_clip_s": min(clips.max_clip_s, PROTOCOL.limits.max_clip_s),
            "clip_budget_s_per_hour": min(clips.budget_s_per_hour, PROTOCOL.limits.max_clip_s_per_hour),
            "clip_budget_s_per_day": min(clips.budget_s_per_day, PROTOCOL.limits.max_clip_s_per_day),
            "pre_roll_s": clips.pre_roll_s,
            "post_roll_s": clips.post_roll_s,
            "retention_days": min(clips.retention_days, PROTOCOL.limits.max_retention_days),
            "max_clip_store_bytes": min(clips.max_store_bytes, PROTOCOL.limits.max_clip_store_bytes),
            "redaction": clips.redaction.model_dump() if clips.redaction else None,
            "encrypted_at_rest": clips.encryption is not None,
            "unencrypted_lab": clips.enabled and clips.encryption is None and clips.unencrypted_lab,
            "window_s": config.windows.window_s,
            "per_object_output": False,
        },
        "config_sha256": hashlib.sha256(config_path.read_bytes()).hexdigest(),
        "model": {"name": config.detector.model, "sha256": model_sha},
        "checks": [asdict(c) for c in checks],
        "ok": all(c.ok for c in checks),
    }
