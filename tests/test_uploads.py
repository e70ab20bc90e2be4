"""Single-request uploads, dock to sealed storage: the receipt comes only once the clip is
sealed under object lock and registered with its collecte entry; every refusal leaves nothing
registered and nothing stored."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from minio.error import S3Error
from sqlalchemy import any_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from services.vault.recordings.models import Recording
from services.vault.settings import DEV_KEK
from shared import sealing
from shared.audit import entries
from shared.clips import MAX_CLIP_SIZE, METADATA_HEADER
from shared.receipts import receipt_is_valid
from shared.signatures import b64decode
from shared.storage import ObjectStore
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import World
from tests.fixtures.servers import Servers


async def _count(connection: AsyncConnection, organisation_id: uuid.UUID) -> tuple[int, int]:
    recordings = await connection.execute(
        select(func.count())
        .select_from(Recording)
        .where(Recording.organisation_id == organisation_id)
    )
    collectes = await connection.execute(
        select(func.count())
        .select_from(entries)
        .where(entries.c.organisation_id == organisation_id, entries.c.action == "collecte")
    )
    return recordings.scalar_one(), collectes.scalar_one()


def _objects(servers: Servers, organisation_id: uuid.UUID) -> list[str]:
    store = ObjectStore(servers.storage)
    return [
        o.object_name
        for o in store.client.list_objects(
            store.bucket, prefix=f"recordings/{organisation_id}/", recursive=True
        )
    ]


async def test_a_clip_past_its_retention_is_taken_and_flagged_for_erasure(
    world: World, connection: AsyncConnection
) -> None:
    """A clip that arrives after its retention ended (R241-13) is registered all the same (the
    camera must be freed), but the receipt's answer and the collecte entry say that the next
    erasure pass erases it unless it is qualified; the signature still covers what it did."""
    own = world.own
    key = (await world.ingest.get("/v1/receipts/public-key")).json()["public_key"]
    ended = datetime.now(UTC) - timedelta(days=31)
    answers = {}
    clips = {}
    for name, changes in {
        "old": {"started_at": ended - timedelta(minutes=3), "ended_at": ended},
        "fresh": {},
    }.items():
        data, metadata = clips[name] = make_clip(own, **changes)
        response = await world.ingest.post(
            "/v1/recordings", content=data, headers=upload_headers(own, metadata)
        )
        assert response.status_code == 201, response.text
        answers[name] = response.json()
        assert receipt_is_valid(answers[name], key)
        expected_end = metadata.ended_at + timedelta(days=30)
        assert datetime.fromisoformat(answers[name]["retain_until"]) == expected_end
    old, fresh = answers["old"], answers["fresh"]
    assert old["erasure_due"] is True
    assert "erased at the next erasure pass" in old["notice"]
    assert "effacé au prochain passage" in old["notice"]
    assert (fresh["erasure_due"], fresh["notice"]) == (False, None)
    details = {
        str(row.recording_ids[0]): row.details
        for row in await connection.execute(
            select(entries).where(
                entries.c.organisation_id == own.id, entries.c.action == "collecte"
            )
        )
    }
    assert details[old["recording_id"]]["erasure_due"] is True
    assert "unless it is qualified" in details[old["recording_id"]]["notice"]
    assert "erasure_due" not in details[fresh["recording_id"]]
    # The same clip again: the same receipt, the same warning.
    again = await world.ingest.post(
        "/v1/recordings", content=clips["old"][0], headers=upload_headers(own, clips["old"][1])
    )
    assert (again.status_code, again.json()) == (200, old)


async def test_upload_seals_registers_and_signs(
    world: World, connection: AsyncConnection, servers: Servers
) -> None:
    own = world.own
    data, metadata = make_clip(own, size=3 * 1024 * 1024 + 17)
    response = await world.ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(own, metadata)
    )
    assert response.status_code == 201, response.text
    receipt = response.json()
    key = (await world.ingest.get("/v1/receipts/public-key")).json()["public_key"]
    assert receipt_is_valid(receipt, key)
    assert not receipt_is_valid({**receipt, "size": receipt["size"] + 1}, key)
    assert (receipt["sha256"], receipt["size"]) == (metadata.sha256, len(data))

    table = Recording.__table__
    recording = (
        await connection.execute(
            select(table).where(table.c.id == uuid.UUID(receipt["recording_id"]))
        )
    ).one()
    assert recording.agent_id == own.agents["wearer"]  # found from the camera's assignment
    assert recording.clock_offset_ms == 1200 and recording.address == "Place de l'Hôtel de Ville"
    assert recording.retain_until == metadata.ended_at + timedelta(days=30)

    # The collecte entry was written in the same transaction.
    collecte = (
        await connection.execute(
            select(entries).where(recording.id == any_(entries.c.recording_ids))
        )
    ).one()
    assert (collecte.action, collecte.actor_role) == ("collecte", "station")
    assert collecte.details["agent"] == f"WEA-{own.id.hex[:8]}"

    # The sealed object: locked, not plaintext, and it opens back to the very bytes sent.
    store = ObjectStore(servers.storage)
    sealed = store.client.get_object(store.bucket, recording.object_key).read()
    assert len(sealed) == recording.sealed_size
    assert data[:4096] not in sealed
    data_key = sealing.unwrap_key(
        recording.wrapped_key or b"", b64decode(DEV_KEK), recording.kek_id, recording.id
    )
    assert b"".join(sealing.open_all(sealed, data_key, recording.size)) == data
    retention = store.client.get_object_retention(store.bucket, recording.object_key)
    assert retention.mode == "COMPLIANCE"
    with pytest.raises(S3Error):
        store.client.remove_object(
            store.bucket, recording.object_key, version_id=recording.object_version
        )


async def test_the_same_clip_again_gets_the_same_receipt(
    world: World, connection: AsyncConnection
) -> None:
    own = world.own
    data, metadata = make_clip(own)
    first = await world.ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(own, metadata)
    )
    again = await world.ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(own, metadata)
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    assert await _count(connection, own.id) == (1, 1)


def _tampered(kind: str, data: bytes) -> tuple[bytes, dict[str, Any]]:
    if kind == "hash":
        return data, {"sha256": "0" * 64}
    if kind == "truncated":
        return data[:-100], {}
    if kind == "too_large":
        return data + b"extra", {}
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "status", "field"),
    [
        ("hash", 422, "metadata.sha256"),
        ("truncated", 422, "metadata.size"),
        ("too_large", 413, None),
    ],
)
async def test_mismatched_bodies_store_nothing(
    world: World,
    connection: AsyncConnection,
    servers: Servers,
    kind: str,
    status: int,
    field: str | None,
) -> None:
    own = world.own
    data, metadata = make_clip(own, size=2 * 1024 * 1024)
    body, changes = _tampered(kind, data)
    metadata = metadata.model_copy(update=changes)
    before = _objects(servers, own.id)

    async def chunked() -> Any:  # no Content-Length: the mismatch shows only at the end
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    response = await world.ingest.post(
        "/v1/recordings", content=chunked(), headers=upload_headers(own, metadata)
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if field:
        assert response.json()["errors"][0]["field"] == field
    assert await _count(connection, own.id) == (0, 0)
    assert _objects(servers, own.id) == before  # the multipart upload was aborted


async def test_content_length_is_checked_before_streaming(world: World) -> None:
    own = world.own
    data, metadata = make_clip(own)
    too_long = await world.ingest.post(
        "/v1/recordings", content=data + b"x", headers=upload_headers(own, metadata)
    )
    assert too_long.status_code == 413


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"camera_serial": "NO-SUCH-CAMERA"}, "metadata.camera_serial"),
        ({"agent_matricule": "NOBODY"}, "metadata.agent_matricule"),
        ({"ended_at": datetime.now(UTC) + timedelta(hours=2),
          "started_at": datetime.now(UTC) + timedelta(hours=1)}, "metadata.ended_at"),
    ],
)  # fmt: skip
async def test_metadata_refused_by_the_directory(
    world: World, connection: AsyncConnection, changes: dict[str, Any], field: str
) -> None:
    own = world.own
    data, metadata = make_clip(own, **changes)
    response = await world.ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(own, metadata)
    )
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == field
    assert await _count(connection, own.id) == (0, 0)


async def test_wearer_conflicts_and_gaps(world: World, connection: AsyncConnection) -> None:
    own = world.own
    # The camera was worn by the wearer: naming another agent is a conflict.
    data, metadata = make_clip(own, agent_matricule=f"HAB-{own.id.hex[:8]}")
    conflict = await world.ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(own, metadata)
    )
    assert conflict.status_code == 422
    assert "assigned to" in conflict.json()["detail"]
    # Before any assignment, the wearer must be named...
    early = datetime(2025, 6, 1, 10, tzinfo=UTC)
    data, metadata = make_clip(own, started_at=early, ended_at=early + timedelta(minutes=2))
    unknown = await world.ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(own, metadata)
    )
    assert unknown.json()["errors"][0]["field"] == "metadata.agent_matricule"
    # ...and then it is accepted.
    named = metadata.model_copy(update={"agent_matricule": f"HAB-{own.id.hex[:8]}"})
    accepted = await world.ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(own, named)
    )
    assert accepted.status_code == 201, accepted.text


async def test_out_of_service_camera_is_refused(world: World) -> None:
    own = world.own
    retired = await world.vault.patch(
        f"{own.path}/cameras/{own.camera_id}",
        headers=own.headers("responsable"),
        json={"status": "out_of_service"},
    )
    assert retired.status_code == 200
    data, metadata = make_clip(own)
    response = await world.ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(own, metadata)
    )
    assert response.status_code == 422
    assert "out_of_service" in response.json()["detail"]


@pytest.mark.parametrize(
    ("header", "field"),
    [
        (None, "header"),
        ("not base64 json!", "header"),
        ("eyJjYW1lcmFfc2VyaWFsIjogIiJ9", "metadata.camera_serial"),
    ],
)
async def test_malformed_metadata(world: World, header: str | None, field: str) -> None:
    own = world.own
    headers = {"Authorization": f"Bearer {own.tokens['station']}"}
    if header is not None:
        headers[METADATA_HEADER] = header
    response = await world.ingest.post("/v1/recordings", content=b"x", headers=headers)
    assert response.status_code == 422, response.text
    assert field in [e["field"] for e in response.json()["errors"]]


async def test_another_organisations_station_cannot_upload_our_camera(world: World) -> None:
    data, metadata = make_clip(world.own)  # our camera's serial, their station's token
    response = await world.ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(world.other, metadata)
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "metadata.camera_serial"


async def test_forged_or_expired_station_tokens_upload_nothing(
    world: World, connection: AsyncConnection
) -> None:
    import jwt

    own = world.own
    data, metadata = make_clip(own)
    claims = jwt.decode(own.tokens["station"], options={"verify_signature": False})
    secret = "temoin-dev-station-token-secret-change-me"
    expired = jwt.encode({**claims, "exp": int(datetime.now(UTC).timestamp()) - 60}, secret)
    forged = jwt.encode(claims, "another-secret-that-is-long-enough-for-hs256")
    for token in (expired, forged):
        headers = {**upload_headers(own, metadata), "Authorization": f"Bearer {token}"}
        response = await world.ingest.post("/v1/recordings", content=data, headers=headers)
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"
    assert await _count(connection, own.id) == (0, 0)


async def test_only_a_clips_content_type_is_taken(
    world: World, connection: AsyncConnection
) -> None:
    """The vault serves a clip back with the type its dock declared, from its own origin: a
    page's type (text/html) would let a station plant a page there."""
    own = world.own
    data, metadata = make_clip(own)
    for refused in ("text/html", "application/json", "image/svg+xml", "video", "video/mp4; x"):
        headers = {**upload_headers(own, metadata), "Content-Type": refused}
        response = await world.ingest.post("/v1/recordings", content=data, headers=headers)
        assert response.status_code == 415, (refused, response.text)
        assert response.json()["errors"][0]["field"] == "header.content-type"
    assert await _count(connection, own.id) == (0, 0)
    declared = 'Video/MP4; codecs="avc1.64001F"'
    headers = {**upload_headers(own, metadata), "Content-Type": declared}
    response = await world.ingest.post("/v1/recordings", content=data, headers=headers)
    assert response.status_code == 201, response.text
    stored = await connection.scalar(
        select(Recording.content_type).where(Recording.organisation_id == own.id)
    )
    assert stored == 'video/mp4; codecs="avc1.64001F"'


async def test_a_clip_larger_than_the_maximum_is_refused(world: World) -> None:
    own = world.own
    data, metadata = make_clip(own)
    headers = {**upload_headers(own, metadata), "Content-Length": str(MAX_CLIP_SIZE + 1)}
    response = await world.ingest.post("/v1/recordings", content=data, headers=headers)
    assert response.status_code == 413, response.text
    too_big = metadata.model_dump(mode="json") | {"size": MAX_CLIP_SIZE + 1}
    encoded = base64.urlsafe_b64encode(json.dumps(too_big).encode()).decode()
    headers = {**upload_headers(own, metadata), METADATA_HEADER: encoded}
    response = await world.ingest.post("/v1/recordings", content=data, headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["errors"][0]["field"] == "metadata.size"
