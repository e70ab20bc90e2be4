"""The sealed-object format: round trips at every chunk boundary, and every way of tampering
with a sealed object (reorder, truncate, extend, splice, flip a bit, swap headers) fails."""

from __future__ import annotations

import os
import uuid

import pytest

from shared import sealing
from shared.sealing import CHUNK_OVERHEAD, HEADER_SIZE, Sealer, SealError

CHUNK = 64


def _seal(data: bytes, key: bytes, recording: uuid.UUID, feed: int = 7) -> bytes:
    sealer = Sealer(recording, key, chunk_size=CHUNK)
    out = bytearray()
    for start in range(0, len(data), feed):
        out += sealer.update(data[start : start + feed])
    return bytes(out + sealer.finish())


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5])
def test_round_trip(size: int) -> None:
    key, recording, data = sealing.new_data_key(), uuid.uuid4(), os.urandom(size)
    sealed = _seal(data, key, recording)
    assert len(sealed) == sealing.sealed_size(size, CHUNK)
    assert b"".join(sealing.open_all(sealed, key, size)) == data
    if size >= 16:  # below that, random ciphertext contains the bytes by chance
        assert data not in sealed


def _chunks(sealed: bytes) -> list[bytes]:
    body = sealed[HEADER_SIZE:]
    step = CHUNK + CHUNK_OVERHEAD
    return [body[i : i + step] for i in range(0, len(body), step)]


def _assemble(header: bytes, chunks: list[bytes]) -> bytes:
    return header + b"".join(chunks)


def test_tampering_is_detected() -> None:
    key, recording = sealing.new_data_key(), uuid.uuid4()
    size = 4 * CHUNK + 10
    data = os.urandom(size)
    sealed = _seal(data, key, recording)
    header, chunks = sealed[:HEADER_SIZE], _chunks(sealed)

    def fails(candidate: bytes, declared: int = size) -> None:
        with pytest.raises(SealError):
            b"".join(sealing.open_all(candidate, key, declared))

    fails(_assemble(header, [chunks[1], chunks[0], *chunks[2:]]))  # reordered
    # Truncated at a chunk boundary, with the size adjusted to match: the new last chunk was
    # not sealed as final.
    fails(_assemble(header, chunks[:-1]), declared=4 * CHUNK)
    fails(sealed + b"\x00" * 3)  # extended
    flipped = bytearray(sealed)
    flipped[HEADER_SIZE + 5] ^= 1
    fails(bytes(flipped))
    other = _seal(os.urandom(size), key, uuid.uuid4())  # same key even: header differs
    fails(_assemble(header, [chunks[0], _chunks(other)[1], *chunks[2:]]))  # spliced
    fails(_assemble(other[:HEADER_SIZE], chunks))  # another object's header
    with pytest.raises(SealError):
        b"".join(sealing.open_all(sealed, sealing.new_data_key(), size))  # wrong key
    with pytest.raises(SealError, match="not a Témoin"):
        sealing.Header.parse(b"X" * HEADER_SIZE)


def test_each_chunk_opens_alone_for_range_reads() -> None:
    key, recording = sealing.new_data_key(), uuid.uuid4()
    data = os.urandom(3 * CHUNK + 9)
    sealed = _seal(data, key, recording)
    header = sealed[:HEADER_SIZE]
    start = sealing.sealed_offset(2, CHUNK)
    chunk = sealed[start : start + CHUNK + CHUNK_OVERHEAD]
    assert sealing.open_chunk(header, key, 2, chunk, final=False) == data[2 * CHUNK : 3 * CHUNK]
    with pytest.raises(SealError):
        sealing.open_chunk(header, key, 2, chunk, final=True)


def test_data_keys_are_wrapped_per_recording() -> None:
    kek, data_key, recording = os.urandom(32), sealing.new_data_key(), uuid.uuid4()
    wrapped = sealing.wrap_key(data_key, kek, "kek-2026", recording)
    assert data_key not in wrapped
    assert sealing.unwrap_key(wrapped, kek, "kek-2026", recording) == data_key
    for args in (
        (wrapped, os.urandom(32), "kek-2026", recording),  # another KEK
        (wrapped, kek, "kek-2025", recording),  # claimed under another key id
        (wrapped, kek, "kek-2026", uuid.uuid4()),  # moved to another recording
    ):
        with pytest.raises(SealError):
            sealing.unwrap_key(*args)


def test_sealing_a_chunk_twice_never_reuses_a_nonce() -> None:
    """A resumed upload may seal an index again with other bytes: each time a fresh nonce."""
    key, header = sealing.new_data_key(), sealing.Header(CHUNK, uuid.uuid4()).to_bytes()
    first = sealing.seal_chunk(header, key, 3, b"a" * 100, final=False)
    second = sealing.seal_chunk(header, key, 3, b"b" * 100, final=False)
    assert first[: sealing.NONCE_SIZE] != second[: sealing.NONCE_SIZE]
    assert sealing.open_chunk(header, key, 3, second, final=False) == b"b" * 100


def test_seal_chunk_in_place_opens_like_seal_chunk() -> None:
    key, recording, data = sealing.new_data_key(), uuid.uuid4(), os.urandom(CHUNK - 3)
    header = sealing.Header(CHUNK, recording).to_bytes()
    slot = bytearray(sealing.NONCE_SIZE) + data + bytearray(sealing.TAG_SIZE)
    scratch = bytearray(CHUNK + sealing.TAG_SIZE)
    sealing.seal_chunk_in_place(header, key, 5, memoryview(slot), True, memoryview(scratch))
    assert data not in slot
    assert sealing.open_chunk(header, key, 5, bytes(slot), final=True) == data
    with pytest.raises(SealError):  # bound to its index and final flag like any chunk
        sealing.open_chunk(header, key, 5, bytes(slot), final=False)


def test_open_chunk_into_is_open_chunk() -> None:
    key, recording, data = sealing.new_data_key(), uuid.uuid4(), os.urandom(CHUNK)
    header = sealing.Header(CHUNK, recording).to_bytes()
    sealed = sealing.seal_chunk(header, key, 2, data, final=False)
    out = bytearray(CHUNK)
    sealing.open_chunk_into(header, key, 2, memoryview(sealed), False, memoryview(out))
    assert out == data
    with pytest.raises(SealError):  # another index: refused, like open_chunk
        sealing.open_chunk_into(header, key, 3, memoryview(sealed), False, memoryview(out))
