"""Resumable uploads (tus 1.0.0) through the in-process apps: the protocol, the sealed result,
and every refusal. Kills and real tus clients are in test_tus_live.py."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from datetime import timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.vault.recordings.models import Recording, UploadSession
from services.vault.recordings.resumable import ResumableService
from services.vault.settings import DEV_KEK, VaultSettings
from shared import sealing
from shared.clips import MAX_CLIP_SIZE, ClipMetadata
from shared.receipts import receipt_is_valid
from shared.signatures import b64decode
from shared.storage import ObjectStore
from tests.fixtures.apps import ClientFactory
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, World
from tests.fixtures.servers import Servers

MiB = 1 << 20
STREAM = "application/offset+octet-stream"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def creation_headers(kit: OrgKit, metadata: ClipMetadata, **extra: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {kit.tokens['station']}",
        "Tus-Resumable": "1.0.0",
        "Upload-Length": str(metadata.size),
        "Upload-Metadata": (
            f"metadata {_b64(metadata.model_dump_json())},filetype {_b64('video/mp4')}"
        ),
        **extra,
    }


def patch_headers(kit: OrgKit, offset: int, **extra: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {kit.tokens['station']}",
        "Tus-Resumable": "1.0.0",
        "Upload-Offset": str(offset),
        "Content-Type": STREAM,
        **extra,
    }


def tus_headers(kit: OrgKit) -> dict[str, str]:
    return {"Authorization": f"Bearer {kit.tokens['station']}", "Tus-Resumable": "1.0.0"}


async def create(world: World, kit: OrgKit, metadata: ClipMetadata) -> str:
    response = await world.ingest.post("/v1/uploads", headers=creation_headers(kit, metadata))
    assert response.status_code == 201, response.text
    assert response.headers["Tus-Resumable"] == "1.0.0"
    location: str = response.headers["Location"]
    assert location.startswith("/v1/uploads/")
    return location


async def offset_of(world: World, kit: OrgKit, location: str) -> int:
    response = await world.ingest.head(location, headers=tus_headers(kit))
    assert response.status_code == 200, response.headers
    assert response.headers["Cache-Control"] == "no-store"
    return int(response.headers["Upload-Offset"])


def receipt_of(response: httpx.Response) -> dict[str, object]:
    receipt: dict[str, object] = json.loads(
        base64.urlsafe_b64decode(response.headers["Temoin-Receipt"])
    )
    return receipt


async def test_capabilities(world: World) -> None:
    response = await world.ingest.options("/v1/uploads")
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    assert set(response.headers["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "checksum",
        "termination",
        "expiration",
    }
    assert response.headers["Tus-Checksum-Algorithm"].split(",") == ["sha256", "sha1"]


async def test_upload_in_uneven_pieces_seals_the_exact_clip(
    world: World, connection: AsyncConnection, servers: Servers
) -> None:
    """Pieces that end mid-chunk and mid-part: the tail between PATCHes is kept sealed in the
    database, and the object assembled from the parts opens to the very bytes sent."""
    own = world.own
    data, metadata = make_clip(own, size=12 * MiB + 777)
    location = await create(world, own, metadata)
    assert await offset_of(world, own, location) == 0
    cuts = [0, 3 * MiB + 1, 3 * MiB + 2, 7 * MiB + 5, 11 * MiB, len(data)]
    last = None
    for start, end in zip(cuts, cuts[1:], strict=False):
        last = await world.ingest.patch(
            location, content=data[start:end], headers=patch_headers(own, start)
        )
        assert last.status_code == 204, last.text
        assert int(last.headers["Upload-Offset"]) == end
        assert "Upload-Expires" in last.headers
        if end < len(data):
            assert "Temoin-Receipt" not in last.headers
            assert await offset_of(world, own, location) == end
    assert last is not None
    receipt = receipt_of(last)
    key = (await world.ingest.get("/v1/receipts/public-key")).json()["public_key"]
    assert receipt_is_valid(receipt, key)
    assert (receipt["sha256"], receipt["size"]) == (metadata.sha256, len(data))

    # The same receipt from HEAD's header and from the receipt route.
    head = await world.ingest.head(location, headers=tus_headers(own))
    assert int(head.headers["Upload-Offset"]) == len(data)
    assert receipt_of(head) == receipt
    again = await world.ingest.get(f"{location}/receipt", headers=tus_headers(own))
    assert again.json() == receipt

    recording = (
        await connection.execute(
            select(Recording.__table__).where(
                Recording.id == uuid.UUID(str(receipt["recording_id"]))
            )
        )
    ).one()
    assert recording.content_type == "video/mp4"
    store = ObjectStore(servers.storage)
    sealed = store.client.get_object(store.bucket, recording.object_key).read()
    assert len(sealed) == recording.sealed_size
    data_key = sealing.unwrap_key(
        recording.wrapped_key or b"", b64decode(DEV_KEK), recording.kek_id, recording.id
    )
    assert b"".join(sealing.open_all(sealed, data_key, recording.size)) == data
    assert store.client.get_object_retention(store.bucket, recording.object_key).mode == (
        "COMPLIANCE"
    )
    # The session keeps no key, tail or parts once complete.
    session = (
        await connection.execute(
            select(UploadSession.__table__).where(
                UploadSession.id == uuid.UUID(location.rsplit("/", 1)[1])
            )
        )
    ).one()
    assert (session.status, session.tail, session.etags) == ("complete", None, [])


async def test_creation_with_upload_and_a_clip_already_registered(world: World) -> None:
    own = world.own
    data, metadata = make_clip(own, size=100_000)
    first = await world.ingest.post(
        "/v1/uploads",
        content=data,
        headers=creation_headers(own, metadata, **{"Content-Type": STREAM}),
    )
    assert first.status_code == 201, first.text
    assert int(first.headers["Upload-Offset"]) == len(data)
    receipt = receipt_of(first)

    # The same clip again, by tus: an upload complete at once, the same receipt; a client
    # that sends the bytes anyway (tuspy does) gets the same answer.
    again = await world.ingest.post("/v1/uploads", headers=creation_headers(own, metadata))
    assert again.status_code == 201
    assert int(again.headers["Upload-Offset"]) == len(data)
    assert receipt_of(again) == receipt
    patched = await world.ingest.patch(
        again.headers["Location"], content=data, headers=patch_headers(own, 0)
    )
    assert patched.status_code == 204 and receipt_of(patched) == receipt
    # And by single POST.
    post = await world.ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(own, metadata)
    )
    assert post.status_code == 200 and post.json() == receipt


async def test_checksum_mismatch_keeps_nothing_of_the_patch(world: World) -> None:
    own = world.own
    data, metadata = make_clip(own, size=6 * MiB)
    location = await create(world, own, metadata)
    half = 3 * MiB

    def checksum(body: bytes) -> str:
        return "sha256 " + base64.b64encode(hashlib.sha256(body).digest()).decode()

    wrong = await world.ingest.patch(
        location,
        content=data[:half],
        headers=patch_headers(own, 0, **{"Upload-Checksum": checksum(data[1 : half + 1])}),
    )
    assert wrong.status_code == 460, wrong.text
    assert wrong.headers["Content-Type"] == "application/problem+json"
    assert await offset_of(world, own, location) == 0
    unsupported = await world.ingest.patch(
        location, content=data[:half], headers=patch_headers(own, 0, **{"Upload-Checksum": "md5 x"})
    )
    assert unsupported.status_code == 400
    for start, end in ((0, half), (half, len(data))):
        ok = await world.ingest.patch(
            location,
            content=data[start:end],
            headers=patch_headers(own, start, **{"Upload-Checksum": checksum(data[start:end])}),
        )
        assert ok.status_code == 204, ok.text
    assert "Temoin-Receipt" in ok.headers


async def test_protocol_refusals(world: World) -> None:
    own, other = world.own, world.other
    data, metadata = make_clip(own, size=2 * MiB)
    location = await create(world, own, metadata)

    no_version = await world.ingest.head(location, headers=own.headers("station"))
    assert no_version.status_code == 412 and no_version.headers["Tus-Version"] == "1.0.0"
    wrong_type = await world.ingest.patch(
        location, content=data, headers=patch_headers(own, 0, **{"Content-Type": "video/mp4"})
    )
    assert wrong_type.status_code == 415
    wrong_offset = await world.ingest.patch(location, content=data, headers=patch_headers(own, 5))
    assert wrong_offset.status_code == 409 and wrong_offset.json()["offset"] == 0
    too_much = await world.ingest.patch(
        location, content=data + b"x", headers=patch_headers(own, 0)
    )
    assert too_much.status_code == 413
    not_theirs = await world.ingest.head(location, headers=tus_headers(other))
    assert not_theirs.status_code == 404
    unknown = await world.ingest.head(f"/v1/uploads/{uuid.uuid4()}", headers=tus_headers(own))
    assert unknown.status_code == 404
    anonymous = await world.ingest.head(location, headers={"Tus-Resumable": "1.0.0"})
    assert anonymous.status_code == 401
    no_receipt = await world.ingest.get(f"{location}/receipt", headers=tus_headers(own))
    assert no_receipt.status_code == 409
    assert await offset_of(world, own, location) == 0


async def test_creation_refusals(world: World) -> None:
    own = world.own
    _, metadata = make_clip(own, size=1000)
    cases = {
        "metadata.size": {"Upload-Length": "999"},
        "metadata": {"Upload-Metadata": f"filetype {_b64('video/mp4')}"},
    }
    for field, change in cases.items():
        response = await world.ingest.post(
            "/v1/uploads", headers={**creation_headers(own, metadata), **change}
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == field
    _, unknown_camera = make_clip(own, camera_serial="NOPE-1")
    response = await world.ingest.post("/v1/uploads", headers=creation_headers(own, unknown_camera))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "metadata.camera_serial"
    no_length = creation_headers(own, metadata)
    del no_length["Upload-Length"]
    assert (await world.ingest.post("/v1/uploads", headers=no_length)).status_code == 400
    bad_base64 = {**creation_headers(own, metadata), "Upload-Metadata": "metadata !!!"}
    assert (await world.ingest.post("/v1/uploads", headers=bad_base64)).status_code == 400


async def test_termination_and_expiration(
    world: World, connection: AsyncConnection, servers: Servers
) -> None:
    own = world.own
    data, metadata = make_clip(own, size=7 * MiB)
    location = await create(world, own, metadata)
    sent = await world.ingest.patch(
        location, content=data[: 6 * MiB], headers=patch_headers(own, 0)
    )
    assert sent.status_code == 204
    deleted = await world.ingest.delete(location, headers=tus_headers(own))
    assert deleted.status_code == 204
    assert (await world.ingest.head(location, headers=tus_headers(own))).status_code == 410
    again = await world.ingest.patch(
        location, content=data[6 * MiB :], headers=patch_headers(own, 6 * MiB)
    )
    assert again.status_code == 410

    # Expiry: refused as soon as it is past, discarded by the vault's job.
    _, other_clip = make_clip(own, size=6 * MiB)
    expiring = await create(world, own, other_clip)
    upload_id = uuid.UUID(expiring.rsplit("/", 1)[1])
    await connection.execute(
        update(UploadSession)
        .where(UploadSession.id == upload_id)
        .values(expires_at=UploadSession.expires_at - timedelta(days=30))
    )
    assert (await world.ingest.head(expiring, headers=tus_headers(own))).status_code == 410

    session = AsyncSession(bind=connection, join_transaction_mode="create_savepoint")
    service = ResumableService(session, ObjectStore(servers.storage), VaultSettings())
    assert await service.expire() >= 1
    await session.flush()
    status = await connection.scalar(
        select(UploadSession.status).where(UploadSession.id == upload_id)
    )
    assert status == "expired"
    await session.close()


async def test_an_altered_tail_ends_the_upload(world: World, connection: AsyncConnection) -> None:
    """The bytes kept between PATCHes are sealed: altered in the database, they are refused
    (the upload is lost, 410), never sealed into the clip."""
    own = world.own
    data, metadata = make_clip(own, size=3 * MiB)
    location = await create(world, own, metadata)
    first = await world.ingest.patch(location, content=data[:MiB], headers=patch_headers(own, 0))
    assert first.status_code == 204
    upload_id = uuid.UUID(location.rsplit("/", 1)[1])
    tail = await connection.scalar(select(UploadSession.tail).where(UploadSession.id == upload_id))
    assert tail is not None and data[:4096] not in tail  # sealed, not plaintext
    altered = tail[:-1] + bytes([tail[-1] ^ 1])
    await connection.execute(
        update(UploadSession).where(UploadSession.id == upload_id).values(tail=altered)
    )
    rest = await world.ingest.patch(location, content=data[MiB:], headers=patch_headers(own, MiB))
    assert rest.status_code == 410, rest.text


async def test_creation_beyond_tus_max_size_or_not_a_clip(world: World) -> None:
    own = world.own
    _, metadata = make_clip(own, size=1000)
    advertised = int((await world.ingest.options("/v1/uploads")).headers["Tus-Max-Size"])
    assert advertised == MAX_CLIP_SIZE
    too_long = {**creation_headers(own, metadata), "Upload-Length": str(advertised + 1)}
    response = await world.ingest.post("/v1/uploads", headers=too_long)
    assert response.status_code == 413, response.text
    assert response.headers["Tus-Max-Size"] == str(advertised)
    page = {
        **creation_headers(own, metadata),
        "Upload-Metadata": f"metadata {_b64(metadata.model_dump_json())},filetype "
        + _b64("text/html"),
    }
    response = await world.ingest.post("/v1/uploads", headers=page)
    assert response.status_code == 415, response.text
    assert response.json()["errors"][0]["field"] == "header.upload-metadata.filetype"


class _Framing(httpx.AsyncBaseTransport):
    """The vault's transport, noting how each PATCH ingest sends it is framed."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.patches: list[tuple[str | None, str | None]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH":
            headers = request.headers
            self.patches.append((headers.get("Content-Length"), headers.get("Transfer-Encoding")))
        return await self.inner.handle_async_request(request)


