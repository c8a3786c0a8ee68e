"""Model manifest: which detector files exist, how to decode them, and how to get them safely.

Weights are never downloaded implicitly. ``fetch`` runs only on an explicit ``edge models fetch NAME``,
downloads the manifest's pinned URL and keeps the file only if its sha256 matches. ``resolve`` finds a
model file and verifies its sha256 before anything loads it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.errors import AssetError, ModelError
from edge.types import ROAD_USER_CLASSES

log = logging.getLogger(__name__)

MANIFEST_PATH = Path(__file__).resolve().parents[1] / "models" / "manifest.yaml"


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    file: str
    layout: Literal["yolox", "ultralytics"]
    input_size_px: tuple[int, int] = Field(
        description="(width, height) the model expects by default; a dynamic model keeps this size's scale and "
        "fits the shape to the frame unless detector.input_size_px says otherwise (edge.detect.auto_input_size)"
    )
    dynamic_input: bool
    class_map: dict[int, Literal["car", "bus", "truck", "motorcycle", "bicycle", "person"]]
    licence: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    url: str | None
    derived_by: str | None = Field(
        None, description="Command that produces this file locally from another manifest model (no download)."
    )

    def how_to_get(self) -> str:
        """What the user runs to put this model's file in place."""
        if self.derived_by:
            return f"produce it with `{self.derived_by}` (the file is derived locally, not downloaded)"
        if self.url:
            return f"run `edge models fetch {self.name}`"
        return "copy it from ../shared/models"

    def road_user_ids(self) -> dict[int, int]:
        """Model class id -> index into ``ROAD_USER_CLASSES``."""
        return {k: ROAD_USER_CLASSES.index(v) for k, v in self.class_map.items()}


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    models: tuple[ModelEntry, ...]

    def get(self, name: str) -> ModelEntry:
        for m in self.models:
            if m.name == name:
                return m
        known = ", ".join(m.name for m in self.models)
        raise ModelError(f"unknown model {name!r}; the manifest lists: {known}")


def load_manifest(path: Path = MANIFEST_PATH) -> Manifest:
    try:
        return Manifest.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ModelError(f"model manifest {path} is unreadable or invalid: {exc}") from None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge" / "models"


def search_dirs(model_dir: Path | None) -> list[Path]:
    """Where model files are looked for: the configured folder alone, else $EDGE_MODEL_DIR and the cache."""
    if model_dir is not None:
        return [model_dir]
    dirs = [Path(os.environ["EDGE_MODEL_DIR"])] if os.environ.get("EDGE_MODEL_DIR") else []
    return [*dirs, cache_dir()]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_verified(entry: ModelEntry, model_dir: Path | None) -> tuple[Path, bytes]:
    """Find the model file, check its sha256, and return its path and bytes (loaded from these bytes, so
    the file cannot change between check and load)."""
    dirs = search_dirs(model_dir)
    for d in dirs:
        path = d / entry.file
        if path.is_file():
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            if digest != entry.sha256:
                cause = "corrupt or tampered with"
                if entry.derived_by:
                    cause += f", or `{entry.derived_by}` ran with other library versions than the pinned file's"
                raise ModelError(
                    f"model file {path} does not match the manifest (sha256 {digest}, expected "
                    f"{entry.sha256}): it is {cause}; delete it and {entry.how_to_get()}"
                )
            return path, data
    where = ", ".join(str(d) for d in dirs)
    raise ModelError(
        f"model file {entry.file} ({entry.name}) not found in: {where}; {entry.how_to_get()}, or point "
        "detector.model_dir or EDGE_MODEL_DIR at the folder that holds it"
    )


def fetch(entry: ModelEntry, dest_dir: Path | None = None, timeout_s: float = 60.0) -> Path:
    """Download ``entry.url`` into ``dest_dir`` (default: the cache) and keep it only if its sha256 matches."""
    if entry.url is None:
        raise AssetError(f"model {entry.name} ({entry.file}) has no pinned public URL: {entry.how_to_get()}")
    dest_dir = dest_dir or cache_dir()
    dest = dest_dir / entry.file
    if dest.is_file() and sha256_file(dest) == entry.sha256:
        log.info("%s already present and verified at %s", entry.name, dest)
        return dest
    return download_verified(entry.url, entry.sha256, dest, timeout_s)


def write_model(data: bytes, out: Path) -> str:
    """Write a model file produced locally (a derived model) atomically, readable like a downloaded one;
    its sha256."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(part, 0o644)  # mkstemp makes it private
        os.replace(part, out)
    finally:
        Path(part).unlink(missing_ok=True)
    return hashlib.sha256(data).hexdigest()


def download_verified(url: str, sha256: str, dest: Path, timeout_s: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically; raise ``AssetError`` unless the sha256 matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != sha256:
            raise AssetError(
                f"download of {url} has sha256 {h.hexdigest()}, expected {sha256}; nothing was kept. "
                "The pinned file changed or the download was corrupted"
            )
        os.replace(tmp, dest)
    except OSError as exc:
        raise AssetError(f"cannot download {url}: {exc}; check the network or fetch it by hand") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest
