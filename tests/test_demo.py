"""The README's first command as a newcomer meets it without ../shared: the demo checks its two files before it
installs anything, and a file it can neither find nor download is named with its URL, where to put it and its
sha256 (issue 18 item 5). ``tools/samples.py`` reads the model manifest without PyYAML; it must agree with
``edge.models``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from edge.models import load_manifest
from tests.conftest import REPO, shared_path

sys.path.insert(0, str(REPO / "tools"))
import samples  # tools/ is no package: demo.sh runs it as a script

#: An address nothing listens on: every download fails at once, as on a machine without internet.
NO_NETWORK = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}


def _bare_clone(tmp_path: Path) -> Path:
    """The files the demo's first step needs, in a folder with no ../shared beside it."""
    repo = tmp_path / "clone" / "main"
    for rel in ("tools/demo.sh", "tools/samples.py", "models/manifest.yaml", "pyproject.toml"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, repo / rel)
    return repo


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"XDG_CACHE_HOME", "EDGE_MODEL_DIR"}}
    return env | NO_NETWORK | {"HOME": str(tmp_path / "home")}


def test_the_manifest_reader_agrees_with_edge_models() -> None:
    for model in load_manifest().models:
        entry = samples.manifest_entry(model.name)
        assert (entry["file"], entry["sha256"], entry.get("url")) == (model.file, model.sha256, model.url or None)


def test_demo_without_shared_or_network_says_what_to_fetch_before_installing(tmp_path: Path) -> None:
    repo = _bare_clone(tmp_path)
    t0 = time.monotonic()
    run = subprocess.run(["bash", str(repo / "tools/demo.sh")], capture_output=True, text=True,
                         env=_env(tmp_path), timeout=60)
    took = time.monotonic() - t0
    model = samples.model_asset()
    assert run.returncode == 1, run.stdout + run.stderr
    assert model.url in run.stderr and model.sha256 in run.stderr
    assert str(tmp_path / "home" / ".cache" / "edge" / "models" / "yolox_nano_coco_416.onnx") in run.stderr
    assert "Traceback" not in run.stderr
    assert not (repo / ".venv").exists() and took < 30  # nothing installed first


def test_hand_placed_files_in_the_cache_are_used_and_a_wrong_one_is_named(tmp_path: Path) -> None:
    model_src = shared_path("models/yolox_nano_coco_416.onnx")
    clip_src = shared_path("footage/highway-overpass/video1.avi")
    repo = _bare_clone(tmp_path)
    cache = tmp_path / "home" / ".cache" / "edge"
    (cache / "models").mkdir(parents=True)
    (cache / "samples").mkdir(parents=True)
    shutil.copy(model_src, cache / "models" / model_src.name)
    shutil.copy(clip_src, cache / "samples" / clip_src.name)
    cmd = [sys.executable, str(repo / "tools/samples.py"), "demo"]
    ok = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[:2] == [str(cache / "models"), str(cache / "samples" / clip_src.name)]
    (cache / "samples" / clip_src.name).write_bytes(b"not the clip")
    bad = subprocess.run(cmd, capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert bad.returncode == 1 and "wrong sha256" in bad.stderr
    assert samples.SAMPLES["highway-overpass"].url in bad.stderr
    assert "Traceback" not in bad.stderr
