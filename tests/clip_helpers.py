"""Helpers for clip tests: ffprobe (an independent probe), and replay runs with forced events."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.conftest import missing


def ffprobe_exe() -> str:
    exe = shutil.which("ffprobe")
    if exe is None:
        missing("ffprobe is not on PATH; install ffmpeg (Debian: apt-get install ffmpeg)")
    return exe


def probe_streams(path: Path) -> list[str]:
    """Codec types of every stream in the file, as ffprobe sees them."""
    out = subprocess.run([ffprobe_exe(), "-v", "error", "-show_entries", "stream=codec_type", "-of", "json",
                          str(path)], check=True, capture_output=True, text=True, timeout=60)
    return [s["codec_type"] for s in json.loads(out.stdout).get("streams", [])]


def probe_frames(path: Path) -> int:
    """Decoded frame count of the first video stream (ffprobe -count_frames)."""
    out = subprocess.run([ffprobe_exe(), "-v", "error", "-count_frames", "-select_streams", "v:0",
                          "-show_entries", "stream=nb_read_frames", "-of", "json", str(path)],
                         check=True, capture_output=True, text=True, timeout=120)
    return int(json.loads(out.stdout)["streams"][0]["nb_read_frames"])


def probe_ok(path: Path) -> bool:
    proc = subprocess.run([ffprobe_exe(), "-v", "error", "-show_entries", "stream=codec_type", "-of", "json",
                           str(path)], capture_output=True, text=True, timeout=60, check=False)
    return proc.returncode == 0 and '"video"' in proc.stdout


def clip_files(store: Path) -> list[Path]:
    return sorted(p for p in store.iterdir() if not p.name.startswith("index.sqlite"))
