"""Faults against real processes and committed data (issue 14): a vault killed mid-upload or
between the store's completion and the database's commit, a creation that fails after the
store started its multipart upload, several erasers at once, a store cut off during a scrub
or a read, and the database stopped under running services.

Crashes are placed precisely without any hook in the code: a trigger on a table makes the
vault's INSERT sleep inside PostgreSQL, and the test kills the vault while it sleeps."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.vault.recordings.erasure import ErasureService
from services.vault.recordings.fixity import FixityService
from services.vault.recordings.models import Recording, UploadSession
from services.vault.recordings.service import RECORDINGS_PREFIX
from services.vault.settings import VaultSettings
from shared.audit import entries, writer_info
from shared.db import create_sessionmaker, session_scope
from shared.receipts import receipt_is_valid
from shared.storage import ObjectStore
from temoin import migrate
from temoin.embedded import EmbeddedPostgres
from tests.fixtures.apps import VAULT_WRITER, ClientFactory
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, build_org
from tests.fixtures.live import Live, run_temoin, vault_and_ingest
from tests.fixtures.proxy import Proxy
from tests.fixtures.servers import Servers
from tests.test_tus import creation_headers, patch_headers, tus_headers

MiB = 1 << 20
LiveOrg = tuple[OrgKit, httpx.AsyncClient]


async def _eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"not within {within:.0f} s: {what}"
        await asyncio.sleep(0.1)


def _prefix(kit: OrgKit) -> str:
    return f"{RECORDINGS_PREFIX}{kit.id}/"


async def _multipart_uploads(store: ObjectStore, kit: OrgKit) -> list[tuple[str, str]]:
    listed = await store.list_multipart_uploads(_prefix(kit))
    return [(key, upload_id) for key, upload_id, _ in listed]


async def _recordings(engine: AsyncEngine, kit: OrgKit) -> list[Recording]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(Recording.__table__).where(Recording.organisation_id == kit.id)
        )
        return list(rows)  # type: ignore[arg-type]


async def test_a_vault_killed_mid_post_leaves_no_multipart_upload(
    live: Live, live_org: LiveOrg, engine: AsyncEngine, servers: Servers
) -> None:
    kit, ingest = live_org
    store = ObjectStore(servers.storage)
    data, metadata = make_clip(kit, size=24 * MiB + 3)
    release = asyncio.Event()

    async def dock_body() -> AsyncIterator[bytes]:
        yield data[: 12 * MiB]
        await release.wait()  # the dock's link stalls with the upload half sent
        yield data[12 * MiB :]

    post = asyncio.create_task(
        ingest.post("/v1/recordings", content=dock_body(), headers=upload_headers(kit, metadata))
    )

    async def parts_stored() -> bool:
        for key, upload_id in await _multipart_uploads(store, kit):
            parts = store.client._list_parts(store.bucket, key, upload_id).parts
            return len(parts) >= 2
        return False

    await _eventually(parts_stored, "the vault stored parts of the clip")
    live.vault.stop(signal.SIGKILL)
    release.set()
    answer = await post
    assert answer.status_code == 503, answer.text  # keep the clip, retry later
    assert answer.headers["Retry-After"]
    live.vault.start()

    # Nothing can resume a single POST: its session expires within seconds here (15 min by
    # default) and the upload pass aborts its multipart upload, parts and all.
    async def nothing_left() -> bool:
        return not await _multipart_uploads(store, kit)

    await _eventually(nothing_left, "the multipart upload was aborted")
    retried = await ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
    )
    assert retried.status_code == 201, retried.text
    assert len(await _recordings(engine, kit)) == 1


STALL = """
CREATE OR REPLACE FUNCTION public.temoin_test_stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(120); RETURN NEW; END $$
"""


async def _crash_between_completion_and_commit(
    live: Live, engine: AsyncEngine, kit: OrgKit, request: Awaitable[httpx.Response]
) -> httpx.Response:
    """Run ``request`` (the last bytes of a clip) with the vault's INSERT of the recording
    made to sleep, kill the vault while it sleeps (the store has assembled the object, the
    database has not registered it), and give back the dock's answer."""
    trigger = f"temoin_test_stall_{kit.id.hex}"
    async with engine.begin() as connection:
        await connection.execute(text(STALL))
        await connection.execute(
            text(
                f"CREATE TRIGGER {trigger} BEFORE INSERT ON vault.recordings FOR EACH ROW "
                f"WHEN (NEW.organisation_id = '{kit.id}') "
                "EXECUTE FUNCTION public.temoin_test_stall()"
            )
        )
    task = asyncio.ensure_future(request)
    try:

        async def stalled() -> bool:
            async with engine.connect() as connection:
                count = await connection.scalar(
                    text("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
                )
            return bool(count)

        await _eventually(stalled, "the vault is registering the recording")
        live.vault.stop(signal.SIGKILL)
        async with engine.begin() as connection:
            # The dead process's backend would sleep on, holding its locks: end it as the
            # database does once it notices its client is gone.
            await connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE wait_event = 'PgSleep'"
                )
            )
    finally:
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP TRIGGER IF EXISTS {trigger} ON vault.recordings"))
    return await task


