"""The part writer against the real object store: a clip written in pieces of any size, cut
off mid-chunk and resumed by another writer from the kept tail and hash state, reads back
byte for byte, with the SHA-256 of the whole clip."""

from __future__ import annotations

import hashlib
import os
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.vault.recordings.models import Recording
from services.vault.recordings.parts import PartWriter
from services.vault.recordings.reading import SealedReader
from shared import sealing
from shared.storage import ObjectStore
from tests.fixtures.servers import Servers

MiB = 1 << 20
CHUNK = 4096 + 7  # chunks that do not divide a MiB: boundaries everywhere
PART = 5 * MiB - (5 * MiB) % CHUNK + CHUNK  # the S3 minimum, rounded up to whole chunks


async def test_written_in_pieces_and_resumed_it_reads_back(servers: Servers) -> None:
    store = ObjectStore(servers.storage)
    recording_id, key = uuid.uuid4(), sealing.new_data_key()
    data = os.urandom(2 * PART + 12345)  # two whole parts and a short last one
    object_key = f"tests/writer/{recording_id}.sealed"
    multipart = await store.start_multipart(
        object_key, retain_until=datetime.now(UTC) + timedelta(seconds=5)
    )
    common: dict[str, Any] = {
        "object_key": object_key,
        "multipart_id": multipart,
        "recording_id": recording_id,
        "data_key": key,
        "chunk_size": CHUNK,
        "part_size": PART,
        "length": len(data),
    }
    rng = random.Random(7)

    async def feed(writer: PartWriter, until: int) -> None:
        while writer.offset < until:
            size = min(rng.choice([1, 100, CHUNK - 1, 65536, 300_001]), until - writer.offset)
            await writer.write(data[writer.offset : writer.offset + size])

    first = PartWriter(store, **common)
    cut = PART + 3 * CHUNK + 17  # mid-chunk, in the second part
    await feed(first, cut)
    etags = await first.drain()
    assert len(etags) == 1 and first.pending == data[PART:cut]

    second = PartWriter(  # another process, from what the first acknowledged
        store,
        **common,
        offset=cut,
        etags=etags,
        pending=first.pending,
        hash_state=first.hash.state(),
    )
    await feed(second, len(data))
    etags = await second.drain()
    assert second.pending == b"" and len(etags) == 3
    assert second.hash.hexdigest() == hashlib.sha256(data).hexdigest()
    version = await store.complete_multipart(object_key, multipart, etags)

    sealed_size = store.client.stat_object(store.bucket, object_key).size
    assert sealed_size == sealing.sealed_size(len(data), CHUNK)
    recording = Recording(id=recording_id, size=len(data), chunk_size=CHUNK,
                          object_key=object_key, object_version=version)  # fmt: skip
    reader = SealedReader(store, recording, key)
    assert b"".join([piece async for piece in reader.chunks(0, len(data))]) == data
