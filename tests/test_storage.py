"""The S3 client's multipart steps against the real object store: each part travels with its
CRC32C, which the store checks, so a part that differs from what the vault sent is refused
before the clip can be acknowledged."""

from __future__ import annotations

import base64
import os
import uuid
from datetime import UTC, datetime, timedelta

import crc32c
import pytest

from shared import storage
from shared.storage import ObjectStore
from tests.fixtures.servers import Servers

MiB = 1 << 20


def test_part_checksum_is_the_crc32c_in_base64() -> None:
    # RFC 3720, B.4: the CRC32C of 32 zero bytes is 0x8A9136AA.
    assert storage.part_checksum(bytes(32)) == base64.b64encode(bytes.fromhex("8a9136aa")).decode()
    data = bytearray(os.urandom(1000))  # a part is a bytearray: no copy to bytes
    assert storage.part_checksum(data) == storage.part_checksum(bytes(data))
    assert crc32c.crc32c(data).to_bytes(4, "big") == base64.b64decode(storage.part_checksum(data))


async def test_parts_arrive_whole_and_a_differing_part_is_refused(
    servers: Servers, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ObjectStore(servers.storage)
    key = f"tests/storage/{uuid.uuid4()}"
    upload = await store.start_multipart(key, retain_until=datetime.now(UTC) + timedelta(hours=1))
    first, last = bytearray(os.urandom(5 * MiB)), bytearray(os.urandom(1234))
    etags = [
        await store.upload_part(key, upload, 1, first),
        await store.upload_part(key, upload, 2, last),
    ]

    # What the store receives is not what the checksum was computed on (damage in transit):
    # it refuses the part, and the upload keeps the one it had under that number.
    other = storage.part_checksum(b"other bytes")
    monkeypatch.setattr(storage, "part_checksum", lambda data: other)
    with pytest.raises(storage.StorageError, match="BadDigest"):
        await store.upload_part(key, upload, 2, bytearray(b"damaged"))
    monkeypatch.undo()

    version = await store.complete_multipart(key, upload, etags)
    assert await store.read_head(key, version, 6 * MiB) == bytes(first + last)


async def test_protection_of_a_version_never_held(servers: Servers) -> None:
    """Every store answers what protects a version, including one that never had a legal hold
    (SeaweedFS answers NoSuchObjectLegalHold where AWS answers NoSuchObjectLockConfiguration),
    and keeps its retention to the second."""
    store = ObjectStore(servers.storage)
    key = f"tests/storage/{uuid.uuid4()}"
    until = datetime.now(UTC).replace(microsecond=654321) + timedelta(hours=1)
    upload = await store.start_multipart(key, retain_until=until)
    etag = await store.upload_part(key, upload, 1, bytearray(b"never held"))
    version = await store.complete_multipart(key, upload, [etag])
    kept, held = await store.protection(key, version)
    assert not held
    assert kept is not None and until.replace(microsecond=0) <= kept <= until

    await store.set_legal_hold(key, version, True)
    assert (await store.protection(key, version))[1]
    await store.set_legal_hold(key, version, False)
    assert not (await store.protection(key, version))[1]
