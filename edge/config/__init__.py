"""Configuration: one YAML file validated by strict pydantic models.

Every model forbids unknown keys, every field has a description, and every quantity carries its unit in
its name (``window_s``, ``lost_track_buffer_frames``, ``points_px``). Geometry is in source-frame pixels
(x to the right, y down), or, for counting lines given as ``points_m``, in metres on the calibrated
ground plane. Validators are pure: they check, they never touch files or the network.

One module per section; every public name is re-exported here, so ``from edge.config import X`` is the
way to import (the modules import each other, never this package):

* ``base``: :class:`StrictModel`, ``Point``, small checks, :class:`ReconnectBackoff` (shared by the live
  sources and MQTT);
* ``source``: ``cameras[].source`` (file, rtsp, usb);
* ``detector``: ``detector``, ``detector.motion_gating``, ``tracker``;
* ``counting``: ``cameras[].lines[]``, ``cameras[].counting``;
* ``calibration``: ``cameras[].calibration``, ``kinematics``, ``speeds``;
* ``zones``: ``cameras[].movements`` and its zones;
* ``conflicts``: ``cameras[].conflicts``;
* ``camera``: one ``cameras[]`` entry;
* ``windows``: ``windows``;
* ``mqtt``: ``mqtt``, ``mqtt.tls``;
* ``clips``: ``privacy``, ``clips`` (redaction, encryption);
* ``root``: :class:`EdgeConfig`, the whole file;
* ``load``: :func:`parse_config`, :func:`load_config`;
* ``study``: the ``edge analyse-trajectories`` study file.
"""

from __future__ import annotations

from edge.config.base import Point, ReconnectBackoff, StrictModel
from edge.config.calibration import UTM_ZONE, CalibrationConfig, KinematicsConfig, ReferencePointConfig, SpeedConfig
from edge.config.camera import CameraConfig
from edge.config.clips import ClipEncryptionConfig, ClipsConfig, PrivacyConfig, RedactionConfig
from edge.config.conflicts import ConflictConfig
from edge.config.counting import DIRECTION_NAME, CountingConfig, LineConfig, default_direction_names
from edge.config.detector import DetectorConfig, MotionGatingConfig, TrackerConfig
from edge.config.load import load_config, parse_config
from edge.config.mqtt import MqttConfig, MqttTlsConfig
from edge.config.root import EdgeConfig
from edge.config.source import FileSourceConfig, RtspSourceConfig, SourceConfig, UsbSourceConfig
from edge.config.study import TrajectoryStudyConfig, load_study
from edge.config.windows import WindowConfig
from edge.config.zones import ZONE_NAME, MovementConfig, ZoneConfig

__all__ = [
    "DIRECTION_NAME",
    "UTM_ZONE",
    "ZONE_NAME",
    "CalibrationConfig",
    "CameraConfig",
    "ClipEncryptionConfig",
    "ClipsConfig",
    "ConflictConfig",
    "CountingConfig",
    "DetectorConfig",
    "EdgeConfig",
    "FileSourceConfig",
    "KinematicsConfig",
    "LineConfig",
    "MotionGatingConfig",
    "MovementConfig",
    "MqttConfig",
    "MqttTlsConfig",
    "Point",
    "PrivacyConfig",
    "ReconnectBackoff",
    "RedactionConfig",
    "ReferencePointConfig",
    "RtspSourceConfig",
    "SourceConfig",
    "SpeedConfig",
    "StrictModel",
    "TrackerConfig",
    "TrajectoryStudyConfig",
    "UsbSourceConfig",
    "WindowConfig",
    "ZoneConfig",
    "default_direction_names",
    "load_config",
    "load_study",
    "parse_config",
]
