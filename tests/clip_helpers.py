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


def truncate_keyframe(src: Path, dst: Path, keyframe_pts: int) -> None:
    """Copy the video stream of ``src`` into ``dst`` (same container type, no re-encoding) with the
    keyframe at ``keyframe_pts`` cut to an eighth of its bytes: a real corrupt packet, as a camera's bit
    errors or a cut recording leave them."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        video = inp.streams.video[0]
        stream = out.add_stream_from_template(video)
        for packet in inp.demux(video):
            if packet.dts is None:
                continue
            if packet.is_keyframe and packet.pts == keyframe_pts:
                cut = av.Packet(bytes(packet)[: packet.size // 8])
                cut.pts, cut.dts, cut.time_base, cut.is_keyframe = packet.pts, packet.dts, packet.time_base, True
                cut.stream = stream
                out.mux(cut)
                continue
            packet.stream = stream
            out.mux(packet)
