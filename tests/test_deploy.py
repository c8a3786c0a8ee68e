"""The systemd unit (deploy/edge.service): its exposure score, where it lets the service write, and that the
service still works under its system-call filter (RELIABILITY.md D5)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from edge.config import ClipsConfig, MqttConfig
from tests.conftest import REPO, missing, shared_path
from tests.mqtt_broker import DEVICE, DEVICE_PASSWORD, Broker
from tests.seccomp_filter import libseccomp, unit_filter

UNIT = REPO / "deploy" / "edge.service"
MAX_EXPOSURE = 2.0


def systemd_analyze() -> str:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        missing("systemd-analyze not found: it rates the unit; install it with `apt-get install systemd`")
    return exe


def directives(name: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(rf"^{name}=(.*)$", UNIT.read_text(), re.MULTILINE)]


def test_the_unit_is_rated_at_most_2_0_by_systemd_analyze(tmp_path: Path) -> None:
    """Before: 2.2 (no ProtectProc, ProcSubset, PrivateUsers, IP allow list, RemoveIPC; @privileged and
    @resources allowed)."""
    unit = tmp_path / "edge.service"  # offline mode rates a unit file by its path
    shutil.copy(UNIT, unit)
    proc = subprocess.run([systemd_analyze(), "security", "--offline=yes", f"--threshold={MAX_EXPOSURE * 10:g}",
                           str(unit)], capture_output=True, text=True, timeout=60, check=False)
    m = re.search(r"Overall exposure level for edge\.service: (\d+\.\d)", proc.stdout)
    assert m is not None, proc.stdout + proc.stderr
    assert float(m.group(1)) <= MAX_EXPOSURE, proc.stdout
    assert proc.returncode == 0, proc.stdout  # --threshold agrees


def test_the_unit_lets_the_service_write_only_its_clip_and_spool_folders() -> None:
    """``StateDirectory=edge`` made all of /var/lib/edge writable, whatever ReadWritePaths said."""
    state = [d for line in directives("StateDirectory") for d in line.split()]
    assert sorted(state) == ["edge/clips", "edge/spool"]
    assert directives("ProtectSystem") == ["strict"]
    writable = [Path("/var/lib", d) for d in state] + [
        Path(p.lstrip("-")) for line in directives("ReadWritePaths") for p in line.split()]
    assert all(p in {Path("/var/lib/edge/clips"), Path("/var/lib/edge/spool")} for p in writable), writable
    # the example device config puts the outbox and the clips there
    example = yaml.safe_load((REPO / "config" / "device-example.yaml").read_text())
    assert Path(example["mqtt"]["outbox_path"]).parent == Path("/var/lib/edge/spool")
    assert Path(example["clips"]["store_dir"]) == Path("/var/lib/edge/clips")
    assert ClipsConfig().store_dir == Path("/var/lib/edge/clips")


def test_the_default_outbox_lies_in_the_spool() -> None:
    assert MqttConfig(url="mqtt://127.0.0.1:1883").outbox_path.parent == Path("/var/lib/edge/spool")


def test_the_unit_allows_ip_traffic_only_to_listed_addresses_and_hides_other_processes() -> None:
    assert directives("IPAddressDeny") == ["any"]
    allowed = " ".join(directives("IPAddressAllow")).split()
    assert "localhost" in allowed and "any" not in allowed
    for name, value in {"ProtectProc": "invisible", "ProcSubset": "pid", "PrivateUsers": "yes",
                        "RemoveIPC": "yes", "NoNewPrivileges": "yes", "SystemCallErrorNumber": "EPERM"}.items():
        assert directives(name) == [value], name
    assert directives("SupplementaryGroups") == []  # install.sh puts the user in group video


def test_the_system_call_filter_refuses_privileged_and_resource_calls_but_setpriority() -> None:
    systemd_analyze()
    allowed, errno_value = unit_filter(UNIT)
    assert errno_value == 1  # EPERM
    assert {"openat", "ioctl", "mmap", "futex", "clone3", "prlimit64", "setpriority"} <= allowed
    assert not {"setuid", "chown", "mount", "sched_setaffinity", "mbind", "reboot"} & allowed


def test_a_replay_with_clips_and_mqtt_over_tls_runs_under_the_units_system_call_filter(
        broker: Broker, tmp_path: Path) -> None:
    """Python, PyAV/FFmpeg, onnxruntime's threads, SQLite (outbox, clip index), TLS and paho, the clip
    writer lowering its priority: all under the unit's filter, where any other call fails with EPERM."""
    systemd_analyze()
    if libseccomp() is None:
        missing("libseccomp not found: it applies the unit's system-call filter; apt-get install libseccomp2")
    video = tmp_path / "clip.mp4"
    subprocess.run([shutil.which("ffmpeg") or "ffmpeg", "-nostdin", "-loglevel", "error", "-i",
                    str(shared_path("footage/carpark-audio/car-detection.mp4")), "-t", "6", "-map", "0:v",
                    "-c", "copy", str(video)], check=True, timeout=60)
    data = yaml.safe_load((REPO / "config" / "carpark.yaml").read_text())
    data["device_id"] = DEVICE
    data["detector"] = {"model_dir": str(shared_path("models"))}
    data["clips"] = {"enabled": True, "store_dir": str(tmp_path / "clips")}
    data["mqtt"] = broker.publisher_config(tmp_path / "outbox.sqlite").model_dump(mode="json", exclude_none=True)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    wrap = [sys.executable, "-m", "tests.seccomp_filter", str(UNIT), "--", sys.executable]
    probe = "import os\ntry:\n    os.sched_setaffinity(0, {0})\nexcept PermissionError:\n    print('refused')"
    assert subprocess.run([*wrap, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=True).stdout == "refused\n"  # the filter is in force
    cmd = [*wrap, "-m", "edge.cli", "replay", str(video), "-c", str(config), "-o", str(tmp_path / "out"),
           "--publish", "--start-time", "2024-05-01T07:00:00Z", "--force-event", "2", "-q"]
    proc = subprocess.run(cmd, cwd=REPO, env={**os.environ, "EDGE_TEST_MQTT_PASSWORD": DEVICE_PASSWORD},
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "clips written 1" in proc.stdout, proc.stdout
    assert "not all acknowledged" not in proc.stdout, proc.stdout  # every record reached the broker
    assert "decode errors 0" in proc.stdout
