"""One error hierarchy for the whole package.

    EdgeError
     ├── ConfigError      bad or unsafe configuration (refused at start-up)
     ├── SourceError      a video source cannot be opened or read
     ├── DecodeError      an encoded video packet does not decode (corrupt or truncated data)
     ├── ModelError       model file missing, tampered (sha256) or of an unknown layout
     ├── AssetError       a pinned download failed or did not match its sha256
     ├── PublishError     the MQTT publisher or its on-disk outbox cannot be set up or used
     └── ClipError        a clip cannot be written, verified, encrypted or decrypted (tampered, wrong key)

The CLI catches only ``EdgeError`` and turns it into a message and exit code 1. Every message names
the problem and the fix.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(EdgeError):
    """Configuration is invalid; ``errors`` lists each problem as 'path: message'."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        self.errors = errors or []
        detail = "".join(f"\n  {e}" for e in self.errors)
        super().__init__(message + detail)


class SourceError(EdgeError):
    """A video source could not be opened or read."""


class DecodeError(EdgeError):
    """An encoded video packet does not decode: corrupt or truncated data (a camera's bit error, a cut
    recording, a damaged packet in the pre-event buffer).

    Never fatal: a source skips the packet and counts it (``decode_errors``); the clip writer drops the
    clip whose window holds it and counts it (``ClipCounters.dropped_corrupt``).
    """


class ModelError(EdgeError):
    """A detector model is missing, does not match its manifest, or cannot run."""


class AssetError(EdgeError):
    """A pinned asset could not be fetched or failed its sha256 check."""


class PublishError(EdgeError):
    """The MQTT publisher or its on-disk outbox cannot be set up (unreadable credentials, outbox in use).

    Runtime network faults (broker down, refused login) are not raised: the publisher retries with
    back-off, counts them and raises a health alarm.
    """


class ClipError(EdgeError):
    """A clip could not be written or verified, encrypted or decrypted, or a clip key could not be loaded.

    Decryption failures (tampering, truncation, reordering, wrong key or context) are
    ``edge.clips.crypto.ClipDecryptError``, a subclass; no plaintext is left behind when one is raised.
    """
