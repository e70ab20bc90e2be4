"""The life of a sealed recording against real processes and committed data: erasure at the
end of the retention (held recordings kept, keys destroyed, tombstones, objects deleted once
their lock runs out, idempotent), and the fixity scrub finding a damaged object."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from minio.error import S3Error
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.vault.recordings.models import Recording
from shared import sealing
from shared.audit import entries
from shared.storage import ObjectStore
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, build_org, fresh_insee
from tests.fixtures.live import MINIMUM_LOCK_S, Live, run_temoin
from tests.fixtures.servers import Servers

MiB = 1 << 20


@pytest.fixture
async def org(live: Live, servers: Servers) -> AsyncIterator[tuple[OrgKit, httpx.AsyncClient]]:
    async with (
        httpx.AsyncClient(base_url=live.vault.url, timeout=60) as vault,
        httpx.AsyncClient(base_url=live.ingest.url, timeout=60) as ingest,
    ):
        kit = await build_org(vault, ingest, servers, insee=fresh_insee())
        kit.tokens["_ingest_url"] = live.ingest.url
        yield kit, vault


async def _upload(kit: OrgKit, ended_days_ago: int, size: int = MiB + 5) -> tuple[str, bytes]:
    ended = datetime.now(UTC) - timedelta(days=ended_days_ago)
    data, metadata = make_clip(
        kit, size=size, started_at=ended - timedelta(minutes=2), ended_at=ended
    )
    async with httpx.AsyncClient(base_url=kit.tokens["_ingest_url"], timeout=60) as ingest:
        response = await ingest.post(
            "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
        )
    assert response.status_code == 201, response.text
    return str(response.json()["recording_id"]), data


async def _row(engine: AsyncEngine, recording_id: str) -> object:
    async with engine.connect() as connection:
        return (
            await connection.execute(
                select(Recording.__table__).where(Recording.id == uuid.UUID(recording_id))
            )
        ).one()


async def _effacements(engine: AsyncEngine, kit: OrgKit) -> list[tuple[str, list[uuid.UUID]]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(entries.c.outcome, entries.c.recording_ids).where(
                entries.c.organisation_id == kit.id, entries.c.action == "effacement"
            )
        )
        return [(row.outcome, list(row.recording_ids)) for row in rows]


async def test_erasure_at_the_end_of_retention(
    org: tuple[OrgKit, httpx.AsyncClient], engine: AsyncEngine, servers: Servers
) -> None:
    kit, vault = org
    expired, _ = await _upload(kit, ended_days_ago=40)
    held, _ = await _upload(kit, ended_days_ago=45)
    fresh, _ = await _upload(kit, ended_days_ago=1)
    procedure = await vault.post(
        f"{kit.path}/procedures",
        headers=kit.headers("responsable"),
        json={"type": "disciplinaire", "reference": "DISC-7"},
    )
    attached = await vault.post(
        f"{kit.path}/procedures/{procedure.json()['id']}/recordings",
        headers=kit.headers("responsable"),
        json={"recording_id": held, "qualification": "manquement"},
    )
    assert attached.status_code == 201

    env = servers.env()
    preview = run_temoin("erase", "--dry-run", env=env)
    assert preview.returncode == 0, preview.stderr
    assert f"would erase {expired}" in preview.stdout
    assert f"held by a procedure: {held}" in preview.stdout
    assert fresh not in preview.stdout
    assert (await _row(engine, expired)).status == "sealed"  # type: ignore[attr-defined]

    erased = run_temoin("erase", env=env)
    assert erased.returncode == 0, erased.stderr
    row = await _row(engine, expired)
    assert (row.status, row.wrapped_key) == ("erased", None)  # type: ignore[attr-defined]
    assert (await _row(engine, held)).status == "sealed"  # type: ignore[attr-defined]
    assert (await _row(engine, fresh)).status == "sealed"  # type: ignore[attr-defined]
    assert sorted(await _effacements(engine, kit)) == sorted(
        [("success", [uuid.UUID(expired)]), ("refused", [uuid.UUID(held)])]
    )
    consult = await vault.post(
        f"{kit.path}/recordings/{expired}/consultations",
        headers=kit.headers("habilite"),
        json={"motif": "trop tard"},
    )
    assert consult.status_code == 410

    # The object goes once its lock has run out (a few seconds here, a day in production);
    # until then the store refuses, even with its own credentials, as it does for a held
    # object and for a recording within its retention.
    store = ObjectStore(servers.storage)
    fresh_row = await _row(engine, fresh)
    assert not await store.delete_version(fresh_row.object_key, fresh_row.object_version)  # type: ignore[attr-defined]
    await asyncio.sleep(MINIMUM_LOCK_S + 1)
    erased = run_temoin("erase", env=env)
    assert erased.returncode == 0, erased.stderr
    row = await _row(engine, expired)
    assert row.object_deleted_at is not None, erased.stdout  # type: ignore[attr-defined]
    with pytest.raises(S3Error):
        store.client.stat_object(store.bucket, row.object_key, version_id=row.object_version)  # type: ignore[attr-defined]
    held_row = await _row(engine, held)
    assert not await store.delete_version(held_row.object_key, held_row.object_version)  # type: ignore[attr-defined]
    # Running again changes nothing.
    assert run_temoin("erase", env=env).returncode == 0
    assert len(await _effacements(engine, kit)) == 2

    # Released by its procedure, the held recording follows its retention again.
    closed = await vault.post(
        f"{kit.path}/procedures/{procedure.json()['id']}/close",
        headers=kit.headers("responsable"),
    )
    assert closed.status_code == 200
    assert run_temoin("erase", env=env).returncode == 0
    assert (await _row(engine, held)).status == "erased"  # type: ignore[attr-defined]


async def test_erasure_deletes_orphaned_objects_once_unlocked(
    org: tuple[OrgKit, httpx.AsyncClient], engine: AsyncEngine, servers: Servers
) -> None:
    kit, _ = org
    registered, _ = await _upload(kit, ended_days_ago=1)
    registered_key = (await _row(engine, registered)).object_key  # type: ignore[attr-defined]
    # What a crash between the store's completion and the database's commit leaves: a
    # complete, locked sealed object that no recording refers to.
    store = ObjectStore(servers.storage)
    orphan = f"recordings/{kit.id}/{uuid.uuid4()}.sealed"
    locked_until = datetime.now(UTC) + timedelta(seconds=MINIMUM_LOCK_S)
    multipart = await store.start_multipart(orphan, retain_until=locked_until)
    etag = await store.upload_part(orphan, multipart, 1, b"sealed bytes of a lost request")
    version = await store.complete_multipart(orphan, multipart, [etag])
    assert not await store.delete_version(orphan, version)  # locked, like any sealed object

    env = servers.env()
    preview = run_temoin("erase", "--dry-run", env=env)
    assert f"orphan (no recording refers to it): {orphan}" in preview.stdout
    assert registered_key not in preview.stdout
    await asyncio.sleep(max((locked_until - datetime.now(UTC)).total_seconds(), 0) + 1)
    erased = run_temoin("erase", env=env)
    assert erased.returncode == 0, erased.stderr
    assert f"deleted orphan {orphan}" in erased.stdout
    with pytest.raises(S3Error):
        store.client.stat_object(store.bucket, orphan, version_id=version)
    assert await store.list_versions(orphan) == []
    store.client.stat_object(store.bucket, registered_key)  # a registered one stays


async def test_scrub_flags_a_damaged_object_which_is_never_served(
    org: tuple[OrgKit, httpx.AsyncClient], engine: AsyncEngine, servers: Servers
) -> None:
    kit, vault = org
    recording_id, data = await _upload(kit, ended_days_ago=0, size=3 * MiB + 9)
    consultation = await vault.post(
        f"{kit.path}/recordings/{recording_id}/consultations",
        headers=kit.headers("habilite"),
        json={"motif": "avant dommage"},
    )
    url = consultation.json()["url"]
    assert (await vault.get(url, headers={"Range": "bytes=0-9"})).content == data[:10]

    # The store keeps every version under object lock; a damaged copy is written as a new
    # version and the registry pointed at it, as a failing disk or a tamperer would leave it.
    row = await _row(engine, recording_id)
    store = ObjectStore(servers.storage)
    sealed = bytearray(store.client.get_object(store.bucket, row.object_key).read())  # type: ignore[attr-defined]
    chunk = row.chunk_size  # type: ignore[attr-defined]
    sealed[sealing.sealed_offset(2, chunk) + 100] ^= 1  # inside the third chunk
    put = store.client.put_object(store.bucket, row.object_key, io.BytesIO(sealed), len(sealed))  # type: ignore[attr-defined]
    async with engine.begin() as connection:
        await connection.execute(
            update(Recording)
            .where(Recording.id == uuid.UUID(recording_id))
            .values(object_version=put.version_id)
        )

    # A read that meets the damaged chunk fails closed; before it, reads still work.
    assert (await vault.get(url, headers={"Range": "bytes=0-9"})).status_code == 206
    damaged_read = await vault.get(url, headers={"Range": f"bytes={2 * chunk}-{2 * chunk + 10}"})
    assert damaged_read.status_code == 409

    scrub = run_temoin("scrub", "--recording", recording_id, env=servers.env())
    assert scrub.returncode == 1, scrub.stdout + scrub.stderr
    assert f"DAMAGED {recording_id}" in scrub.stdout
    assert (await _row(engine, recording_id)).status == "damaged"  # type: ignore[attr-defined]
    listed = await vault.get(
        f"{kit.path}/recordings", headers=kit.headers("dpo"), params={"status": "damaged"}
    )
    assert [r["id"] for r in listed.json()["items"]] == [recording_id]
    assert (await vault.get(url, headers={"Range": "bytes=0-9"})).status_code == 409
    async with engine.connect() as connection:
        flagged = await connection.scalar(
            select(func.count())
            .select_from(entries)
            .where(entries.c.organisation_id == kit.id, entries.c.action == "fixity_failure")
        )
    assert flagged == 1
