"""The sealed-object format: a clip encrypted and authenticated in fixed-size chunks, so any
byte range can be read by opening only the chunks that cover it (docs/sealed-format.md).

    object  = header || chunk_0 || chunk_1 || ... || chunk_{n-1}
    header  = "TEMOINSEAL" (10 bytes) || version (1 byte, = 2) || chunk_size (4 bytes, BE)
              || recording_id (16 bytes)                                      = 31 bytes
    chunk_i = nonce_i (24 random bytes)
              || XChaCha20-Poly1305(key = data key, nonce = nonce_i,
                                    aad = header || i (8 bytes, BE) || final (1 byte),
                                    plaintext = bytes [i * chunk_size, (i + 1) * chunk_size))
                 (ciphertext || 16-byte tag)

Every chunk is full but the last (which may be empty for an empty clip: there is always one).
The index in the AAD detects reordering; the final flag detects truncation; the header (with
the recording id) in the AAD and a key per clip detect splicing. Each chunk has its own random
nonce (XChaCha20's 192-bit nonces are made for that) so that sealing a chunk index twice, as a
resumed upload may when a part is sent again with other bytes, never reuses a nonce.
The data key never leaves the registry: it is stored wrapped by the vault's key-encryption key
(``wrap_key``), so rotating that key rewraps data keys without touching sealed objects, and
destroying the wrapped key makes every copy of the object unreadable.
"""

from __future__ import annotations

import os
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from shared import xchacha

MAGIC = b"TEMOINSEAL"
VERSION = 2
NONCE_SIZE = xchacha.NONCE_SIZE
TAG_SIZE = xchacha.TAG_SIZE
CHUNK_OVERHEAD = NONCE_SIZE + TAG_SIZE
KEY_SIZE = xchacha.KEY_SIZE
DEFAULT_CHUNK_SIZE = 256 << 10  # why: docs/sealed-format.md, "Chunk size"
_HEADER = struct.Struct(">10sBI16s")
HEADER_SIZE = _HEADER.size  # 31
WRAP_CONTEXT = b"temoin-data-key-v1"


class SealError(Exception):
    """A sealed object or key failed authentication: damaged or tampered with."""


@dataclass(frozen=True)
class Header:
    chunk_size: int
    recording_id: uuid.UUID

    def to_bytes(self) -> bytes:
        return _HEADER.pack(MAGIC, VERSION, self.chunk_size, self.recording_id.bytes)

    @classmethod
    def parse(cls, data: bytes) -> Header:
        if len(data) < HEADER_SIZE:
            raise SealError("sealed object shorter than its header")
        magic, version, chunk_size, recording = _HEADER.unpack(data[:HEADER_SIZE])
        if magic != MAGIC:
            raise SealError("not a Témoin sealed object")
        if version != VERSION:
            raise SealError(f"sealed format version {version} is not supported")
        if chunk_size <= 0:
            raise SealError("invalid chunk size")
        return cls(chunk_size, uuid.UUID(bytes=recording))


