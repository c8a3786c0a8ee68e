"""Clip encryption at rest to the city's public key: the device can write clips but never read them.

Why this construction
---------------------
* **Public-key envelope, not a device key.** Flash storage does not erase on delete (RELIABILITY 4.2), and a
  stolen device must not yield its clips. The device holds only the city's X25519 *public* key; each clip gets
  a fresh random file key, sealed to that public key with HPKE (RFC 9180, base mode,
  DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-128-GCM, from ``cryptography.hazmat.primitives.hpke``).
  HPKE *is* "ephemeral X25519 agreement -> HKDF -> key", but standardised and reviewed, so nothing here
  hand-rolls a key schedule. X25519 was preferred to an RSA-OAEP key wrap: 32-byte keys, 64 bytes of
  envelope instead of 256+, constant-time by construction, no padding-oracle surface, and the ephemeral
  secret is gone once the clip is written (forward secrecy against a later device compromise).
* **Streaming AEAD from the library.** The payload is encrypted with Cobblestone-128
  (``cryptography.cobblestone``, C2SP chunked-encryption: HKDF-SHA-512 + AES-128-GCM over 16 KiB chunks,
  chunk counter and last-chunk flag in the nonce, so reordering and truncation are detected). It is the
  library's recipe for large messages (RELIABILITY 4.3): nothing here manages nonces.
* **Nothing acts on unauthenticated plaintext.** Cobblestone's ``update()`` releases authenticated chunks but
  can only detect truncation in ``finalize()``. :func:`decrypt_file` therefore writes to a private temp file
  in the destination folder and renames it into place only after ``finalize()`` succeeded; on any failure
  the temp file is deleted.

File format (version 1), all integers big-endian
------------------------------------------------
=======  ====  ==========================================================================================
offset   size  field
=======  ====  ==========================================================================================
0        8     magic ``b"EDGECLIP"``
8        1     format version, ``1``
9        1     suite, ``1`` = HPKE(X25519, HKDF-SHA256, AES-128-GCM) envelope + Cobblestone-128 payload
10       2     reserved, must be ``0``
12       16    recipient key id: ``SHA-256(b"edge-clips key id v1|" + raw 32-byte public key)[:16]``
28       64    HPKE envelope: encapsulated ephemeral X25519 public key (32) + sealed 16-byte file key
               (16 + 16-byte GCM tag); HPKE ``info`` = ``b"edge-clips v1 file key|" + bytes 0..27 + context``
92       ...   Cobblestone-128 ciphertext of the clip under the file key (its own 56-byte header, then
               16 KiB chunks each followed by a 16-byte tag); Cobblestone ``context`` =
               ``b"edge-clips v1 payload|" + bytes 0..91 + context``
=======  ====  ==========================================================================================

Every header byte is authenticated: bytes 0..27 by the HPKE envelope and the whole 92-byte header by every
payload chunk. ``context`` (see :func:`clip_context`) binds the ciphertext to its ``device_id`` and
``clip_id``; it is not stored, the decrypting party rebuilds it from the clip reference. Overhead is
148 bytes plus 16 bytes per 16 KiB chunk (about 0.1 %).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, Protocol

from cryptography.cobblestone import Cobblestone128Decryptor, Cobblestone128Encryptor
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from edge.errors import ClipError

__all__ = [
    "HEADER_BYTES",
    "ClipDecryptError",
    "ClipHeader",
    "SupportsReadinto",
    "clip_context",
    "decrypt_file",
    "encrypt_file",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "read_header",
]

MAGIC: Final = b"EDGECLIP"
VERSION: Final = 1
SUITE_X25519_AES128: Final = 1
_PREFIX = struct.Struct(">8sBBH16s")  # magic, version, suite, reserved, key id
_KEY_ID_BYTES: Final = 16
_ENVELOPE_BYTES: Final = 64  # HPKE enc (32) + sealed 16-byte key (16) + tag (16)
HEADER_BYTES: Final = _PREFIX.size + _ENVELOPE_BYTES  # 92
#: Bytes read from disk per step; memory use is a few of these regardless of clip size.
IO_CHUNK_BYTES: Final = 64 * 1024

_HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
_KEY_ID_LABEL: Final = b"edge-clips key id v1|"
_ENVELOPE_LABEL: Final = b"edge-clips v1 file key|"
_PAYLOAD_LABEL: Final = b"edge-clips v1 payload|"
_CONTEXT_LABEL: Final = b"edge-clips v1|"


class SupportsReadinto(Protocol):
    """A readable binary stream: an open file, ``io.BytesIO``, a pipe."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class ClipDecryptError(ClipError):
    """A clip failed authentication: tampered, truncated, reordered, or the wrong key or context.

    No plaintext output exists when this is raised.
    """


