"""Every config error is refused at start-up, with its YAML path, by validate-config and run alike."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.clips import crypto
from edge.config import parse_config
from edge.errors import ConfigError
from edge.prepare import prepare
from tests.conftest import REPO, shared_path

# four points on one line: no homography can be fitted
DEGENERATE = {"points": [{"image_px": [10.0 * k, 10.0 * k], "ground_m": [float(k), float(k)]} for k in range(4)]}


def device(tmp_path: Path, **camera: Any) -> dict[str, Any]:
    return {
        "device_id": "d",
        "detector": {"model_dir": str(shared_path("models"))},
        "mqtt": {"url": "mqtt://127.0.0.1:1", "outbox_path": str(tmp_path / "outbox.sqlite")},
        "cameras": [{"name": "north", "source": {"kind": "file", "path": str(tmp_path / "none.mp4")}, **camera}],
    }


def cases(tmp_path: Path) -> dict[str, tuple[dict[str, Any], str]]:
    """name -> (config, the YAML path the refusal must name)."""
    private, _ = crypto.generate_keypair()
    (tmp_path / "private.pem").write_bytes(private)
    (tmp_path / "garbage.pem").write_text("not a key\n")
    (tmp_path / "raw.key").write_bytes(bytes(range(32)))  # 32 raw bytes: as likely a private key as a public one
    many = [{"name": f"line-with-a-long-name-{k:02d}", "points_px": [[0, k], [100, k]]} for k in range(40)]
    clips = {"enabled": True, "store_dir": str(tmp_path / "clips")}
    return {
        "degenerate calibration": (device(tmp_path, calibration=DEGENERATE), "cameras[0].calibration.points"),
        "missing clip key": ({**device(tmp_path), "clips": {
            **clips, "encryption": {"public_key_file": str(tmp_path / "absent.pem")}}}, "clips.encryption"),
        "malformed clip key": ({**device(tmp_path), "clips": {
            **clips, "encryption": {"public_key_file": str(tmp_path / "garbage.pem")}}}, "clips.encryption"),
        "private key as clip key": ({**device(tmp_path), "clips": {
            **clips, "encryption": {"public_key_file": str(tmp_path / "private.pem")}}}, "private key"),
        "raw 32-byte clip key": ({**device(tmp_path), "clips": {
            **clips, "encryption": {"public_key_file": str(tmp_path / "raw.key")}}}, "not a PEM public key"),
        "clips without encryption": ({**device(tmp_path), "clips": clips}, "clips.encryption: a device writes"),
        "oversize payload": (device(tmp_path, lines=many), "payload limit"),
        "unknown model": ({**device(tmp_path), "detector": {"model": "yolox-huge"}}, "detector.model"),
    }


@pytest.mark.parametrize("name", ["degenerate calibration", "missing clip key", "malformed clip key",
                                  "private key as clip key", "raw 32-byte clip key", "clips without encryption",
                                  "oversize payload", "unknown model"])
def test_validate_config_and_run_refuse_it_before_any_thread_starts(name: str, tmp_path: Path) -> None:
    data, where = cases(tmp_path)[name]
    path = tmp_path / "device.yaml"
    path.write_text(yaml.safe_dump(data))
    for command in ("validate-config", "run"):
        args = [sys.executable, "-m", "edge.cli", command, *(["-c"] if command == "run" else []), str(path)]
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        assert where in proc.stderr, (command, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert "edge run: device" not in proc.stdout  # the service never started ...
        assert not (tmp_path / "outbox.sqlite").exists()  # ... nor its publisher
        assert not (tmp_path / "clips").exists()  # ... nor a clip store


def test_plaintext_clips_on_a_device_need_the_attested_lab_opt_out(tmp_path: Path) -> None:
    """Issue 14 item 10: clips on without encryption pass only with clips.unencrypted_lab, which the
    attestation reports; a replay (the engineer's machine) may write plaintext without it."""
    import json

    data = {**device(tmp_path), "clips": {"enabled": True, "store_dir": str(tmp_path / "clips"),
                                          "unencrypted_lab": True}}
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    attest = subprocess.run([sys.executable, "-m", "edge.cli", "attest", "-c", str(path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=False)
    record = json.loads(attest.stdout)
    (check,) = [c for c in record["checks"] if c["name"] == "clips_encrypted"]
    assert check["ok"] and "lab opt-out" in check["detail"]
    assert record["effective_limits"]["encrypted_at_rest"] is False
    assert record["effective_limits"]["unencrypted_lab"] is True
    replay_config = parse_config({**data, "clips": {"enabled": True}})
    prepare(replay_config, device=False)  # a replay: no encryption needed
    with pytest.raises(ConfigError, match=r"clips\.encryption"):
        prepare(replay_config)


def test_prepare_returns_what_it_fitted() -> None:
    data = yaml.safe_load((REPO / "config" / "highway-overpass.yaml").read_text())
    data["detector"] = {"model_dir": str(shared_path("models"))}
    prepared = prepare(parse_config(data))
    name = data["cameras"][0]["name"]
    assert set(prepared.calibrations) == {name}
    assert prepared.model_path is not None and prepared.model_path.is_file()
    with pytest.raises(ConfigError, match=r"detector\.model"):
        prepare(parse_config({**data, "detector": {"model_dir": "/nonexistent"}}))


def test_a_line_zone_or_calibration_point_outside_the_frame_is_refused_where_the_frame_is_known(
        tmp_path: Path) -> None:
    """A counting line drawn for another camera's resolution would count zero without a word."""
    video = shared_path("footage/highway-overpass/video1.avi")  # 320x240
    data = yaml.safe_load((REPO / "config" / "highway-overpass.yaml").read_text())
    data["detector"] = {"model_dir": str(shared_path("models"))}
    cam = data["cameras"][0]
    cam["lines"].append({"name": "far-off", "points_px": [[400, 300], [900, 300]]})  # a 1080p line
    cam["calibration"]["points"][0]["image_px"] = [330.0, 100.0]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    replay = subprocess.run([sys.executable, "-m", "edge.cli", "replay", str(video), "-c", str(path), "-o",
                             str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert replay.returncode == 1
    assert f"cameras[0].lines[{len(cam['lines']) - 1}].points_px: line 'far-off' lies outside" in replay.stderr
    assert "cameras[0].calibration.points[0].image_px" in replay.stderr and "320x240" in replay.stderr
    assert not (tmp_path / "out" / "metrics.jsonl").exists()
    # with the camera's source a file, validate-config probes it the same way
    cam["source"] = {"kind": "file", "path": str(video)}
    path.write_text(yaml.safe_dump(data))
    check = subprocess.run([sys.executable, "-m", "edge.cli", "validate-config", str(path)], cwd=REPO,
                           capture_output=True, text=True, timeout=60, check=False)
    assert check.returncode == 1 and "line 'far-off' lies outside" in check.stderr
