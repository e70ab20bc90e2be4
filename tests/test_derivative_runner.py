"""The two pieces of the anonymisation runner that stand between the engine and the store
(services/vault/derivatives/jobs.py), against the real object store: the sealing sink, whose
length is known only at its end, and the loopback server of the original's plaintext."""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.vault.derivatives.jobs import UNKNOWN_LENGTH, PlaintextServer, SealingSink
from services.vault.recordings.models import Recording
from services.vault.recordings.parts import PartWriter
from services.vault.recordings.reading import SealedReader
from shared import sealing
from shared.storage import ObjectStore
from tests.fixtures.servers import Servers

MiB = 1 << 20
CHUNK = 4096 + 7
PART = 5 * MiB - (5 * MiB) % CHUNK + CHUNK  # the S3 minimum, rounded up to whole chunks


async def _sealed(store: ObjectStore, data: bytes, piece: int) -> tuple[Recording, bytes, str]:
    """``data`` through the sink in pieces of ``piece`` bytes: the row to read it, its key."""
    recording_id, key = uuid.uuid4(), sealing.new_data_key()
    object_key = f"tests/derivatives/{recording_id}.sealed"
    multipart = await store.start_multipart(
        object_key, retain_until=datetime.now(UTC) + timedelta(seconds=5)
    )
    writer = PartWriter(store, object_key=object_key, multipart_id=multipart,
                        recording_id=recording_id, data_key=key, chunk_size=CHUNK,
                        part_size=PART, length=UNKNOWN_LENGTH)  # fmt: skip
    sink = SealingSink(writer)
    for at in range(0, len(data), piece):
        await sink.write(data[at : at + piece])
    length, etags = await sink.finish()
    assert length == len(data)
    version = await store.complete_multipart(object_key, multipart, etags)
    assert store.client.stat_object(store.bucket, object_key).size == sealing.sealed_size(
        len(data), CHUNK
    )
    recording = Recording(id=recording_id, size=len(data), chunk_size=CHUNK,
                          object_key=object_key, object_version=version,
                          content_type="video/mp4")  # fmt: skip
    return recording, key, writer.hash.hexdigest()


@pytest.mark.parametrize(
    "size", [1, CHUNK, PART - 1, PART, PART + 1, 2 * PART, 2 * PART + CHUNK + 3]
)
async def test_sink_of_unknown_length_reads_back(servers: Servers, size: int) -> None:
    """Every boundary of the last part: the final chunk is marked where the copy ends (the
    reader opens the last chunk as final: one not marked so fails authentication), and the
    SHA-256 is of exactly these bytes."""
    store = ObjectStore(servers.storage)
    data = os.urandom(size)
    recording, key, sha256 = await _sealed(store, data, piece=300_001)
    assert sha256 == hashlib.sha256(data).hexdigest()
    reader = SealedReader(store, recording, key)
    assert b"".join([piece async for piece in reader.chunks(0, size)]) == data


async def test_loopback_source_serves_ranges_on_its_secret_path_only(servers: Servers) -> None:
    store = ObjectStore(servers.storage)
    data = os.urandom(3 * CHUNK + 99)
    recording, key, _ = await _sealed(store, data, piece=1000)
    server = PlaintextServer(SealedReader(store, recording, key), "video/mp4")
    with server:
        assert server.url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(timeout=30) as client:
            whole = await client.get(server.url)
            assert (whole.status_code, whole.content) == (200, data)
            assert whole.headers["Accept-Ranges"] == "bytes"
            part = await client.get(server.url, headers={"Range": f"bytes={CHUNK - 5}-{CHUNK + 4}"})
            assert part.status_code == 206 and part.content == data[CHUNK - 5 : CHUNK + 5]
            assert part.headers["Content-Range"] == f"bytes {CHUNK - 5}-{CHUNK + 4}/{len(data)}"
            tail = await client.get(server.url, headers={"Range": "bytes=-7"})
            assert tail.content == data[-7:]
            outside = await client.get(server.url, headers={"Range": f"bytes={len(data)}-"})
            assert outside.status_code == 416
            base = server.url.rsplit("/", 1)[0]
            guessed = await client.get(f"{base}/")
            assert guessed.status_code == 404 and guessed.content == b""
            near = await client.get(server.url[:-1])
            assert near.status_code == 404
    # Gone with the job.
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url, timeout=2)