def chunk_count(size: int, chunk_size: int) -> int:
    return max(1, -(-size // chunk_size))


def sealed_size(size: int, chunk_size: int) -> int:
    return HEADER_SIZE + size + chunk_count(size, chunk_size) * CHUNK_OVERHEAD


def sealed_offset(index: int, chunk_size: int) -> int:
    """Where sealed chunk ``index`` starts in the object."""
    return HEADER_SIZE + index * (chunk_size + CHUNK_OVERHEAD)


def _aad(header_bytes: bytes, index: int, final: bool) -> bytes:
    return header_bytes[:HEADER_SIZE] + struct.pack(">QB", index, 1 if final else 0)


def seal_chunk(header_bytes: bytes, key: bytes, index: int, plaintext: bytes, final: bool) -> bytes:
    """Chunk ``index`` of an object, sealed (nonce || ciphertext || tag)."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + xchacha.encrypt(key, nonce, plaintext, _aad(header_bytes, index, final))


def seal_chunk_in_place(
    header_bytes: bytes,
    key: bytes,
    index: int,
    slot: memoryview,
    final: bool,
    scratch: memoryview,
) -> None:
    """Seal chunk ``index`` where it lies: ``slot`` is the chunk's place in the object, its
    plaintext already between the room for the nonce and the room for the tag; ``scratch``
    holds at least the chunk's ciphertext and tag (it is copied back: no other buffer)."""
    size = len(slot) - CHUNK_OVERHEAD
    nonce = os.urandom(NONCE_SIZE)
    slot[:NONCE_SIZE] = nonce
    sealed = scratch[: size + TAG_SIZE]
    plaintext = slot[NONCE_SIZE : NONCE_SIZE + size]
    xchacha.encrypt_into(key, nonce, plaintext, _aad(header_bytes, index, final), sealed)
    slot[NONCE_SIZE:] = sealed


def open_chunk(
    header_bytes: bytes, key: bytes, index: int, sealed: bytes | memoryview, final: bool
) -> bytes:
    """Chunk ``index`` authenticated and decrypted (SealError if it fails)."""
    nonce, ciphertext = bytes(sealed[:NONCE_SIZE]), sealed[NONCE_SIZE:]
    try:
        return xchacha.decrypt(key, nonce, ciphertext, _aad(header_bytes, index, final))
    except (xchacha.Rejected, ValueError) as exc:  # ValueError: too short to hold a nonce
        raise SealError(f"chunk {index} failed authentication") from exc


def open_chunk_into(
    header_bytes: bytes, key: bytes, index: int, sealed: memoryview, final: bool, out: memoryview
) -> None:
    """open_chunk written into ``out`` (exactly len(sealed) - CHUNK_OVERHEAD bytes)."""
    nonce = bytes(sealed[:NONCE_SIZE])
    try:
        xchacha.decrypt_into(key, nonce, sealed[NONCE_SIZE:], _aad(header_bytes, index, final), out)
    except (xchacha.Rejected, ValueError) as exc:
        raise SealError(f"chunk {index} failed authentication") from exc


class Sealer:
    """Seals a stream chunk by chunk: feed plaintext, collect sealed bytes; bounded memory."""

    def __init__(
        self, recording_id: uuid.UUID, key: bytes, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        self.header = Header(chunk_size, recording_id)
        self._header_bytes = self.header.to_bytes()
        self._key = key
        self._buffer = bytearray()
        self._index = 0
        self._started = False
        self._finished = False

    def _chunk(self, plaintext: bytes, final: bool) -> bytes:
        sealed = seal_chunk(self._header_bytes, self._key, self._index, plaintext, final)
        self._index += 1
        return sealed

    def update(self, data: bytes) -> bytes:
        """Sealed bytes ready so far (the last chunk is held back until ``finish``)."""
        out = bytearray()
        if not self._started:
            out += self._header_bytes
            self._started = True
        self._buffer += data
        size = self.header.chunk_size
        # Keep at least one byte back: only finish() knows which chunk is the last one.
        while len(self._buffer) > size:
            with memoryview(self._buffer) as view:
                chunk = bytes(view[:size])  # one copy (slicing the bytearray first made two)
            out += self._chunk(chunk, final=False)
            del self._buffer[:size]
        return bytes(out)

    def finish(self) -> bytes:
        if self._finished:
            raise RuntimeError("already finished")
        self._finished = True
        out = b"" if self._started else self._header_bytes
        return out + self._chunk(bytes(self._buffer), final=True)


def open_all(sealed: bytes, key: bytes, size: int) -> Iterator[bytes]:
    """Decrypt a whole sealed object held in memory (tests and small files only)."""
    header = Header.parse(sealed)
    count = chunk_count(size, header.chunk_size)
    if len(sealed) != sealed_size(size, header.chunk_size):
        raise SealError("sealed object has the wrong length (truncated or extended)")
    for index in range(count):
        start = sealed_offset(index, header.chunk_size)
        length = min(header.chunk_size, size - index * header.chunk_size) + CHUNK_OVERHEAD
        yield open_chunk(
            sealed[:HEADER_SIZE], key, index, sealed[start : start + length], index == count - 1
        )


# --- small secrets: data keys and resumable-upload tails --------------------------------------


def seal_blob(key: bytes, aad: bytes, plaintext: bytes) -> bytes:
    """nonce (24 random bytes) || XChaCha20-Poly1305(key, nonce, aad, plaintext)."""
    nonce = os.urandom(NONCE_SIZE)
    return nonce + xchacha.encrypt(key, nonce, plaintext, aad)


def open_blob(key: bytes, aad: bytes, sealed: bytes) -> bytes:
    try:
        return xchacha.decrypt(key, sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], aad)
    except (xchacha.Rejected, ValueError) as exc:
        raise SealError("sealed data failed authentication") from exc


def new_data_key() -> bytes:
    return os.urandom(KEY_SIZE)


def wrap_key(data_key: bytes, kek: bytes, kek_id: str, recording_id: uuid.UUID) -> bytes:
    """The data key sealed by the KEK, bound to the KEK's id and the recording."""
    return seal_blob(kek, WRAP_CONTEXT + kek_id.encode() + recording_id.bytes, data_key)


def unwrap_key(wrapped: bytes, kek: bytes, kek_id: str, recording_id: uuid.UUID) -> bytes:
    try:
        return open_blob(kek, WRAP_CONTEXT + kek_id.encode() + recording_id.bytes, wrapped)
    except SealError as exc:
        raise SealError("data key failed authentication (wrong key-encryption key?)") from exc
