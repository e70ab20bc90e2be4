"""Resumable uploads with an unmodified tus client (tuspy) against real ingest and vault
processes: a plain upload with per-PATCH checksums, an upload that survives the ingest
process being killed mid-way, and a clip whose hash is wrong, refused at its end."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from tusclient.client import TusClient
from tusclient.uploader import Uploader

from services.vault.recordings.models import Recording, UploadSession
from services.vault.settings import DEV_KEK
from shared import sealing
from shared.clips import ClipMetadata
from shared.receipts import receipt_is_valid
from shared.signatures import b64decode
from shared.storage import ObjectStore
from temoin.dock import describe, receipt_of, upload_state_of
from temoin.station import StationKeyFile
from tests.fixtures.clips import make_clip
from tests.fixtures.directory import OrgKit
from tests.fixtures.live import Live, run_temoin
from tests.fixtures.servers import Servers
from tests.test_tus import creation_headers, patch_headers, tus_headers

MiB = 1 << 20
LiveOrg = tuple[OrgKit, httpx.AsyncClient]


@contextlib.contextmanager
def _uploader(
    live: Live, kit: OrgKit, path: Path, metadata: ClipMetadata, **options: object
) -> Iterator[Uploader]:
    client = TusClient(
        f"{live.ingest.url}/v1/uploads",
        headers={"Authorization": f"Bearer {kit.tokens['station']}"},
    )
    with open(path, "rb") as stream:  # tuspy leaves a file it opened itself open
        yield client.uploader(
            file_stream=stream,
            metadata={"metadata": metadata.model_dump_json(), "filetype": "video/mp4"},
            **options,
        )


async def _receipt(ingest: httpx.AsyncClient, kit: OrgKit, url: str) -> dict[str, object]:
    response = await ingest.get(f"{url}/receipt", headers=tus_headers(kit))
    assert response.status_code == 200, response.text
    key = (await ingest.get("/v1/receipts/public-key")).json()["public_key"]
    receipt: dict[str, object] = response.json()
    assert receipt_is_valid(receipt, key)
    return receipt


async def _opened(engine: AsyncEngine, servers: Servers, recording_id: str) -> bytes:
    async with engine.connect() as connection:
        recording = (
            await connection.execute(
                select(Recording.__table__).where(Recording.id == uuid.UUID(recording_id))
            )
        ).one()
    store = ObjectStore(servers.storage)
    sealed = store.client.get_object(store.bucket, recording.object_key).read()
    key = sealing.unwrap_key(
        recording.wrapped_key or b"", b64decode(DEV_KEK), recording.kek_id, recording.id
    )
    return b"".join(sealing.open_all(sealed, key, recording.size))


async def test_tuspy_uploads_with_checksums(
    live: Live, live_org: LiveOrg, engine: AsyncEngine, servers: Servers, tmp_path: Path
) -> None:
    kit, ingest = live_org
    data, metadata = make_clip(kit, size=9 * MiB + 5)
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    with _uploader(live, kit, path, metadata, chunk_size=4 * MiB, upload_checksum=True) as up:
        await asyncio.to_thread(up.upload)
    assert up.checksum_algorithm_name == "sha1"  # tuspy's, which tus servers must accept
    receipt = await _receipt(ingest, kit, up.url)
    assert receipt["sha256"] == metadata.sha256
    assert await _opened(engine, servers, str(receipt["recording_id"])) == data


async def _upload_through_a_kill(
    live: Live, kit: OrgKit, engine: AsyncEngine, uploader: Uploader, size: int
) -> None:
    upload = asyncio.create_task(asyncio.to_thread(uploader.upload))

    async def offset() -> int:
        async with engine.connect() as connection:
            value = await connection.scalar(
                select(UploadSession.offset).where(UploadSession.station_id == kit.station_id)
            )
        return int(value or 0)

    deadline = time.monotonic() + 60
    while await offset() < 12 * MiB:
        assert time.monotonic() < deadline and not upload.done(), "the upload did not start"
        await asyncio.sleep(0.02)
    live.ingest.stop(signal.SIGKILL)  # mid-upload: a PATCH is in flight
    killed_at = await offset()
    assert killed_at < size
    live.ingest.start()
    await asyncio.wait_for(upload, timeout=120)


async def test_resume_after_ingest_is_killed_mid_upload(
    live: Live, live_org: LiveOrg, engine: AsyncEngine, servers: Servers, tmp_path: Path
) -> None:
    kit, ingest = live_org
    data, metadata = make_clip(kit, size=48 * MiB + 1234)
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    options = {"chunk_size": 6 * MiB + 7, "retries": 60, "retry_delay": 0.5}
    with _uploader(live, kit, path, metadata, **options) as uploader:
        await _upload_through_a_kill(live, kit, engine, uploader, len(data))

    async with engine.connect() as connection:
        sessions = (
            await connection.execute(
                select(UploadSession.status).where(UploadSession.station_id == kit.station_id)
            )
        ).all()
    assert [s.status for s in sessions] == ["complete"]  # resumed, never started again
    receipt = await _receipt(ingest, kit, uploader.url)
    assert await _opened(engine, servers, str(receipt["recording_id"])) == data


async def test_a_wrong_clip_hash_is_refused_at_the_end(
    live_org: LiveOrg, engine: AsyncEngine, servers: Servers
) -> None:
    kit, ingest = live_org
    data, metadata = make_clip(kit, size=6 * MiB + 3, sha256="0" * 64)
    created = await ingest.post("/v1/uploads", headers=creation_headers(kit, metadata))
    location = created.headers["Location"]
    response = await ingest.patch(location, content=data, headers=patch_headers(kit, 0))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "metadata.sha256"
    assert (await ingest.head(location, headers=tus_headers(kit))).status_code == 410
    async with engine.connect() as connection:
        registered = await connection.scalar(
            select(Recording.id).where(Recording.organisation_id == kit.id)
        )
    assert registered is None
    store = ObjectStore(servers.storage)
    assert list(store.client.list_objects(store.bucket, prefix=f"recordings/{kit.id}/")) == []
    # The multipart upload was aborted: S3 lists no upload in progress for that object.
    pending = store.client._list_multipart_uploads(  # noqa: SLF001
        store.bucket, prefix=f"recordings/{kit.id}/"
    )
    assert list(pending.uploads) == []


async def _cut_patch(
    live: Live, kit: OrgKit, location: str, body: bytes, declared: int, **extra: str
) -> None:
    """Send a PATCH announcing ``declared`` bytes, send only ``body``, then hang up."""
    host, port = live.ingest.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    headers = {**patch_headers(kit, 0), "Content-Length": str(declared), "Host": host, **extra}
    head = f"PATCH {location} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()
    await asyncio.sleep(0.5)  # let ingest pass the bytes on to the vault
    writer.close()
    await writer.wait_closed()


async def test_a_patch_cut_short_keeps_what_arrived_unless_it_had_a_checksum(
    live: Live, live_org: LiveOrg
) -> None:
    kit, ingest = live_org
    data, metadata = make_clip(kit, size=12 * MiB)
    created = await ingest.post("/v1/uploads", headers=creation_headers(kit, metadata))
    location = created.headers["Location"]

    checksum = "sha256 " + base64.b64encode(hashlib.sha256(data).digest()).decode()
    await _cut_patch(
        live, kit, location, data[: 7 * MiB + 3], len(data), **{"Upload-Checksum": checksum}
    )
    head = await ingest.head(location, headers=tus_headers(kit))
    assert head.headers["Upload-Offset"] == "0"  # unverifiable, so nothing of it counts

    await _cut_patch(live, kit, location, data[: 7 * MiB + 3], len(data))
    head = await ingest.head(location, headers=tus_headers(kit))
    assert head.headers["Upload-Offset"] == str(7 * MiB + 3)  # a whole part and a tail
    rest = await ingest.patch(
        location, content=data[7 * MiB + 3 :], headers=patch_headers(kit, 7 * MiB + 3)
    )
    assert rest.status_code == 204 and "Temoin-Receipt" in rest.headers


async def test_dock_upload_resumes_an_interrupted_upload(
    live: Live, live_org: LiveOrg, engine: AsyncEngine, tmp_path: Path
) -> None:
    """`temoin dock upload` finds CLIP.upload.json from an earlier, interrupted run, asks the
    server where it stopped and sends only the rest."""
    kit, ingest = live_org
    assert kit.station_id is not None and kit.station_key is not None
    key_file = tmp_path / "dock.json"
    StationKeyFile(kit.station_id, kit.id, kit.station_key).save(key_file)
    made = run_temoin(
        "dock", "simulate", str(tmp_path), "--camera", kit.camera_serial, "--count", "1",
        "--size", str(12 * MiB), env=live.env,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    (clip,) = tmp_path.glob("*.mp4")
    metadata = describe(clip)
    created = await ingest.post("/v1/uploads", headers=creation_headers(kit, metadata))
    location = created.headers["Location"]
    first = await ingest.patch(
        location, content=clip.read_bytes()[: 7 * MiB], headers=patch_headers(kit, 0)
    )
    assert first.status_code == 204
    upload_state_of(clip).write_text(json.dumps({"url": location, "sha256": metadata.sha256}))

    uploaded = run_temoin("dock", "upload", str(clip), "--key-file", str(key_file), env=live.env)
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    assert not upload_state_of(clip).exists()
    receipt = json.loads(receipt_of(clip).read_text())
    assert receipt["sha256"] == metadata.sha256
    async with engine.connect() as connection:
        sessions = (
            await connection.execute(
                select(UploadSession.status).where(UploadSession.station_id == kit.station_id)
            )
        ).all()
    assert [s.status for s in sessions] == ["complete"]  # the same upload, finished


async def test_two_racing_tus_uploads_of_one_clip_make_one_recording(
    live_org: LiveOrg, engine: AsyncEngine, servers: Servers
) -> None:
    kit, ingest = live_org
    data, metadata = make_clip(kit, size=11 * MiB)
    locations = [
        (await ingest.post("/v1/uploads", headers=creation_headers(kit, metadata))).headers[
            "Location"
        ]
        for _ in range(2)
    ]
    answers = await asyncio.gather(
        *(ingest.patch(url, content=data, headers=patch_headers(kit, 0)) for url in locations)
    )
    assert [a.status_code for a in answers] == [204, 204], [a.text for a in answers]
    receipts = [a.headers["Temoin-Receipt"] for a in answers]
    assert receipts[0] == receipts[1]
    async with engine.connect() as connection:
        recordings = (
            await connection.execute(
                select(Recording.object_key).where(Recording.organisation_id == kit.id)
            )
        ).all()
    assert len(recordings) == 1
    # The loser's multipart upload was aborted, not assembled: one object only.
    store = ObjectStore(servers.storage)
    objects = list(store.client.list_objects(store.bucket, prefix=f"recordings/{kit.id}/"))
    assert [o.object_name for o in objects] == [recordings[0].object_key]
