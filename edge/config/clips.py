"""Privacy switches and event clips (``privacy``, ``clips``): limits capped by the protocol (P1-P4)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from edge.config.base import StrictModel
from edge.protocol import PROTOCOL, violation


class PrivacyConfig(StrictModel):
    """Switches the protocol forbids. They exist so that a config asking for them is refused by name."""

    record_audio: bool = Field(False, description="Must stay false: audio is never collected (P1).")
    per_object_output: bool = Field(False, description="Must stay false: only aggregates leave the device (P4).")
    export_frames: bool = Field(False, description="Must stay false: no frame is stored outside clips (P2).")

    @model_validator(mode="after")
    def _protocol(self) -> PrivacyConfig:
        limits = PROTOCOL.limits
        problems = []
        if self.record_audio and not limits.audio_allowed:
            problems.append(violation("privacy.record_audio", True, False, "P1", "remove it"))
        if self.per_object_output and not limits.per_object_output_allowed:
            problems.append(violation("privacy.per_object_output", True, False, "P4", "remove it"))
        if self.export_frames and not limits.frame_export_on_device_allowed:
            problems.append(violation("privacy.export_frames", True, False, "P2", "remove it"))
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RedactionConfig(StrictModel):
    persons: bool = Field(True, description="Blur every tracked person in clip frames before encoding.")
    plates: bool = Field(False, description="Also blur the lower front/rear strip of vehicles, where plates sit.")
    pad_frac: float = Field(0.15, ge=0, le=1, description="Grow each blurred box by this fraction per side.")
    blur_cells: int = Field(8, ge=2, le=32, description="Cells kept along a box's longer side; lower is stronger.")
    plate_strip_frac: float = Field(
        0.35, gt=0, le=1, description="Height fraction of the bottom strip of a vehicle box blurred for plates."
    )
    carry_frames: int = Field(
        15, ge=0, le=300,
        description="Keep blurring a person's last box for this many frames after the detector lost them.",
    )


class ClipEncryptionConfig(StrictModel):
    public_key_file: Path = Field(
        description="The city's X25519 public key (PEM). Clips are encrypted to it; the device cannot read them."
    )


class ClipsConfig(StrictModel):
    """Short event clips (off by default). Limits are capped by the protocol (P3)."""

    enabled: bool = Field(False, description="Record a clip around each near-miss event.")
    store_dir: Path = Field(Path("/var/lib/edge/clips"), description="The only folder where clips are written.")
    pre_roll_s: float = Field(5.0, ge=0, description="Seconds of video before the event.")
    post_roll_s: float = Field(5.0, ge=0, description="Seconds of video after the (last merged) event.")
    max_clip_s: float = Field(
        PROTOCOL.limits.max_clip_s, gt=0, description="Longest clip; overlapping events merge up to this length."
    )
    budget_s_per_hour: float = Field(
        PROTOCOL.limits.max_clip_s_per_hour, gt=0,
        description="Clip seconds kept per camera in any rolling hour (by the clips' UTC times); a clip that "
        "does not fit is not kept, its event is still published.",
    )
    budget_s_per_day: float = Field(
        PROTOCOL.limits.max_clip_s_per_day, gt=0,
        description="Clip seconds kept per camera in any rolling 24 hours; as budget_s_per_hour.",
    )
    retention_days: float = Field(
        PROTOCOL.limits.max_retention_days, gt=0, description="Clips older than this are deleted."
    )
    max_store_bytes: int = Field(
        2 * 1024**3, gt=0, description="Byte budget of the clip store; the oldest clips go first."
    )
    buffer_max_bytes: int = Field(
        64 * 1024**2, ge=1024**2, le=1024**3,
        description="RAM budget of the pre-event buffer of encoded packets (never written to disk).",
    )
    redaction: RedactionConfig | None = Field(
        default_factory=RedactionConfig, description="Blurring before encoding; null turns it off."
    )
    encryption: ClipEncryptionConfig | None = Field(
        None, description="Encrypt clips at rest to the city's key. Required on a device (`edge run`, "
        "`validate-config`, `attest`) when clips are on, unless unencrypted_lab; a replay may write plaintext.",
    )
    unencrypted_lab: bool = Field(
        False, description="Lab only: let a device write clips in plaintext without clips.encryption. The "
        "attestation reports it (encrypted_at_rest false, check clips_encrypted names the opt-out).",
    )

    @model_validator(mode="after")
    def _protocol(self) -> ClipsConfig:
        limits = PROTOCOL.limits
        problems = []
        if self.max_clip_s > limits.max_clip_s:
            problems.append(violation("clips.max_clip_s", self.max_clip_s, limits.max_clip_s, "P3", "lower it"))
        if self.pre_roll_s + self.post_roll_s > min(self.max_clip_s, limits.max_clip_s):
            problems.append(violation(
                "clips.pre_roll_s + clips.post_roll_s", self.pre_roll_s + self.post_roll_s,
                min(self.max_clip_s, limits.max_clip_s), "P3", "shorten the pre-roll or the post-roll"))
        if self.budget_s_per_hour > limits.max_clip_s_per_hour:
            problems.append(violation("clips.budget_s_per_hour", self.budget_s_per_hour, limits.max_clip_s_per_hour,
                                      "P3", "lower it"))
        if self.budget_s_per_day > limits.max_clip_s_per_day:
            problems.append(violation("clips.budget_s_per_day", self.budget_s_per_day, limits.max_clip_s_per_day,
                                      "P3", "lower it"))
        if self.retention_days > limits.max_retention_days:
            problems.append(violation("clips.retention_days", self.retention_days, limits.max_retention_days,
                                      "P3", "lower it"))
        if self.max_store_bytes > limits.max_clip_store_bytes:
            problems.append(violation("clips.max_store_bytes", self.max_store_bytes, limits.max_clip_store_bytes,
                                      "P3", "lower it"))
        if problems:
            raise ValueError("; ".join(problems))
        return self
