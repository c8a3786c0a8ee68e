"""Video sources of a camera (``cameras[].source``): a file, an RTSP stream or a USB (V4L2) device."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator

from edge.config.base import ReconnectBackoff, StrictModel


class FileSourceConfig(StrictModel):
    kind: Literal["file"] = "file"
    path: Path = Field(description="Video file (anything FFmpeg reads). Audio tracks are ignored.")
    realtime: bool = Field(
        False, description="`edge run` only: pace the file at its frame rate, like a camera (tests, soak runs)."
    )
    loop: bool = Field(False, description="`edge run` only: start again at the end, like a camera that never stops.")


class RtspSourceConfig(ReconnectBackoff):
    kind: Literal["rtsp"] = "rtsp"
    url: str = Field(description="rtsp:// (or other FFmpeg network) URL of the camera.")
    open_timeout_s: float = Field(5.0, gt=0, le=60, description="Give up opening the stream after this.")
    read_timeout_s: float = Field(5.0, gt=0, le=60, description="A read that blocks longer is a stall.")

    @field_validator("url")
    @classmethod
    def _has_scheme(cls, v: str) -> str:
        if "://" not in v:
            raise ValueError("must be a URL such as rtsp://host:554/stream")
        return v


class UsbSourceConfig(ReconnectBackoff):
    kind: Literal["usb"] = "usb"
    device_index: int = Field(0, ge=0, description="V4L2 device index (/dev/videoN).")
    open_timeout_s: float = Field(5.0, gt=0, le=60, description="Give up opening the device after this.")
    read_timeout_s: float = Field(5.0, gt=0, le=60, description="A read that blocks longer is a stall.")


SourceConfig = Annotated[
    FileSourceConfig | RtspSourceConfig | UsbSourceConfig, Field(discriminator="kind")
]
