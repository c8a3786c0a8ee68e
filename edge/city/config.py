"""``ARCHIVE.yaml``: where the archive lives, which broker it listens to, and the study sites.

    database: /var/lib/edge-city/archive.sqlite3
    timezone: Europe/Berlin                 # bins, daily profiles and peak hours are in local time
    mqtt:                                   # the same section as a device's (edge.config.MqttConfig)
      url: mqtts://broker.city.example:8883
      tls: {ca_file: /etc/edge-city/ca.crt}
      username: city-archive
      password_file: /etc/edge-city/mqtt-password
      client_id: city-archive               # the persistent session is kept under this id
    session_expiry_s: 604800                # the broker keeps the session (and queues QoS 1) this long offline
    sites:
      - name: main-and-5th
        device: cam-0001
        camera: north
        config: /etc/edge-city/sites/cam-0001.yaml   # the device's edge config: lines, zones, calibration

Relative paths are taken from the folder of ARCHIVE.yaml. Of the ``mqtt`` section the archive uses the
broker, TLS, credentials, client id, prefix, keep-alive, connect timeout and reconnect back-off; the outbox
fields are the device's and do not apply.
"""

from __future__ import annotations

import zoneinfo
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from edge.config import MqttConfig
from edge.config.base import StrictModel
from edge.config.load import read_yaml
from edge.errors import ConfigError

_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
#: Where the contract's JSON Schemas are in a source checkout (tools/gen_contract.py writes them).
DEFAULT_SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "contract" / "schemas"


class SiteConfig(StrictModel):
    """A study site: one camera of one device, named as the report calls it."""

    name: str = Field(pattern=_NAME, description="Site name in the report and the CSV exports.")
    device: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="device_id of the records.")
    camera: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="Camera name of the records.")
    config: Path | None = Field(
        None, description="The device's edge config (YAML): its lines, zones and calibration draw the conflict "
        "map on the ground plane and name turning movements (left, through, right). Without it the map has no "
        "background and movements keep their zone names.",
    )


class ArchiveConfig(StrictModel):
    database: Path = Field(description="SQLite file of the archive (created when missing).")
    schemas_dir: Path = Field(
        DEFAULT_SCHEMAS_DIR, description="Folder of the contract's JSON Schemas (contract/schemas of the release "
        "the devices run); every payload is validated against them.",
    )
    timezone: str = Field("UTC", description="IANA time zone of the sites: 15-minute bins, profiles, peak hours.")
    mqtt: MqttConfig | None = Field(None, description="Broker to subscribe to; needed by `edge archive` only.")
    session_expiry_s: int = Field(
        7 * 86_400, ge=60, le=2**32 - 2,
        description="MQTT v5 Session Expiry Interval: how long the broker keeps the archive's session and queues its "
        "QoS 1 messages while it is down. Longer than any outage you want to survive without loss.",
    )
    sites: tuple[SiteConfig, ...] = Field((), description="Named study sites (device, camera, geometry).")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}; use an IANA name such as Europe/Berlin or UTC") from None
        return v

    @model_validator(mode="after")
    def _unique_sites(self) -> ArchiveConfig:
        names = [s.name for s in self.sites]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"site names must be unique: {', '.join(dup)}")
        return self

    def site(self, name: str) -> SiteConfig | None:
        return next((s for s in self.sites if s.name == name), None)


def _resolve(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """Relative paths of the file are relative to its folder."""
    out = dict(data)
    for key in ("database", "schemas_dir"):
        if isinstance(out.get(key), str) and not Path(out[key]).is_absolute():
            out[key] = str(base / out[key])
    sites = out.get("sites")
    if isinstance(sites, list):
        out["sites"] = [
            {**s, "config": str(base / s["config"])}
            if isinstance(s, dict) and isinstance(s.get("config"), str) and not Path(s["config"]).is_absolute() else s
            for s in sites
        ]
    return out


def load_archive_config(path: Path) -> ArchiveConfig:
    """Read and validate ``ARCHIVE.yaml``; ``ConfigError`` lists every problem with its YAML path."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys")
    try:
        return ArchiveConfig.model_validate(_resolve(data, path.parent))
    except ValidationError as exc:
        errors = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path}: {len(errors)} error(s)", errors) from None
