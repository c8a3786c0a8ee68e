"""The whole file: ``EdgeConfig``, the device with its cameras and shared sections."""

from __future__ import annotations

from pydantic import Field, field_validator

from edge.config.base import StrictModel
from edge.config.camera import CameraConfig
from edge.config.clips import ClipsConfig, PrivacyConfig
from edge.config.detector import DetectorConfig, TrackerConfig
from edge.config.mqtt import MqttConfig
from edge.config.windows import WindowConfig
from edge.errors import ConfigError


class EdgeConfig(StrictModel):
    device_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Device id used in topics.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="Object detector.")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="Multi-object tracker.")
    windows: WindowConfig = Field(default_factory=WindowConfig, description="Metrics windows.")
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig, description="Switches the protocol forbids.")
    clips: ClipsConfig = Field(default_factory=ClipsConfig, description="Event clips (off by default).")
    cameras: tuple[CameraConfig, ...] = Field(min_length=1, description="Cameras of this device.")
    mqtt: MqttConfig | None = Field(
        None, description="MQTT publishing with a store-and-forward outbox; absent: no publishing."
    )

    @field_validator("cameras")
    @classmethod
    def _unique_cameras(cls, v: tuple[CameraConfig, ...]) -> tuple[CameraConfig, ...]:
        names = [c.name for c in v]
        if len(set(names)) != len(names):
            raise ValueError(f"camera names must be unique, got {names}")
        return v

    def camera(self, name: str | None) -> CameraConfig:
        """The camera called ``name``, or the only/first camera when ``name`` is None."""
        if name is None:
            return self.cameras[0]
        for cam in self.cameras:
            if cam.name == name:
                return cam
        known = ", ".join(c.name for c in self.cameras)
        raise ConfigError(f"no camera named {name!r} in the config; known cameras: {known}")