async def test_a_patch_of_known_length_reaches_the_vault_unchunked(
    world: World, client_for: ClientFactory
) -> None:
    """Ingest passes the PATCH's Content-Length on, so the body goes as is (no chunked
    encoding to build, parse, or keep HAProxy from splicing it, docs/scaling.md); with an
    Upload-Checksum it stays chunked, so the vault sees no end of the body before the digest
    is checked (test_checksum_mismatch_keeps_nothing_of_the_patch)."""
    own = world.own
    data, metadata = make_clip(own, size=3 * MiB + 5)
    framing = _Framing(world.vault._transport)  # noqa: SLF001
    async with client_for("ingest", vault_transport=framing) as ingest:
        location = (
            await ingest.post("/v1/uploads", headers=creation_headers(own, metadata))
        ).headers["Location"]
        first = await ingest.patch(location, content=data[:MiB], headers=patch_headers(own, 0))
        assert first.status_code == 204, first.text
        digest = base64.b64encode(hashlib.sha256(data[MiB:]).digest()).decode()
        rest = await ingest.patch(
            location,
            content=data[MiB:],
            headers=patch_headers(own, MiB, **{"Upload-Checksum": f"sha256 {digest}"}),
        )
        assert rest.status_code == 204, rest.text
    assert framing.patches == [(str(MiB), None), (None, "chunked")]
    assert receipt_of(rest)["sha256"] == metadata.sha256
