"""Invariants a privacy officer checks: no stray image files (P2), crash-safe clips (P3), a full disk drops
clips and never metrics, and no config beyond the protocol (P5)."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.clips.store import ClipStore
from edge.config import parse_config
from edge.errors import ConfigError
from edge.protocol import PROTOCOL
from tests.clip_helpers import clip_files, probe_ok, probe_streams
from tests.conftest import REPO, missing, shared_path

CARPARK = "footage/carpark-audio/car-detection.mp4"
IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"ftyp")


def clip_config(tmp_path: Path, **clips: object) -> Path:
    data = yaml.safe_load((REPO / "config" / "carpark.yaml").read_text())
    data["detector"] = {"model_dir": str(shared_path("models"))}
    data["clips"] = {"enabled": True, "pre_roll_s": 2, "post_roll_s": 2, **clips}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def replay_cmd(config: Path, out: Path, events: list[float], video: str = CARPARK) -> list[str]:
    cmd = [sys.executable, "-m", "edge.cli", "replay", str(shared_path(video)), "-c", str(config), "-o", str(out),
           "-q"]
    for t in events:
        cmd += ["--force-event", str(t)]
    return cmd


# ------------------------------------------------------------------------------------ P2: file audit
def test_replay_with_clips_writes_images_only_into_the_clip_store(tmp_path: Path) -> None:
    strace = shutil.which("strace")
    if strace is None:
        missing("strace is not on PATH; install it (Debian: apt-get install strace)")
    out = tmp_path / "out"
    trace = tmp_path / "trace.log"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [strace, "-f", "-qq", "-e", "trace=openat,open,creat,rename,renameat,renameat2,link,linkat",
         "-o", str(trace), *replay_cmd(clip_config(tmp_path), out, [4.0, 15.0])],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    written: set[str] = set()
    for line in trace.read_text().splitlines():
        m = re.search(r'(?:openat|open|creat)\((?:AT_FDCWD, )?"([^"]+)", ([A-Z_|]+)', line)
        if m and re.search(r"O_WRONLY|O_RDWR|O_CREAT", m.group(2)):
            written.add(os.path.realpath(m.group(1)))
        for target in re.findall(r'rename\w*\(.*?"([^"]+)".*?"([^"]+)"', line):
            written.add(os.path.realpath(target[1]))
    allowed = (str(out.resolve()) + os.sep, "/dev/", "/proc/")
    stray = sorted(p for p in written if not p.startswith(allowed))
    assert stray == [], f"writes outside the output folder: {stray}"
    clips = clip_files(out / "clips")
    assert len(clips) == 2
    for path in out.rglob("*"):
        if path.is_file() and path.parent != out / "clips":
            head = path.read_bytes()
            assert not any(magic in head for magic in IMAGE_MAGIC), f"image data in {path}"


# ------------------------------------------------------------------------------- P3: crash safety
def test_sigkill_while_writing_clips_leaves_only_whole_clips(tmp_path: Path) -> None:
    rng = random.Random(20261127)
    config = clip_config(tmp_path, pre_roll_s=1, post_roll_s=1, redaction=None)
    out = tmp_path / "out"
    events = [1.5 + 1.0 * i for i in range(27)]  # a clip every second: the writer is always busy
    kills = 0
    for _ in range(6):
        proc = subprocess.Popen(replay_cmd(config, out, events), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.5, 5.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        store = ClipStore(out / "clips", 1, 10**10)  # what a restart does first
        records = {r.file for r in store.records()}
        files = {p.name for p in clip_files(out / "clips")}
        store.close()
        assert not [n for n in files if ".partial" in n]
        assert records == files
        for name in files:
            assert probe_ok(out / "clips" / name), name
    assert kills >= 3, "the kills must land while the replay runs"


# -------------------------------------------------------------------------------------- disk full
def test_full_clip_disk_drops_clips_and_keeps_counting(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        missing("mounting a small tmpfs needs root (CI runs as root)")
    clips_dir = tmp_path / "out" / "clips"
    clips_dir.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(clips_dir)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        missing(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); CI runs as root with mount rights")
    try:
        proc = subprocess.run(replay_cmd(clip_config(tmp_path, redaction=None), tmp_path / "out",
                                         [3.0, 9.0, 15.0, 21.0]),
                              capture_output=True, text=True, timeout=300, check=False)
        assert proc.returncode == 0, proc.stderr
        m = re.search(r"clips written (\d+) .*disk full (\d+)", proc.stdout)
        assert m is not None, proc.stdout
        assert int(m.group(2)) >= 1, proc.stdout
        assert int(m.group(1)) + int(m.group(2)) == 4, proc.stdout
        assert "frames 377" in proc.stdout  # every frame still counted
        assert (tmp_path / "out" / "metrics.jsonl").read_text().count("\n") == 1
        assert not [p for p in clips_dir.iterdir() if ".partial" in p.name]
        for clip in clip_files(clips_dir):
            assert probe_streams(clip) == ["video"]
    finally:
        subprocess.run(["umount", str(clips_dir)], check=False)


# ------------------------------------------------------------------------------------ P5: config
CLIPS = st.fixed_dictionaries({}, optional={
    "enabled": st.booleans(),
    "pre_roll_s": st.floats(-5, 120, allow_nan=False),
    "post_roll_s": st.floats(-5, 120, allow_nan=False),
    "max_clip_s": st.floats(-1, 300, allow_nan=False),
    "retention_days": st.floats(-1, 365, allow_nan=False),
    "max_store_bytes": st.integers(-1, 2 * PROTOCOL.limits.max_clip_store_bytes),
    "budget_s_per_hour": st.floats(-1, 2 * PROTOCOL.limits.max_clip_s_per_hour, allow_nan=False),
    "budget_s_per_day": st.floats(-1, 2 * PROTOCOL.limits.max_clip_s_per_day, allow_nan=False),
})
PRIVACY = st.fixed_dictionaries({}, optional={
    "record_audio": st.booleans(), "per_object_output": st.booleans(), "export_frames": st.booleans(),
})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clips=CLIPS, privacy=PRIVACY, window_s=st.integers(1, 7200))
def test_no_accepted_config_exceeds_the_protocol(clips: dict[str, object], privacy: dict[str, object],
                                                 window_s: int) -> None:
    data = {"device_id": "cam-1", "cameras": [{"name": "c"}], "clips": clips, "privacy": privacy,
            "windows": {"window_s": window_s}}
    try:
        config = parse_config(data)
    except ConfigError as exc:
        text = str(exc)
        assert "protocol" in text or "greater than" in text or "less than" in text or "Input should" in text
        return
    limits = PROTOCOL.limits
    c = config.clips
    assert c.pre_roll_s + c.post_roll_s <= limits.max_clip_s
    assert c.max_clip_s <= limits.max_clip_s
    assert c.retention_days <= limits.max_retention_days
    assert c.max_store_bytes <= limits.max_clip_store_bytes
    assert 0 < c.budget_s_per_hour <= limits.max_clip_s_per_hour
    assert 0 < c.budget_s_per_day <= limits.max_clip_s_per_day
    assert config.windows.window_s >= limits.min_window_s
    assert not config.privacy.record_audio
    assert not config.privacy.per_object_output
    assert not config.privacy.export_frames


def test_refusal_names_field_limit_and_clause() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"device_id": "d", "cameras": [{"name": "c"}], "clips": {"pre_roll_s": 20, "post_roll_s": 20}})
    text = str(exc.value)
    assert "clips.pre_roll_s + clips.post_roll_s = 40.0" in text
    assert "30.0" in text
    assert f"protocol {PROTOCOL.id} clause P3" in text


@pytest.mark.parametrize(("field", "limit"), [("budget_s_per_hour", PROTOCOL.limits.max_clip_s_per_hour),
                                              ("budget_s_per_day", PROTOCOL.limits.max_clip_s_per_day)])
def test_a_looser_clip_budget_is_refused_with_field_limit_and_clause(field: str, limit: float) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config({"device_id": "d", "cameras": [{"name": "c"}], "clips": {field: limit + 1}})
    text = str(exc.value)
    assert f"clips.{field} = {limit + 1}" in text
    assert f"limit {limit} of protocol {PROTOCOL.id} clause P3" in text
    assert "lower it" in text
    tighter = parse_config({"device_id": "d", "cameras": [{"name": "c"}], "clips": {field: limit / 2}})
    assert getattr(tighter.clips, field) == limit / 2
    defaults = parse_config({"device_id": "d", "cameras": [{"name": "c"}]}).clips
    assert (defaults.budget_s_per_hour, defaults.budget_s_per_day) == (120.0, 600.0)
    assert "budget" in PROTOCOL.clause("P3").text


def test_attestation_shows_the_effective_clip_budget(tmp_path: Path) -> None:
    from edge.attest import attestation
    from edge.config import load_config

    path = clip_config(tmp_path, budget_s_per_hour=12)
    limits = attestation(load_config(path), path)["effective_limits"]
    assert limits["clip_budget_s_per_hour"] == 12.0
    assert limits["clip_budget_s_per_day"] == PROTOCOL.limits.max_clip_s_per_day


def test_validate_config_cli_refuses_audio(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"device_id": "d", "cameras": [{"name": "c"}], "privacy": {"record_audio": True}}))
    proc = subprocess.run([sys.executable, "-m", "edge.cli", "validate-config", str(path)], capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 1
    assert "privacy.record_audio" in proc.stderr
    assert "clause P1" in proc.stderr