async def _session_status(engine: AsyncEngine, kit: OrgKit) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(UploadSession.status).where(UploadSession.organisation_id == kit.id)
        )
        return [row.status for row in rows]


async def test_a_crash_between_completion_and_commit_is_rolled_forward(
    live: Live, live_org: LiveOrg, engine: AsyncEngine, servers: Servers
) -> None:
    """tus: the upload's next HEAD ends in the receipt, with one recording and one object;
    no 410, no second copy for the dock to send."""
    kit, ingest = live_org
    store = ObjectStore(servers.storage)
    data, metadata = make_clip(kit, size=7 * MiB + 11)
    created = await ingest.post("/v1/uploads", headers=creation_headers(kit, metadata))
    assert created.status_code == 201, created.text
    location = created.headers["Location"]
    last_patch = ingest.patch(location, content=data, headers=patch_headers(kit, 0))
    answer = await _crash_between_completion_and_commit(live, engine, kit, last_patch)
    assert answer.status_code == 503, answer.text
    # Between the two: the session is `completing`, its object assembled, nothing registered.
    assert await _session_status(engine, kit) == ["completing"]
    assert not await _recordings(engine, kit)
    assert len(await store.list_versions(_prefix(kit))) == 1

    live.vault.start()
    head = await ingest.head(location, headers=tus_headers(kit))
    assert head.status_code == 200, head.headers
    assert head.headers["Upload-Offset"] == str(len(data))
    receipt = json.loads(base64.urlsafe_b64decode(head.headers["Temoin-Receipt"]))
    key = (await ingest.get("/v1/receipts/public-key")).json()["public_key"]
    assert receipt_is_valid(receipt, key) and receipt["sha256"] == metadata.sha256
    recordings = await _recordings(engine, kit)
    assert [str(r.id) for r in recordings] == [receipt["recording_id"]]
    assert len(await store.list_versions(_prefix(kit))) == 1  # the same object, registered


async def test_a_single_post_sent_again_after_such_a_crash_registers_the_stored_object(
    live: Live, live_org: LiveOrg, engine: AsyncEngine, servers: Servers
) -> None:
    kit, ingest = live_org
    store = ObjectStore(servers.storage)
    data, metadata = make_clip(kit, size=6 * MiB + 1)
    post = ingest.post("/v1/recordings", content=data, headers=upload_headers(kit, metadata))
    answer = await _crash_between_completion_and_commit(live, engine, kit, post)
    assert answer.status_code == 503, answer.text
    assert await _session_status(engine, kit) == ["completing"]

    live.vault.start()
    retried = await ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
    )
    # 201, or 200 if the vault's background pass registered it first: either way the
    # receipt of the object stored before the crash.
    assert retried.status_code in (200, 201), retried.text
    recordings = await _recordings(engine, kit)
    assert [str(r.id) for r in recordings] == [retried.json()["recording_id"]]
    assert len(await store.list_versions(_prefix(kit))) == 1
    assert not await _multipart_uploads(store, kit)


async def test_a_creation_that_fails_after_the_store_started_discards_it(
    live_org: LiveOrg, engine: AsyncEngine, servers: Servers
) -> None:
    kit, ingest = live_org
    store = ObjectStore(servers.storage)
    trigger = f"temoin_test_refuse_{kit.id.hex}"
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "CREATE OR REPLACE FUNCTION public.temoin_test_refuse() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'database going away' "
                "USING ERRCODE = 'admin_shutdown'; END $$"
            )
        )
        await connection.execute(
            text(
                f"CREATE TRIGGER {trigger} BEFORE INSERT ON vault.upload_sessions FOR EACH ROW "
                f"WHEN (NEW.organisation_id = '{kit.id}') "
                "EXECUTE FUNCTION public.temoin_test_refuse()"
            )
        )
    try:
        _, metadata = make_clip(kit)
        created = await ingest.post("/v1/uploads", headers=creation_headers(kit, metadata))
        posted = await ingest.post(
            "/v1/recordings", content=b"x" * metadata.size, headers=upload_headers(kit, metadata)
        )
    finally:
        async with engine.begin() as connection:
            await connection.execute(text(f"DROP TRIGGER {trigger} ON vault.upload_sessions"))
    for answer in (created, posted):
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"]
    assert not await _multipart_uploads(store, kit)


