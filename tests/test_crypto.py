"""edge.clips.crypto: real clips, real ffprobe, every way a ciphertext can be damaged."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge.clips.crypto import (
    HEADER_BYTES,
    ClipDecryptError,
    clip_context,
    decrypt_file,
    encrypt_file,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    read_header,
)
from edge.errors import ClipError, EdgeError
from tests.conftest import missing

CTX = clip_context("dev-0001", "clip-20250101T000000Z-0001")
#: Cobblestone-128 layout (C2SP chunked-encryption): a 56-byte header, then 16 KiB chunks + 16-byte tags.
COB_HEADER = 56
CHUNK = 16 * 1024
TAG = 16


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        missing(f"{name} is not on PATH; install it (Debian: apt-get install ffmpeg)")
    return exe


def _ffprobe_ok(path: Path) -> tuple[bool, str]:
    r = subprocess.run(
        [_tool("ffprobe"), "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )
    return r.returncode == 0, r.stdout.strip()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    private_pem, public_pem = generate_keypair()
    (d / "city.key").write_bytes(private_pem)
    (d / "city.pub").write_bytes(public_pem)
    return d / "city.key", d / "city.pub"


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1 s noisy H.264 MP4 made by ffmpeg: about 20 Cobblestone chunks."""
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    subprocess.run(
        [_tool("ffmpeg"), "-nostdin", "-v", "error", "-f", "lavfi",
         "-i", "testsrc2=size=320x240:rate=25:duration=1", "-vf", "noise=alls=20:allf=t",
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-an", str(path)],
        check=True, timeout=60,
    )
    assert path.read_bytes()[4:8] == b"ftyp"
    return path


@pytest.fixture(scope="module")
def sealed(clip: Path, keys: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> bytes:
    dst = tmp_path_factory.mktemp("sealed") / "clip.enc"
    encrypt_file(clip, dst, load_public_key(keys[1]), CTX)
    return dst.read_bytes()


def _decrypt_bytes(data: bytes, tmp_path: Path, key: Path, context: bytes = CTX) -> Path:
    """Write ``data`` to tmp_path/in/clip.enc and decrypt it into tmp_path/out/clip.mp4."""
    (tmp_path / "in").mkdir(parents=True, exist_ok=True)
    (tmp_path / "out").mkdir(exist_ok=True)
    src = tmp_path / "in" / "clip.enc"
    src.write_bytes(data)
    dst = tmp_path / "out" / "clip.mp4"
    decrypt_file(src, dst, load_private_key(key), context)
    return dst


def _assert_refused(data: bytes, tmp_path: Path, key: Path, context: bytes = CTX) -> ClipDecryptError:
    with pytest.raises(ClipDecryptError) as info:
        _decrypt_bytes(data, tmp_path, key, context)
    assert isinstance(info.value, EdgeError)
    assert os.listdir(tmp_path / "out") == [], "no plaintext (final or temp) may survive a failed decryption"
    return info.value


# -------------------------------------------------------------------------------------------- round trip
def test_round_trip_real_clip(clip: Path, sealed: bytes, keys: tuple[Path, Path], tmp_path: Path) -> None:
    plain = clip.read_bytes()
    chunks = len(plain) // CHUNK + 1  # the last chunk is always present, possibly short or empty
    assert len(sealed) == HEADER_BYTES + COB_HEADER + len(plain) + chunks * TAG
    assert chunks >= 8, "the clip must span several chunks for the tamper tests to mean anything"

    enc = tmp_path / "clip.enc"
    enc.write_bytes(sealed)
    assert sealed[4:8] != b"ftyp" and b"ftyp" not in sealed and b"moov" not in sealed
    assert _ffprobe_ok(enc)[0] is False, "ffprobe must not parse the encrypted clip"
    assert read_header(enc).key_id == key_id(load_public_key(keys[1]))

    out = _decrypt_bytes(sealed, tmp_path, keys[0])
    assert out.read_bytes() == plain
    ok, streams = _ffprobe_ok(out)
    assert ok and streams == "video"
    assert oct(out.stat().st_mode & 0o777) == oct(0o600)
    assert os.listdir(tmp_path / "out") == ["clip.mp4"]


def test_encrypted_file_is_private_and_fresh_each_time(clip: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    a, b = tmp_path / "a.enc", tmp_path / "b.enc"
    encrypt_file(clip, a, keys[1].read_bytes(), CTX)  # PEM bytes are accepted too
    encrypt_file(clip, b, load_public_key(keys[1]), CTX)
    assert a.stat().st_mode & 0o777 == 0o600
    # Fresh ephemeral key and file key per clip: same input, unrelated ciphertexts.
    assert a.read_bytes()[28:] != b.read_bytes()[28:]
    assert sorted(os.listdir(tmp_path)) == ["a.enc", "b.enc"], "no temp file may remain"


def test_empty_file_round_trip(keys: tuple[Path, Path], tmp_path: Path) -> None:
    src = tmp_path / "empty"
    src.write_bytes(b"")
    encrypt_file(src, tmp_path / "e.enc", load_public_key(keys[1]), CTX)
    out = _decrypt_bytes((tmp_path / "e.enc").read_bytes(), tmp_path, keys[0])
    assert out.read_bytes() == b""


# ---------------------------------------------------------------------------------------------- tampering
def _flip(data: bytes, offset: int) -> bytes:
    b = bytearray(data)
    b[offset] ^= 0x01
    return bytes(b)


@pytest.mark.parametrize(
    ("where", "offset"),
    [
        ("magic", lambda n: 0),
        ("version", lambda n: 8),
        ("suite", lambda n: 9),
        ("reserved", lambda n: 11),
        ("key id", lambda n: 12),
        ("ephemeral public key", lambda n: 28 + 5),
        ("sealed file key", lambda n: 28 + 40),
        ("payload header", lambda n: HEADER_BYTES + 3),
        ("first chunk", lambda n: HEADER_BYTES + COB_HEADER + 100),
        ("middle chunk", lambda n: n // 2),
        ("last chunk tag", lambda n: n - 1),
        ("last chunk body", lambda n: n - TAG - 1),
    ],
)
def test_flipped_byte_is_refused(
    sealed: bytes, keys: tuple[Path, Path], tmp_path: Path, where: str, offset: Callable[[int], int]
) -> None:
    _assert_refused(_flip(sealed, offset(len(sealed))), tmp_path, keys[0])


def test_every_header_byte_is_authenticated(sealed: bytes, keys: tuple[Path, Path], tmp_path: Path) -> None:
    for i in range(HEADER_BYTES + COB_HEADER):
        _assert_refused(_flip(sealed, i), tmp_path / str(i), keys[0])


def _cut_points(n: int) -> list[int]:
    body = HEADER_BYTES + COB_HEADER
    last_start = body + ((n - body) // (CHUNK + TAG)) * (CHUNK + TAG)
    return [0, 10, HEADER_BYTES - 1, HEADER_BYTES, body, body + CHUNK + TAG, last_start, n // 2, n - TAG, n - 1]


def test_truncation_is_refused(sealed: bytes, keys: tuple[Path, Path], tmp_path: Path) -> None:
    n = len(sealed)
    for cut in _cut_points(n):
        assert cut < n
        _assert_refused(sealed[:cut], tmp_path / str(cut), keys[0])


def test_dropping_the_last_chunk_is_refused(sealed: bytes, keys: tuple[Path, Path], tmp_path: Path) -> None:
    # Cut exactly at a chunk boundary: every remaining chunk is intact, only the end marker is missing.
    body = HEADER_BYTES + COB_HEADER
    full = (len(sealed) - body) // (CHUNK + TAG)
    err = _assert_refused(sealed[: body + full * (CHUNK + TAG)], tmp_path, keys[0])
    assert "truncated" in str(err)


@pytest.mark.parametrize("extra", [b"\x00", b"garbage" * 3, b"\x00" * (CHUNK + TAG)])
def test_appended_bytes_are_refused(sealed: bytes, keys: tuple[Path, Path], tmp_path: Path, extra: bytes) -> None:
    _assert_refused(sealed + extra, tmp_path, keys[0])


def test_repeated_chunk_is_refused(sealed: bytes, keys: tuple[Path, Path], tmp_path: Path) -> None:
    body = HEADER_BYTES + COB_HEADER
    first = sealed[body : body + CHUNK + TAG]
    _assert_refused(sealed[:body] + first + sealed[body:], tmp_path, keys[0])


def test_swapped_chunks_are_refused(sealed: bytes, keys: tuple[Path, Path], tmp_path: Path) -> None:
    body = HEADER_BYTES + COB_HEADER
    c = CHUNK + TAG
    a, b = sealed[body + c : body + 2 * c], sealed[body + 2 * c : body + 3 * c]
    swapped = sealed[: body + c] + b + a + sealed[body + 3 * c :]
    assert len(swapped) == len(sealed) and swapped != sealed
    _assert_refused(swapped, tmp_path, keys[0])


@pytest.mark.parametrize(
    "context",
    [clip_context("dev-0001", "clip-20250101T000000Z-0002"), clip_context("dev-0002", "clip-20250101T000000Z-0001"),
     b"edge-clips v1|"],
)
def test_wrong_context_is_refused(sealed: bytes, keys: tuple[Path, Path], tmp_path: Path, context: bytes) -> None:
    err = _assert_refused(sealed, tmp_path, keys[0], context)
    assert "context" in str(err)


def test_wrong_private_key_is_refused(sealed: bytes, tmp_path: Path) -> None:
    other_private, _ = generate_keypair()
    (tmp_path / "other.key").write_bytes(other_private)
    err = _assert_refused(sealed, tmp_path, tmp_path / "other.key")
    assert "key id" in str(err)


def test_wrong_private_key_with_forged_key_id_is_refused(sealed: bytes, tmp_path: Path) -> None:
    """The key id is a hint, not the check: relabelling a clip for another key still fails to open."""
    other_private, _ = generate_keypair()
    (tmp_path / "other.key").write_bytes(other_private)
    other_id = key_id(load_private_key(tmp_path / "other.key").public_key())
    forged = sealed[:12] + other_id + sealed[28:]
    _assert_refused(forged, tmp_path, tmp_path / "other.key")


def test_failed_decryption_leaves_existing_output_alone(sealed: bytes, keys: tuple[Path, Path], tmp_path: Path) -> None:
    src = tmp_path / "clip.enc"
    src.write_bytes(sealed[:-1])
    dst = tmp_path / "clip.mp4"
    dst.write_bytes(b"previous")
    with pytest.raises(ClipDecryptError):
        decrypt_file(src, dst, load_private_key(keys[0]), CTX)
    assert dst.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["clip.enc", "clip.mp4"]


# ---------------------------------------------------------------------------------------------- streaming
def test_large_file_streams_with_bounded_memory(keys: tuple[Path, Path], tmp_path: Path) -> None:
    size = 20 * 1024 * 1024
    src = tmp_path / "big.bin"
    with src.open("wb") as f:
        for _ in range(size // (1 << 20)):
            f.write(os.urandom(1 << 20))
    public, private = load_public_key(keys[1]), load_private_key(keys[0])
    tracemalloc.start()
    try:
        encrypt_file(src, tmp_path / "big.enc", public, CTX)
        _, enc_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        decrypt_file(tmp_path / "big.enc", tmp_path / "big.out", private, CTX)
        _, dec_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert enc_peak < 1024 * 1024, f"encrypt peak {enc_peak} B: the clip must not be held in memory"
    assert dec_peak < 1024 * 1024, f"decrypt peak {dec_peak} B: the clip must not be held in memory"
    with src.open("rb") as a, (tmp_path / "big.out").open("rb") as b:
        while block := a.read(1 << 20):
            assert block == b.read(1 << 20)
        assert b.read(1) == b""


# ---------------------------------------------------------------------------------------------------- keys
def test_device_refuses_private_key_material(keys: tuple[Path, Path], clip: Path, tmp_path: Path) -> None:
    with pytest.raises(ClipError, match="public key"):
        load_public_key(keys[0])
    with pytest.raises(ClipError, match="private key"):
        encrypt_file(clip, tmp_path / "x.enc", load_private_key(keys[0]), CTX)  # type: ignore[arg-type]
    with pytest.raises(ClipError, match="private key"):
        encrypt_file(clip, tmp_path / "x.enc", keys[0].read_bytes(), CTX)
    assert os.listdir(tmp_path) == []


def test_key_loading_errors_name_the_problem(tmp_path: Path) -> None:
    rsa_pub = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "rsa.pub").write_bytes(rsa_pub)
    with pytest.raises(ClipError, match="X25519"):
        load_public_key(tmp_path / "rsa.pub")
    with pytest.raises(ClipError, match="cannot read"):
        load_public_key(tmp_path / "missing.pub")
    (tmp_path / "junk.pub").write_bytes(b"not a key")
    with pytest.raises(ClipError, match="not a PEM public key"):
        load_public_key(tmp_path / "junk.pub")


def test_password_protected_private_key(keys: tuple[Path, Path], clip: Path, tmp_path: Path) -> None:
    private_pem, public_pem = generate_keypair(password=b"correct horse")
    assert b"ENCRYPTED PRIVATE KEY" in private_pem
    (tmp_path / "k.key").write_bytes(private_pem)
    with pytest.raises(ClipError, match="wrong password"):
        load_private_key(tmp_path / "k.key", b"wrong")
    key = load_private_key(tmp_path / "k.key", b"correct horse")
    assert isinstance(key, X25519PrivateKey)
    encrypt_file(clip, tmp_path / "c.enc", public_pem, CTX)
    (tmp_path / "out").mkdir()
    decrypt_file(tmp_path / "c.enc", tmp_path / "out" / "c.mp4", key, CTX)
    assert (tmp_path / "out" / "c.mp4").read_bytes() == clip.read_bytes()


def test_missing_source_leaves_nothing(keys: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(ClipError, match="cannot encrypt"):
        encrypt_file(tmp_path / "nope.mp4", tmp_path / "x.enc", load_public_key(keys[1]), CTX)
    assert os.listdir(tmp_path) == []


def test_context_is_unambiguous_and_required(clip: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    assert clip_context("ab", "c") != clip_context("a", "bc")
    with pytest.raises(ValueError, match="non-empty"):
        clip_context("", "c")
    with pytest.raises(ValueError, match="non-empty"):
        encrypt_file(clip, tmp_path / "x.enc", load_public_key(keys[1]), b"")


def test_encrypts_from_an_in_memory_stream(clip: Path, keys: tuple[Path, Path], tmp_path: Path) -> None:
    """A clip encoded into RAM is encrypted straight from memory: its plaintext never touches the disk."""
    data = clip.read_bytes()
    stream = io.BytesIO(data)
    encrypt_file(stream, tmp_path / "m.enc", load_public_key(keys[1]), CTX)
    assert not stream.closed
    assert os.listdir(tmp_path) == ["m.enc"]
    out = _decrypt_bytes((tmp_path / "m.enc").read_bytes(), tmp_path, keys[0])
    assert out.read_bytes() == data


def test_a_second_keygen_refuses_cleanly_and_keeps_the_first_pair(tmp_path: Path) -> None:
    """Issue 14 item 14: the second `edge clips keygen` into the same folder overwrites nothing and says why."""
    cmd = [sys.executable, "-m", "edge.cli", "clips", "keygen", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True)
    first = (tmp_path / "clips-private.pem").read_bytes()
    again = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert again.returncode == 1 and "already exist" in again.stderr and "Traceback" not in again.stderr
    assert (tmp_path / "clips-private.pem").read_bytes() == first
