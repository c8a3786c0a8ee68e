"""Public sample clips, pinned to a commit and checked by sha256 (see ../shared/docs/DATA.md).

    python tools/samples.py NAME        # prints the local path, downloading into the cache if needed

Uses the copy in ../shared/footage when present (byte-identical), else downloads once into
~/.cache/edge/samples. Nothing here runs on the device.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from edge.models import download_verified, sha256_file

SHARED = Path(__file__).resolve().parents[2] / "shared" / "footage"
SAMPLES = {
    "otc-cars-cyclist": (
        "https://raw.githubusercontent.com/OpenTrafficCam/OTVision/c88ee8f5904fe25a48a3934a5b33889476e05958/"
        "tests/data/Testvideo_Cars-Cyclist_FR20_2020-01-01_00-00-00.mp4",
        "59fd3c64c545c82d6a033e7015e170e7d23e6df0eb76a92a9b355931c3b3bb6f",
        SHARED / "otc-intersection" / "Testvideo_Cars-Cyclist_FR20_2020-01-01_00-00-00.mp4",
    ),
    "carpark": (
        "https://raw.githubusercontent.com/intel-iot-devkit/sample-videos/"
        "57978890822836f2b4743852f04f62fc511757e4/car-detection.mp4",
        "d31e0ebf194cc16e50eea784e7c3b0b1bb7976a4fb9b3fec26cb92a6704cca34",
        SHARED / "carpark-audio" / "car-detection.mp4",
    ),
}


def sample_path(name: str) -> Path:
    url, sha256, local = SAMPLES[name]
    if local.is_file() and sha256_file(local) == sha256:
        return local
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edge" / "samples"
    dest = cache / url.rsplit("/", 1)[1]
    if dest.is_file() and sha256_file(dest) == sha256:
        return dest
    return download_verified(url, sha256, dest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name", choices=sorted(SAMPLES))
    print(sample_path(ap.parse_args().name))


if __name__ == "__main__":
    main()