async def test_several_erasers_erase_each_recording_once(
    live_org: LiveOrg, engine: AsyncEngine, servers: Servers
) -> None:
    kit, ingest = live_org
    ended = datetime.now(UTC) - timedelta(days=40)
    for _ in range(6):
        data, metadata = make_clip(
            kit, size=3000, started_at=ended - timedelta(minutes=2), ended_at=ended
        )
        response = await ingest.post(
            "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
        )
        assert response.status_code == 201, response.text
    erasers = [
        subprocess.Popen(
            [sys.executable, "-m", "temoin.cli", "erase"],
            env={**os.environ, **servers.env()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    store = ObjectStore(servers.storage)
    sessionmaker = create_sessionmaker(engine, info=writer_info(VAULT_WRITER))

    async def erase_here() -> int:
        async with session_scope(sessionmaker) as session:
            service = ErasureService(session, store, VaultSettings().log_keys())
            return len((await service.erase_due()).erased)

    await asyncio.gather(erase_here(), erase_here())
    for eraser in erasers:
        _, errors = eraser.communicate(timeout=60)
        assert eraser.returncode == 0, errors
    async with engine.connect() as connection:
        erased = await connection.execute(
            select(entries.c.recording_ids).where(
                entries.c.organisation_id == kit.id,
                entries.c.action == "effacement",
                entries.c.outcome == "success",
            )
        )
        logged = sorted(row.recording_ids[0] for row in erased)
    recordings = await _recordings(engine, kit)
    assert logged == sorted(r.id for r in recordings)  # one entry per recording, no more
    assert {r.status for r in recordings} == {"erased"}


async def _three_clips(kit: OrgKit, ingest: httpx.AsyncClient) -> list[str]:
    ids = []
    for _ in range(3):
        data, metadata = make_clip(kit, size=3 * MiB + 1)
        response = await ingest.post(
            "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
        )
        assert response.status_code == 201, response.text
        ids.append(response.json()["recording_id"])
    return ids


async def _fixity_entries(engine: AsyncEngine, kit: OrgKit) -> list[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(entries.c.action).where(
                entries.c.organisation_id == kit.id, entries.c.action.like("fixity%")
            )
        )
        return [row.action for row in rows]


async def test_a_store_outage_during_a_scrub_flags_nothing(
    live_org: LiveOrg, engine: AsyncEngine, servers: Servers, s3_proxy: Proxy
) -> None:
    kit, ingest = live_org
    ids = await _three_clips(kit, ingest)
    # One retry, not five: the retry path runs, without 6 s of backoff for each read refused.
    through_proxy = {**servers.env(), "S3_ENDPOINT": s3_proxy.url, "S3_RETRIES": "1"}
    only = [arg for recording_id in ids for arg in ("--recording", recording_id)]

    for cut in (lambda: s3_proxy.cut_after(300_000), s3_proxy.refuse):
        cut()  # reads cut off mid-object, then connections refused
        started = time.monotonic()
        scrub = run_temoin("scrub", *only, env=through_proxy)
        assert scrub.returncode == 2, scrub.stdout + scrub.stderr
        assert "NOT CHECKED" in scrub.stderr and "Traceback" not in scrub.stderr
        assert time.monotonic() - started < 60
        recordings = await _recordings(engine, kit)
        assert {(r.status, r.checked_at) for r in recordings} == {("sealed", None)}
        assert await _fixity_entries(engine, kit) == []
        s3_proxy.restore()

    # A recording flagged damaged (by a scrub that met a bad copy, since repaired) is checked
    # again and restored, with an entry that says so.
    async with engine.begin() as connection:
        await connection.execute(
            update(Recording)
            .where(Recording.id == uuid.UUID(ids[0]))
            .values(status="damaged", checked_at=datetime.now(UTC) - timedelta(days=2))
        )
    scrub = run_temoin("scrub", "--recording", ids[0], env=through_proxy)
    assert scrub.returncode == 0, scrub.stdout + scrub.stderr
    assert f"RESTORED {ids[0]}" in scrub.stdout
    assert {r.status for r in await _recordings(engine, kit)} == {"sealed"}
    assert await _fixity_entries(engine, kit) == ["fixity_restored"]


async def test_two_scrubs_share_a_pass(
    live_org: LiveOrg, engine: AsyncEngine, servers: Servers
) -> None:
    """Leases: what one scrub has claimed, another does not read in the same pass."""
    kit, ingest = live_org
    ids = [uuid.UUID(i) for i in await _three_clips(kit, ingest)]
    sessionmaker = create_sessionmaker(engine, info=writer_info(VAULT_WRITER))
    async with sessionmaker() as first, sessionmaker() as second:
        mine = await FixityService(first).claim(checked_before=None, recording_ids=ids, limit=2)
        theirs = await FixityService(second).claim(checked_before=None, recording_ids=ids)
        assert len(mine) == 2 and len(theirs) == 1
        assert not {r.id for r in mine} & {r.id for r in theirs}
        await first.rollback()
        await second.rollback()


async def test_the_media_route_answers_503_while_the_store_is_away(
    live_org: LiveOrg, client_for: ClientFactory, s3_proxy: Proxy
) -> None:
    kit, ingest = live_org
    recording_id = (await _three_clips(kit, ingest))[0]
    # One retry, not five (about 6 s of backoff for each request while the store is away).
    async with client_for("vault", s3_endpoint=s3_proxy.url, s3_retries=1) as vault:
        consulted = await vault.post(
            f"{kit.path}/recordings/{recording_id}/consultations",
            headers=kit.headers("habilite"),
            json={"motif": "visionnage"},
        )
        url = consulted.json()["url"]
        s3_proxy.refuse()
        for wanted in ("bytes=0-1023", None):  # a seek, and the whole clip streamed
            away = await vault.get(url, headers={"Range": wanted} if wanted else {})
            assert away.status_code == 503, away.text
            assert away.headers["content-type"] == "application/problem+json"
            assert away.headers["Retry-After"]
        s3_proxy.restore()
        back = await vault.get(url, headers={"Range": "bytes=0-1023"})
        assert back.status_code == 206 and len(back.content) == 1024


async def test_the_database_stopped_is_a_503_then_recovery(
    servers: Servers, tmp_path: Path
) -> None:
    """Services on a PostgreSQL of their own, stopped under them: every request answers 503
    problem+json with Retry-After, one log line per process for the outage, no traceback; once
    it is back they serve again without a restart."""
    postgres = EmbeddedPostgres(tmp_path / "postgres")
    database_url = postgres.start()
    await asyncio.to_thread(migrate.upgrade, database_url)
    vault, ingest = vault_and_ingest({**servers.env(), "DATABASE_URL": database_url}, tmp_path)
    try:
        vault.start()
        ingest.start()
        async with (
            httpx.AsyncClient(base_url=vault.url, timeout=60) as vault_client,
            httpx.AsyncClient(base_url=ingest.url, timeout=60) as ingest_client,
        ):
            kit = await build_org(vault_client, ingest_client, servers)
            postgres.stop()
            data, metadata = make_clip(kit)
            for _ in range(3):
                for answer in (
                    await vault_client.get(kit.path, headers=kit.headers("maire")),
                    await vault_client.get("/v1/me", headers=kit.headers("dpo")),
                    await ingest_client.post(
                        "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
                    ),
                ):
                    assert answer.status_code == 503, answer.text
                    assert answer.headers["content-type"] == "application/problem+json"
                    assert answer.headers["Retry-After"]
            assert (await vault_client.get("/readyz")).status_code == 503

            assert postgres.start() == database_url

            async def serving() -> bool:
                answer = await vault_client.get(kit.path, headers=kit.headers("maire"))
                return answer.status_code == 200

            await _eventually(serving, "the vault serves again")
            uploaded = await ingest_client.post(
                "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
            )
            assert uploaded.status_code == 201, uploaded.text
    finally:
        ingest.stop()
        vault.stop()
        postgres.stop()
    for service in (vault, ingest):
        log = service.log.read_text()
        outage_lines = [line for line in log.splitlines() if '"temoin.outage"' in line]
        assert len(outage_lines) == 1, f"{service.name}: {outage_lines}"
        assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
