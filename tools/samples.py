"""Public sample clips and the default model, pinned by URL and sha256 (see ../shared/docs/DATA.md).

    python3 tools/samples.py NAME       # prints the sample's local path, downloading it into the cache if needed
    python3 tools/samples.py demo       # what tools/demo.sh needs: the model folder and the demo clip

Uses the copy in ../shared when present (byte-identical), else the cache (~/.cache/edge), else downloads
once into the cache. When a file can be neither found nor downloaded it says which URL to fetch by hand,
where to put the file and its sha256, and exits 1. Standard library only: demo.sh runs it before it
installs anything, so a missing file is reported in seconds, not after the install. Nothing here runs on
the device.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DEMO_MODEL = "yolox-nano-416"  # the config default (edge.config DetectorConfig.model)


@dataclass(frozen=True)
class Asset:
    name: str
    url: str
    sha256: str
    shared: Path  # the copy under ../shared, when that folder sits beside the clone
    cache: Path  # where a download goes (and where a hand-fetched file may be put)


@dataclass(frozen=True)
class Sample:
    url: str
    sha256: str
    shared: Path
    hand_count: str = ""  # what a person counted, shown beside the pipeline's count by the demo


SAMPLES = {
    "highway-overpass": Sample(
        "https://raw.githubusercontent.com/andrewssobral/vehicle_detection_haarcascades/"
        "1530acb6dafdc42225797accff11f15e5f4d4257/dataset/video1.avi",
        "a7c7d98162e1ca5a971d29916b47cd15120cfc60f5bc435fb81d8807e254bade",
        SHARED / "footage" / "highway-overpass" / "video1.avi",
        "line L2: 31 up, 0 down (by hand, ../shared/footage/highway-overpass/ground_truth_L2.csv)",
    ),
    "otc-cars-cyclist": Sample(
        "https://raw.githubusercontent.com/OpenTrafficCam/OTVision/c88ee8f5904fe25a48a3934a5b33889476e05958/"
        "tests/data/Testvideo_Cars-Cyclist_FR20_2020-01-01_00-00-00.mp4",
        "59fd3c64c545c82d6a033e7015e170e7d23e6df0eb76a92a9b355931c3b3bb6f",
        SHARED / "footage" / "otc-intersection" / "Testvideo_Cars-Cyclist_FR20_2020-01-01_00-00-00.mp4",
    ),
    "carpark": Sample(
        "https://raw.githubusercontent.com/intel-iot-devkit/sample-videos/"
        "57978890822836f2b4743852f04f62fc511757e4/car-detection.mp4",
        "d31e0ebf194cc16e50eea784e7c3b0b1bb7976a4fb9b3fec26cb92a6704cca34",
        SHARED / "footage" / "carpark-audio" / "car-detection.mp4",
    ),
}
DEMO_SAMPLE = "highway-overpass"


class MissingAssetError(Exception):
    """A file that is neither present nor downloadable; the message says how to put it in place."""


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge"


def manifest_entry(name: str, manifest: Path = REPO / "models" / "manifest.yaml") -> dict[str, str]:
    """The flat scalar keys (file, sha256, url, ...) of one model of the manifest, read without PyYAML.

    The manifest is a list of ``- name: ...`` blocks with ``key: value`` lines; tests check that this
    reading agrees with ``edge.models.load_manifest`` for every model."""
    entry: dict[str, str] | None = None
    for line in manifest.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\s*(-\s+)?([a-z_0-9]+):\s*(.*?)\s*$", line.split(" #", 1)[0])
        if m is None:
            continue
        if m.group(1):  # a new list item
            if entry is not None and entry.get("name") == name:
                return entry
            entry = {}
        if entry is not None and m.group(3) not in {"", "null", "~"}:  # YAML null: the key is left out
            entry[m.group(2)] = m.group(3)
    if entry is not None and entry.get("name") == name:
        return entry
    raise MissingAssetError(f"model {name} is not in {manifest}")


def model_asset(name: str = DEMO_MODEL) -> Asset:
    e = manifest_entry(name)
    return Asset(f"model {name}", e["url"], e["sha256"], SHARED / "models" / e["file"],
                 cache_root() / "models" / e["file"])


def sample_asset(name: str) -> Asset:
    s = SAMPLES[name]
    return Asset(f"sample clip {name}", s.url, s.sha256, s.shared, cache_root() / "samples" / s.url.rsplit("/", 1)[1])


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _how_to_fetch(asset: Asset, why: str) -> str:
    return (f"{asset.name}: {why}.\n  fetch it by hand: {asset.url}\n  put it at:        {asset.cache}\n"
            f"  its sha256:       {asset.sha256}\n  (or place ../shared beside this clone: {asset.shared})")


def _download(asset: Asset, timeout_s: float) -> None:
    asset.cache.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(prefix=f".{asset.cache.name}.", suffix=".part", dir=asset.cache.parent)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(asset.url, timeout=timeout_s) as resp:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
        if h.hexdigest() != asset.sha256:
            why = f"the download has sha256 {h.hexdigest()}, not the pinned one"
            raise MissingAssetError(_how_to_fetch(asset, why))
        os.chmod(part, 0o644)
        os.replace(part, asset.cache)
    except OSError as exc:
        raise MissingAssetError(_how_to_fetch(asset, f"not found here and the download failed ({exc})")) from None
    finally:
        Path(part).unlink(missing_ok=True)


def resolve(asset: Asset, timeout_s: float = 60.0) -> Path:
    """The verified local file of ``asset``: ../shared, else the cache, else a download into the cache."""
    if asset.shared.is_file() and sha256_file(asset.shared) == asset.sha256:
        return asset.shared
    if asset.cache.is_file():
        if sha256_file(asset.cache) == asset.sha256:
            return asset.cache
        raise MissingAssetError(_how_to_fetch(asset, f"{asset.cache} has the wrong sha256 (delete it or replace it)"))
    print(f"downloading {asset.name} from {asset.url} ...", file=sys.stderr)
    _download(asset, timeout_s)
    return asset.cache


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=[*sorted(SAMPLES), "demo"])
    name = ap.parse_args(argv).name
    try:
        if name == "demo":  # one line each, for the shell: the model's folder, the clip, the hand count
            print(resolve(model_asset()).parent)
            print(resolve(sample_asset(DEMO_SAMPLE)))
            print(SAMPLES[DEMO_SAMPLE].hand_count)
        else:
            print(resolve(sample_asset(name)))
    except MissingAssetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
