from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.errors import AssetError
from edge.models import download_verified, fetch, load_manifest


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_download_keeps_only_a_matching_file(http_root: tuple[str, Path], tmp_path: Path) -> None:
    url, root = http_root
    (root / "m.onnx").write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    dest = tmp_path / "cache" / "m.onnx"
    assert download_verified(f"{url}/m.onnx", good, dest) == dest
    assert dest.read_bytes() == b"weights"

    other = tmp_path / "cache" / "x.onnx"
    with pytest.raises(AssetError, match="sha256"):
        download_verified(f"{url}/m.onnx", "0" * 64, other)
    assert not other.exists()
    assert [p.name for p in other.parent.iterdir()] == ["m.onnx"]  # no partial left behind


def test_fetch_refuses_models_without_a_public_url(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match=r"\.\./shared/models"):
        fetch(load_manifest().get("yolo11n-320"), tmp_path)


def test_unreachable_url_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match="cannot download"):
        download_verified("http://127.0.0.1:9/none", "0" * 64, tmp_path / "f", timeout_s=2)