@dataclass(frozen=True, slots=True)
class ClipHeader:
    """The clear-text header of an encrypted clip (not yet authenticated: see :func:`read_header`)."""

    version: int
    suite: int
    key_id: bytes
    envelope: bytes

    def prefix(self) -> bytes:
        return _PREFIX.pack(MAGIC, self.version, self.suite, 0, self.key_id)

    def pack(self) -> bytes:
        return self.prefix() + self.envelope


# ----------------------------------------------------------------------------------------------- keys
def key_id(public_key: X25519PublicKey) -> bytes:
    """16-byte id of a recipient key, stored in each clip so the city can pick the right private key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(_KEY_ID_LABEL + raw).digest()[:_KEY_ID_BYTES]


def generate_keypair(password: bytes | None = None) -> tuple[bytes, bytes]:
    """A new X25519 key pair as ``(private_pem, public_pem)`` (PKCS#8 and SubjectPublicKeyInfo).

    This runs at the city, not on the device: only ``public_pem`` is installed on devices. ``password``
    encrypts the private PEM (recommended for anything but tests).
    """
    private = X25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    )
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def _public_from_bytes(data: bytes, where: str) -> X25519PublicKey:
    if b"PRIVATE KEY" in data:
        raise ClipError(
            f"{where} holds a private key; the device must hold only the city's public key "
            "(install the public PEM and keep the private key at the city)"
        )
    if len(data) == 32:
        return X25519PublicKey.from_public_bytes(data)
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError as e:
        raise ClipError(
            f"{where} is not a PEM public key ({e}); expected an X25519 'BEGIN PUBLIC KEY' block"
        ) from e
    if not isinstance(key, X25519PublicKey):
        raise ClipError(f"{where} holds a {type(key).__name__}; clip encryption needs an X25519 public key")
    return key


def load_public_key(path: Path) -> X25519PublicKey:
    """Load the city's X25519 public key from a PEM file; refuses a file that holds a private key."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ClipError(f"cannot read the clip public key {path}: {e.strerror or e}") from e
    if b"-----BEGIN" not in data and b"PRIVATE KEY" not in data:
        raise ClipError(
            f"{path} is not a PEM public key ({len(data)} bytes without a 'BEGIN PUBLIC KEY' block): a raw 32-byte "
            "key cannot be told apart from a private one; install clips-public.pem as `edge clips keygen` wrote it"
        )
    return _public_from_bytes(data, str(path))


def load_private_key(path: Path, password: bytes | None = None) -> X25519PrivateKey:
    """Load an X25519 private key (PKCS#8 PEM, optionally password-protected). City side only."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ClipError(f"cannot read the clip private key {path}: {e.strerror or e}") from e
    return _private_from_pem(data, password, str(path))


def _private_from_pem(data: bytes, password: bytes | None, where: str) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password)
    except (ValueError, TypeError) as e:
        raise ClipError(f"cannot load the private key {where}: {e} (wrong password or not a PEM private key)") from e
    if not isinstance(key, X25519PrivateKey):
        raise ClipError(f"{where} holds a {type(key).__name__}; clip decryption needs an X25519 private key")
    return key


def clip_context(device_id: str, clip_id: str) -> bytes:
    """The ``context`` that binds a clip's ciphertext to its device and clip ids.

    Each id is length-prefixed, so no two ``(device_id, clip_id)`` pairs give the same bytes.
    """
    if not device_id or not clip_id:
        raise ValueError("device_id and clip_id must both be non-empty")
    parts = [s.encode("utf-8") for s in (device_id, clip_id)]
    if any(len(p) > 0xFFFF for p in parts):
        raise ValueError("device_id and clip_id must each be at most 65535 bytes of UTF-8")
    return _CONTEXT_LABEL + b"".join(struct.pack(">H", len(p)) + p for p in parts)


# ----------------------------------------------------------------------------------------------- files
@contextlib.contextmanager
def _atomic_output(dst: Path) -> Iterator[BinaryIO]:
    """A private (0600) temp file beside ``dst``, renamed onto it only if the block completes.

    The temp name ``.<stem>.partial.<random><suffix>`` matches the start-up sweep of ``.*.partial.*``.
    """
    fd, tmp_name = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.stem}.partial.", suffix=dst.suffix)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(dst.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _coerce_public(key: bytes | X25519PublicKey) -> X25519PublicKey:
    if isinstance(key, X25519PublicKey):
        return key
    if isinstance(key, X25519PrivateKey):  # a typing slip that would put the city's secret on the device
        raise ClipError("encrypt_file was given a private key; the device must hold only the public key")
    return _public_from_bytes(bytes(key), "the recipient key")


def _coerce_private(key: bytes | X25519PrivateKey) -> X25519PrivateKey:
    if isinstance(key, X25519PrivateKey):
        return key
    data = bytes(key)
    if len(data) == 32:
        return X25519PrivateKey.from_private_bytes(data)
    return _private_from_pem(data, None, "given as bytes (an unencrypted PEM or the raw 32 bytes)")


def encrypt_file(
    src: Path | SupportsReadinto,
    dst: Path,
    recipient_public_key: bytes | X25519PublicKey,
    context: bytes,
    *,
    io_chunk_bytes: int = IO_CHUNK_BYTES,
) -> int:
    """Encrypt ``src`` to ``dst`` for the holder of the private key; returns the ciphertext size in bytes.

    ``src`` is a file path or a readable binary file object (e.g. an ``io.BytesIO`` holding a clip encoded in
    RAM, so that plaintext never touches the disk); a file object is read from its current position to its
    end and is not closed.

    ``recipient_public_key`` is an :class:`X25519PublicKey`, its PEM, or its raw 32 bytes. ``context``
    (from :func:`clip_context`) must be non-empty and is needed again to decrypt. The file is streamed in
    ``io_chunk_bytes`` steps, so memory use does not grow with the clip; ``dst`` appears atomically
    (temp file, fsync, rename, directory fsync) with mode 0600. ``src`` is left for the caller to delete.
    """
    if not context:
        raise ValueError("context must be non-empty: use clip_context(device_id, clip_id)")
    if io_chunk_bytes < 1:
        raise ValueError(f"io_chunk_bytes must be positive, got {io_chunk_bytes}")
    public_key = _coerce_public(recipient_public_key)
    file_key = Cobblestone128Encryptor.generate_key()
    kid = key_id(public_key)
    prefix = _PREFIX.pack(MAGIC, VERSION, SUITE_X25519_AES128, 0, kid)
    try:
        envelope = _HPKE.encrypt(file_key, public_key, info=_ENVELOPE_LABEL + prefix + context)
    except ValueError as e:  # e.g. a low-order point: no usable shared secret
        raise ClipError(f"the recipient public key is unusable for X25519 ({e}); check the key file") from e
    if len(envelope) != _ENVELOPE_BYTES:  # a library change must not silently change the format
        raise ClipError(f"HPKE envelope is {len(envelope)} bytes, format v1 expects {_ENVELOPE_BYTES}")
    header = prefix + envelope
    encryptor = Cobblestone128Encryptor(file_key, _PAYLOAD_LABEL + header + context)
    del file_key

    read_buf = bytearray(io_chunk_bytes)
    # Size from the Cobblestone docs: len(data) + len(data) // 1024 + 16456 is always enough.
    out_buf = bytearray(io_chunk_bytes + io_chunk_bytes // 1024 + 16456)
    read_view, out_view = memoryview(read_buf), memoryview(out_buf)
    written = 0
    try:
        with contextlib.ExitStack() as stack:
            fin = stack.enter_context(src.open("rb")) if isinstance(src, Path) else src
            fout = stack.enter_context(_atomic_output(dst))
            fout.write(header)
            written += len(header)
            while n := fin.readinto(read_view):
                m = encryptor.update_into(read_view[:n], out_view)
                fout.write(out_view[:m])
                written += m
            tail = encryptor.finalize()
            fout.write(tail)
            written += len(tail)
    except OSError as e:
        raise ClipError(f"cannot encrypt {src} to {dst}: {e.strerror or e}") from e
    return written


def _parse_header(raw: bytes, where: str) -> ClipHeader:
    if len(raw) < HEADER_BYTES:
        raise ClipDecryptError(f"{where} is truncated: {len(raw)} bytes, the header alone is {HEADER_BYTES}")
    magic, version, suite, reserved, kid = _PREFIX.unpack_from(raw)
    if magic != MAGIC:
        raise ClipDecryptError(f"{where} is not an encrypted edge clip (magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise ClipDecryptError(f"{where} has format version {version}; this software reads version {VERSION}")
    if suite != SUITE_X25519_AES128:
        raise ClipDecryptError(f"{where} uses cipher suite {suite}; this software knows suite {SUITE_X25519_AES128}")
    if reserved != 0:
        raise ClipDecryptError(f"{where} has non-zero reserved header bits: damaged or tampered")
    return ClipHeader(version, suite, kid, raw[_PREFIX.size:HEADER_BYTES])


def read_header(src: Path) -> ClipHeader:
    """The clear header of an encrypted clip, e.g. to pick a private key by ``key_id``.

    Only the format is checked here; the header is authenticated by :func:`decrypt_file`.
    """
    with src.open("rb") as f:
        return _parse_header(f.read(HEADER_BYTES), str(src))


def decrypt_file(
    src: Path,
    dst: Path,
    private_key: bytes | X25519PrivateKey,
    context: bytes,
    *,
    io_chunk_bytes: int = IO_CHUNK_BYTES,
) -> int:
    """Decrypt a clip written by :func:`encrypt_file`; returns the plaintext size in bytes. City side only.

    The plaintext goes to a 0600 temp file beside ``dst`` and is renamed onto ``dst`` only after the whole
    stream authenticated (every chunk, the header, the end marker). Any tampering, truncation, appended
    data, chunk reordering, wrong ``context`` or wrong key raises :class:`ClipDecryptError`, and then no
    plaintext file is left (an existing ``dst`` is not touched).
    """
    if io_chunk_bytes < 1:
        raise ValueError(f"io_chunk_bytes must be positive, got {io_chunk_bytes}")
    key = _coerce_private(private_key)
    where = str(src)
    read_buf = bytearray(io_chunk_bytes)
    # Size from the Cobblestone docs: len(data) + 16400 is always enough.
    out_buf = bytearray(io_chunk_bytes + 16400)
    read_view, out_view = memoryview(read_buf), memoryview(out_buf)
    written = 0
    try:
        with src.open("rb") as fin:
            header = _parse_header(fin.read(HEADER_BYTES), where)
            own_id = key_id(key.public_key())
            if header.key_id != own_id:
                raise ClipDecryptError(
                    f"{where} is encrypted to key id {header.key_id.hex()}, but the private key has id "
                    f"{own_id.hex()}: use the matching private key"
                )
            try:
                file_key = _HPKE.decrypt(header.envelope, key, info=_ENVELOPE_LABEL + header.prefix() + context)
            except InvalidTag as e:
                raise ClipDecryptError(
                    f"{where}: the key envelope does not authenticate: wrong context (device_id/clip_id), "
                    "or the header was tampered with"
                ) from e
            decryptor = Cobblestone128Decryptor(file_key, _PAYLOAD_LABEL + header.pack() + context)
            del file_key
            with _atomic_output(dst) as fout:
                try:
                    while n := fin.readinto(read_view):
                        m = decryptor.update_into(read_view[:n], out_view)
                        fout.write(out_view[:m])
                        written += m
                    tail = decryptor.finalize()
                except InvalidTag as e:
                    raise ClipDecryptError(
                        f"{where}: the payload does not authenticate: tampered, truncated, extended or "
                        "reordered chunks (no plaintext was kept)"
                    ) from e
                fout.write(tail)
                written += len(tail)
    except OSError as e:
        raise ClipError(f"cannot decrypt {src} to {dst}: {e.strerror or e}") from e
    return written
