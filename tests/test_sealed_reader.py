"""The vault's reader of sealed objects, against the real object store: any range, read at once
or streamed in batches, gives the clip's bytes; a damaged chunk stops the stream there; a
stream abandoned halfway stops its reading thread."""

from __future__ import annotations

import asyncio
import io
import os
import threading
import uuid

import pytest

from services.vault.recordings.models import Recording
from services.vault.recordings.reading import BATCH, Damaged, SealedReader
from shared import sealing
from shared.storage import ObjectStore
from tests.fixtures.servers import Servers

CHUNK = 4096
SIZE = 2 * BATCH + BATCH // 2 + 123  # three batches, the last one short, ending mid-chunk


def _store_sealed(store: ObjectStore, recording_id: uuid.UUID, sealed: bytes) -> str | None:
    key = f"tests/reader/{recording_id}.sealed"
    put = store.client.put_object(store.bucket, key, io.BytesIO(sealed), len(sealed))
    version: str | None = put.version_id
    return version


def _recording(recording_id: uuid.UUID, version: str | None) -> Recording:
    return Recording(
        id=recording_id,
        size=SIZE,
        chunk_size=CHUNK,
        object_key=f"tests/reader/{recording_id}.sealed",
        object_version=version,
    )


async def _streamed(reader: SealedReader, start: int, stop: int) -> bytes:
    return b"".join([piece async for piece in reader.chunks(start, stop)])


Clip = tuple[ObjectStore, uuid.UUID, bytes, bytes, bytes]  # store, id, data key, data, sealed


@pytest.fixture
def clip(servers: Servers) -> Clip:
    store = ObjectStore(servers.storage)
    recording_id, key, data = uuid.uuid4(), sealing.new_data_key(), os.urandom(SIZE)
    sealer = sealing.Sealer(recording_id, key, chunk_size=CHUNK)
    sealed = sealer.update(data) + sealer.finish()
    return store, recording_id, key, data, sealed


async def _reader(clip: Clip, sealed: bytes) -> SealedReader:
    store, recording_id, key, _, _ = clip
    version = await asyncio.to_thread(_store_sealed, store, recording_id, sealed)
    return SealedReader(store, _recording(recording_id, version), key)


async def test_any_range_read_or_streamed(clip: Clip) -> None:
    data, sealed = clip[3], clip[4]
    reader = await _reader(clip, sealed)
    ranges = [
        (0, SIZE),
        (0, 1),
        (SIZE - 1, SIZE),
        (1, SIZE - 1),
        (CHUNK - 1, CHUNK + 1),  # across a chunk boundary
        (BATCH - 5, BATCH + 5),  # across a batch boundary
        (BATCH, 2 * BATCH),  # exactly one batch
        (3 * CHUNK + 7, 2 * BATCH + 11),
    ]
    for start, stop in ranges:
        assert await reader.read(start, stop) == data[start:stop], (start, stop)
        assert await _streamed(reader, start, stop) == data[start:stop], (start, stop)
    with pytest.raises(ValueError):
        await reader.read(0, SIZE + 1)


async def test_a_damaged_chunk_stops_the_stream_there(clip: Clip) -> None:
    data, damaged = clip[3], bytearray(clip[4])
    index = BATCH // CHUNK + 3  # in the second batch
    damaged[sealing.sealed_offset(index, CHUNK) + 50] ^= 1
    reader = await _reader(clip, bytes(damaged))
    pieces = reader.chunks(0, SIZE)
    assert await anext(pieces) == data[:BATCH]  # the first batch is whole and authentic
    with pytest.raises(Damaged, match=f"chunk {index}"):
        await anext(pieces)
    await pieces.aclose()
    with pytest.raises(Damaged):
        await reader.read(index * CHUNK, index * CHUNK + 1)
    assert await reader.read(0, 10) == data[:10]  # the chunks before it still read


async def test_an_abandoned_stream_stops_its_thread(clip: Clip) -> None:
    data, sealed = clip[3], clip[4]
    reader = await _reader(clip, sealed)
    pieces = reader.chunks(0, SIZE)
    assert await anext(pieces) == data[:BATCH]
    await pieces.aclose()  # as when the player goes away
    for _ in range(100):
        if not any(t.name == "sealed-reader" for t in threading.enumerate()):
            break
        await asyncio.sleep(0.05)
    assert not any(t.name == "sealed-reader" for t in threading.enumerate())
