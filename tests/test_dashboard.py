"""The dashboard server and its static files, without a broker or a browser: routes, headers, settings,
the schemas it serves, the archive it reads, and the vendored libraries it ships (pinned, with licences)."""

from __future__ import annotations

import hashlib
import json
import re
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.dashboard.archive import load_history
from edge.dashboard.server import SCHEMAS, STATIC_DIR, DashboardServer, DashboardSettings, broker_origin
from edge.errors import ConfigError
from tests.conftest import REPO
from tests.mqtt_broker import Pki

README = STATIC_DIR / "README.md"


@pytest.fixture
def served() -> Iterator[DashboardServer]:
    server = DashboardServer(DashboardSettings("wss://broker.city.example:8884", username="dashboard"), port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _get(server: DashboardServer, path: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_page_its_settings_and_the_contracts_schemas_are_served(served: DashboardServer) -> None:
    status, headers, body = _get(served, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html") and b"static/app.js" in body
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self' wss://broker.city.example:8884;" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    config = json.loads(_get(served, "/config.json")[2])
    assert config["broker_url"] == "wss://broker.city.example:8884" and config["username"] == "dashboard"
    assert "password" not in json.dumps(config)  # the server holds no credential
    for kind, name in SCHEMAS.items():
        status, _, schema = _get(served, "/" + config["schemas"][kind])
        assert status == 200 and schema == (REPO / "contract" / "schemas" / name).read_bytes()
    assert json.loads(_get(served, "/history.json")[2]) == {"source": None, "points": []}


@pytest.mark.parametrize("path", ["/static/../server.py", "/static/%2e%2e/server.py", "/../pyproject.toml",
                                  "/schemas/../../pyproject.toml", "/static/", "/nope"])
def test_nothing_but_the_listed_files_is_served(served: DashboardServer, path: str) -> None:
    assert _get(served, path)[0] == 404


def test_the_page_loads_nothing_from_elsewhere() -> None:
    """No CDN: every script and style the page names is a file of static/ (the CSP enforces it in the browser)."""
    html = (STATIC_DIR / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all((STATIC_DIR.parent / r).is_file() for r in refs), refs
    assert not re.search(r"https?://|//cdn", html + (STATIC_DIR / "app.js").read_text() +
                         (STATIC_DIR / "style.css").read_text())


def test_the_vendored_libraries_are_the_pinned_files_with_their_licences() -> None:
    """static/README.md pins every vendored file by version and sha256 and names its licence file."""
    text = README.read_text()
    rows = re.findall(r"^\| `(vendor/[^`]+)` \| ([^|]+) \| `([0-9a-f]{64})` \| ([^|]+) \| `(vendor/licenses/[^`]+)`",
                      text, re.MULTILINE)
    vendored = sorted(p.relative_to(STATIC_DIR).as_posix() for p in (STATIC_DIR / "vendor").glob("*.*"))
    assert sorted(r[0] for r in rows) == vendored
    for path, _package, sha, licence, licence_file in rows:
        assert hashlib.sha256((STATIC_DIR / path).read_bytes()).hexdigest() == sha, path
        assert "MIT" in licence and (STATIC_DIR / licence_file).is_file()
        assert "Permission is hereby granted" in (STATIC_DIR / licence_file).read_text()
    for bundled in ("fast-uri", "fast-deep-equal", "json-schema-traverse"):  # inside the Ajv bundle
        assert (STATIC_DIR / "vendor" / "licenses" / f"{bundled}-LICENSE").is_file()


@pytest.mark.parametrize(("url", "error"), [
    ("ws://broker.city.example:8884", "plaintext"), ("mqtt://127.0.0.1:1883", "WebSockets URL"),
    ("wss://user:pw@broker.example", "credentials"), ("wss://", "no host")])
def test_a_broker_url_that_would_leak_a_login_is_refused(url: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        broker_origin(url)


def test_settings_are_checked() -> None:
    assert broker_origin("ws://127.0.0.1:9001/mqtt") == "ws://127.0.0.1:9001"
    with pytest.raises(ConfigError, match="--prefix"):
        DashboardSettings("wss://b.example", prefix="traffic/#")
    with pytest.raises(ConfigError, match="--hours"):
        DashboardSettings("wss://b.example", history_hours=0)
    with pytest.raises(ConfigError, match="--contract"):
        DashboardServer(DashboardSettings("wss://b.example", contract_dir=Path("/nonexistent")), port=0)


def _window(device: str, start: str, cars: int, partial: bool = False, calibrated: bool = False) -> str:
    rec = {"schema_version": 2, "msg_id": f"{device}-{start}-{partial}", "device": device, "camera": "c",
           "window_start": start, "window_s": 60, "partial": partial,
           "counts": {"l": {"in": {"car": cars}, "out": {"bus": 1}}}, "health": {"frames": 1, "dropped_frames": 0,
                                                                            "fps": 1.0}}
    if calibrated:
        rec["conflicts"] = {"by_type": {"angled": {"high": 2}}, "vulnerable": 0, "vehicles_entering": 3}
    return json.dumps(rec)


def test_the_archive_gives_one_point_per_window_within_the_hours(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metrics.jsonl").write_text("\n".join([
        _window("d", "2024-05-01T06:58:00Z", 5, partial=True), _window("d", "2024-05-01T06:58:00Z", 7),  # upsert
        _window("d", "2024-05-01T06:58:00Z", 1, partial=True),  # a partial never replaces a full window
        _window("d", "2024-05-01T06:59:00Z", 2, calibrated=True),
        _window("d", "2024-05-01T04:00:00Z", 9),  # older than the hours asked for
        '{"counts": {}, "window_start": "x"}', "not json", '{"line": "l", "speeds": {}}',
    ]) + "\n")
    (tmp_path / "events.jsonl").write_text('{"conflict_type": "angled"}\n')
    h = load_history(tmp_path, 2, datetime(2024, 5, 1, 7, tzinfo=UTC))
    assert (h["files"], h["invalid"], h["truncated"]) == (2, 1, False)
    assert [(p["t"], p["crossings"], p["near_misses"], p["partial"]) for p in h["points"]] == [
        (datetime(2024, 5, 1, 6, 58, tzinfo=UTC).timestamp(), 8, None, False),
        (datetime(2024, 5, 1, 6, 59, tzinfo=UTC).timestamp(), 3, 2, False)]
    assert h["from"] == "2024-05-01T05:00:00Z" and h["until"] == "2024-05-01T07:00:00Z"


def test_edge_dashboard_serves_until_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "dashboard", "--broker", "ws://127.0.0.1:9001",
                             "--port", "0", "--archive", str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("edge dashboard: http://127.0.0.1:") and f"archive {tmp_path}" in line
        with urllib.request.urlopen(line.split()[2] + "history.json", timeout=5) as r:
            assert json.loads(r.read())["source"] == str(tmp_path)
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    bad = subprocess.run([sys.executable, "-m", "edge.cli", "dashboard", "--broker", "ws://10.0.0.1:9001"],
                         cwd=REPO, capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "use wss://" in bad.stderr


def test_the_city_archive_gives_the_same_points_as_the_records_it_holds(tmp_path: Path) -> None:
    """``--archive`` may be the SQLite archive of ``edge archive`` (edge.city.store): the same windows, read only."""
    from edge.city.importer import import_paths
    from edge.city.records import Checker
    from edge.city.store import Archive

    folder = tmp_path / "replays"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("\n".join([
        _window("d", "2024-05-01T06:58:00Z", 7), _window("d", "2024-05-01T06:59:00Z", 2, calibrated=True),
        _window("e", "2024-05-01T06:59:00Z", 0, partial=True)]) + "\n")
    with Archive(tmp_path / "archive.sqlite") as archive:
        import_paths(archive, Checker(REPO / "contract" / "schemas"), [folder / "metrics.jsonl"])
    end = datetime(2024, 5, 1, 7, tzinfo=UTC)
    from_db = load_history(tmp_path / "archive.sqlite", 1, end)
    from_files = load_history(folder, 1, end)
    assert from_db["points"] == from_files["points"] and len(from_db["points"]) == 3
    assert from_db["source"] == str(tmp_path / "archive.sqlite")


def test_the_page_can_be_served_over_https(pki: Pki) -> None:
    from edge.dashboard.command import _tls

    tls = _tls(pki.server_crt, pki.server_key)
    assert tls is not None
    with pytest.raises(ConfigError, match="cannot open a plaintext ws://"):
        DashboardServer(DashboardSettings("ws://127.0.0.1:9001"), port=0, tls=tls)
    server = DashboardServer(DashboardSettings("wss://127.0.0.1:9001"), port=0, tls=tls)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(pki.ca_crt))
        with urllib.request.urlopen(server.url + "config.json", context=ctx, timeout=5) as r:
            assert json.loads(r.read())["broker_url"] == "wss://127.0.0.1:9001"
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(ConfigError, match="go together"):
        _tls(pki.server_crt, None)
