"""Every background job run by several replicas at once (issue 19): three vault (or reporting)
"processes", each with its own engine, sessionmaker, store client and settings (so its own
memory of the last head signed), run one pass of a job at the same moment against one real
database and one real store, and the outcome is what one process would have done, once:
each recording erased once with one `effacement` entry, each object scrubbed once per pass,
each expired upload discarded once, each stray multipart upload aborted once, one chain of
tree heads, report figures equal to a single consumer's.

Each test has its own database (cloned from the migrated template) and its own bucket: the
orphan and stray sweeps of a fresh database would otherwise take the session's objects for
strangers. The data is made through the real apps, in process, and committed."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.config import service_resources
from services.ingest.app import create_app as create_ingest
from services.reporting.statistics.consumer import CHECKPOINT, consume_all
from services.vault.app import create_app as create_vault
from services.vault.audit.jobs import maintain_log
from services.vault.audit.service import AuditLog, purge_expired
from services.vault.audit.verify import VerifyKeys, verify_log
from services.vault.derivatives.jobs import JobRunner
from services.vault.derivatives.models import Derivative
from services.vault.recordings import fixity
from services.vault.recordings.erasure import ErasureService
from services.vault.recordings.jobs import erasure_pass, maintain_uploads
from services.vault.recordings.models import Recording, UploadSession
from services.vault.settings import VaultSettings
from shared import audit
from shared.audit import AuditAction, AuditEntry, entries
from shared.db import create_engine, ping, session_scope
from shared.signatures import public_key_of
from shared.storage import ObjectStore, StorageConfig, StorageUnavailable
from shared.web import ServiceState
from tests.fixtures.apps import serve_in_process, settings_for
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, build_org, fresh_insee
from tests.fixtures.servers import Servers
from tests.test_tus import creation_headers, patch_headers

REPLICAS = 3
KiB = 1 << 10
LOCK_S = 1  # the shortest object lock: objects of erased clips may go a second after upload
T = TypeVar("T")


@dataclass
class Scene:
    """A fresh database and bucket, and the settings of a vault replica on them."""

    servers: Servers
    database_url: str
    bucket: str
    admin: AsyncEngine  # the database's superuser: the test's own reads and resets

    def vault_settings(self, **overrides: Any) -> VaultSettings:
        settings = settings_for(
            "vault",
            self.servers,
            database_url=self.database_url,
            s3_bucket=self.bucket,
            minimum_lock_s=LOCK_S,
            # The in-process apps that make the data run their jobs once at startup, on
            # nothing, then not again: the replicas below are the only ones at work.
            erasure_interval_s=3600,
            upload_sweep_interval_s=3600,
            scrub_interval_s=3600,
            derivative_interval_s=3600,
            **overrides,
        )
        assert isinstance(settings, VaultSettings)
        return settings

    def store(self) -> ObjectStore:
        storage = self.servers.storage
        return ObjectStore(
            StorageConfig(storage.endpoint, storage.access_key, storage.secret_key, self.bucket)
        )


@pytest.fixture
async def scene(servers: Servers, fresh_engine: AsyncEngine) -> AsyncIterator[Scene]:
    url = fresh_engine.url.render_as_string(hide_password=False)
    scene = Scene(
        servers,
        url,
        f"temoin-replicas-{uuid.uuid4().hex[:12]}",
        create_engine(url, application_name="replica-tests"),
    )
    scene.store().ensure_bucket()
    try:
        yield scene
    finally:
        await scene.admin.dispose()


@asynccontextmanager
async def made_through_the_apps(
    scene: Scene,
) -> AsyncIterator[tuple[OrgKit, httpx.AsyncClient, httpx.AsyncClient]]:
    """An organisation made through in-process vault and ingest apps on the scene's database,
    and clients for that ingest and that vault (the apps stop, with their jobs, when the
    block ends)."""
    async with serve_in_process(create_vault(scene.vault_settings())) as vault:
        ingest_app = create_ingest(
            settings_for("ingest", scene.servers, database_url=scene.database_url),  # type: ignore[arg-type]
            vault_transport=vault._transport,  # noqa: SLF001
        )
        async with serve_in_process(ingest_app) as ingest:
            yield await build_org(vault, ingest, scene.servers, insee=fresh_insee()), ingest, vault


async def upload(ingest: httpx.AsyncClient, kit: OrgKit, ended_days_ago: float) -> uuid.UUID:
    ended = datetime.now(UTC) - timedelta(days=ended_days_ago)
    data, metadata = make_clip(
        kit, size=64 * KiB + 3, started_at=ended - timedelta(minutes=2), ended_at=ended
    )
    response = await ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
    )
    assert response.status_code == 201, response.text
    return uuid.UUID(response.json()["recording_id"])


@asynccontextmanager
async def replicas(
    scene: Scene, service: str = "vault", **overrides: Any
) -> AsyncIterator[list[tuple[ServiceState, Any]]]:
    """REPLICAS sets of what a service process holds: its settings, engine, sessionmaker and
    store client (opened exactly as a service's lifespan opens them)."""
    async with AsyncExitStack() as stack:
        opened = []
        for i in range(REPLICAS):
            if service == "vault":
                settings: Any = scene.vault_settings(**overrides)
            else:
                settings = settings_for(service, scene.servers, database_url=scene.database_url)
            state = await stack.enter_async_context(
                service_resources(settings, service, f"temoin-{service}-replica-{i}")
            )
            await ping(state["engine"])  # connected before the race, as a running process is
            opened.append((state, settings))
        yield opened


async def at_once(*passes: Callable[[], Awaitable[T]]) -> list[T]:
    """Start every pass at the same moment (each waits for the others to be ready)."""
    ready = asyncio.Barrier(len(passes))

    async def started(run: Callable[[], Awaitable[T]]) -> T:
        await ready.wait()
        return await run()

    return list(await asyncio.gather(*(started(run) for run in passes)))


async def log_entries(scene: Scene, action: AuditAction, kit: OrgKit) -> list[Any]:
    async with scene.admin.connect() as connection:
        rows = await connection.execute(
            select(entries.c.outcome, entries.c.recording_ids).where(
                entries.c.action == action.value, entries.c.organisation_id == kit.id
            )
        )
        return list(rows)


async def verified(scene: Scene, settings: VaultSettings) -> list[str]:
    """`temoin audit verify`'s findings on the scene's log (none: it verifies)."""
    keys = VerifyKeys(
        public_key=public_key_of(settings.audit_key()),
        writers=settings.writer_keys(),
        origin=settings.audit_origin,
    )
    async with scene.admin.connect() as connection:
        report = await verify_log(connection, keys)
    return [f"{f.kind} {f.where}: {f.detail}" for f in report.findings]


async def test_erasure_by_three_replicas_erases_each_recording_once(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two a pass, as 500 a pass when thousands are due: every replica claims some.
    monkeypatch.setattr(ErasureService, "batch", 2)
    async with made_through_the_apps(scene) as (kit, ingest, _):
        due = [await upload(ingest, kit, ended_days_ago=40) for _ in range(6)]
        kept = await upload(ingest, kit, ended_days_ago=1)
    await asyncio.sleep(LOCK_S + 0.5)  # the objects' lock ran out: they may be deleted too

    async with replicas(scene) as opened:
        passes = []
        for _ in range(4):  # later rounds delete what earlier ones erased too late for them
            passes += await at_once(
                *(
                    lambda state=state, settings=settings: erasure_pass(
                        state["sessionmaker"], state["store"], settings
                    )
                    for state, settings in opened
                )
            )

    erased = Counter(r for p in passes for r in p.erased.erased)
    assert erased == Counter(due), "each due recording erased by exactly one replica"
    deleted = Counter(r for p in passes for r in p.deleted.objects_deleted)
    assert deleted == Counter(due), "each object deleted by exactly one replica"
    refused = [r for p in passes for r in p.erased.refused + p.deleted.refused]
    assert refused == [], "no replica doubted the log"
    effacements = Counter(
        (outcome, r)
        for outcome, ids in await log_entries(scene, AuditAction.effacement, kit)
        for r in ids
    )
    assert effacements == Counter(("success", r) for r in due)
    assert await log_entries(scene, AuditAction.registry_divergence, kit) == []
    async with scene.admin.connect() as connection:
        statuses = dict(
            (
                await connection.execute(
                    select(Recording.id, Recording.status).where(
                        Recording.organisation_id == kit.id
                    )
                )
            ).all()
        )
    assert statuses == {**dict.fromkeys(due, "erased"), kept: "sealed"}
    assert await verified(scene, opened[0][1]) == []


class CountingStore(ObjectStore):
    """A replica's store client that counts the sealed objects it starts reading (and reads
    a little slowly, so that the replicas' batches interleave)."""

    def __init__(self, config: StorageConfig, reads: Counter[str]) -> None:
        super().__init__(config)
        self.reads = reads

    async def read_head(self, key: str, version: str | None, size: int) -> bytes:
        self.reads[key] += 1
        await asyncio.sleep(0.05)
        return await super().read_head(key, version, size)


async def test_scrub_by_three_replicas_reads_each_object_once(scene: Scene) -> None:
    async with made_through_the_apps(scene) as (kit, ingest, _):
        recordings = [await upload(ingest, kit, ended_days_ago=1) for _ in range(8)]
        fresh = await upload(ingest, kit, ended_days_ago=1)
    async with scene.admin.begin() as connection:
        # Received two hours ago, an interval (1 h) before the pass: due. ``fresh``, received
        # just now and sealed under the store's checks, is not due before an interval.
        await connection.execute(
            update(Recording)
            .where(Recording.organisation_id == kit.id, Recording.id != fresh)
            .values(received_at=Recording.received_at - timedelta(hours=2))
        )
        keys = set(
            (
                await connection.scalars(
                    select(Recording.object_key).where(
                        Recording.organisation_id == kit.id, Recording.id != fresh
                    )
                )
            ).all()
        )

    reads: list[Counter[str]] = [Counter() for _ in range(REPLICAS)]
    async with replicas(scene) as opened:
        reports = await at_once(
            *(
                lambda i=i, state=state, settings=settings: fixity.scrub(
                    state["sessionmaker"],
                    CountingStore(settings.storage(), reads[i]),
                    settings,
                    checked_before=fixity.due_before(settings),
                    batch_size=2,
                )
                for i, (state, settings) in enumerate(opened)
            )
        )
        # A pass over: the next one, by any replica, finds nothing due.
        state, settings = opened[0]
        again = await fixity.scrub(
            state["sessionmaker"],
            state["store"],
            settings,
            checked_before=fixity.due_before(settings),
        )

    everything: Counter[str] = sum(reads, Counter())
    assert everything == Counter(keys), "each object read once, by one replica"
    assert sum(r.checked for r in reports) == len(recordings)
    assert [r.damaged for r in reports] == [[]] * REPLICAS
    assert sum(1 for r in reports if r.checked) >= 2, "the pass was shared"
    assert again.checked == 0
    async with scene.admin.connect() as connection:
        unchecked = await connection.scalar(
            select(func.count()).where(
                Recording.organisation_id == kit.id,
                Recording.id != fresh,
                (Recording.checked_at.is_(None)) | (Recording.scrub_claimed_until.is_not(None)),
            )
        )
        fresh_checked = await connection.scalar(
            select(Recording.checked_at).where(Recording.id == fresh)
        )
    assert unchecked == 0
    assert fresh_checked is None, "a recording received within the interval waits for it"


async def test_upload_passes_by_three_replicas_act_once(scene: Scene) -> None:
    async with made_through_the_apps(scene) as (kit, ingest, _):
        opened_uploads = []
        for _ in range(4):  # tus uploads left half-way by their docks
            data, metadata = make_clip(kit, size=64 * KiB)
            created = await ingest.post("/v1/uploads", headers=creation_headers(kit, metadata))
            assert created.status_code == 201, created.text
            location = created.headers["Location"]
            patched = await ingest.patch(
                location, content=data[: 10 * KiB], headers=patch_headers(kit, 0)
            )
            assert patched.status_code == 204, patched.text
            opened_uploads.append(uuid.UUID(location.rsplit("/", 1)[1]))
    store = scene.store()
    strays = [f"recordings/{kit.id}/{uuid.uuid4()}.sealed" for _ in range(3)]
    for key in strays:  # multipart uploads whose session's commit never happened
        await store.start_multipart(key, retain_until=datetime.now(UTC) + timedelta(minutes=1))
    async with scene.admin.begin() as connection:
        await connection.execute(
            update(UploadSession)
            .where(UploadSession.id.in_(opened_uploads))
            .values(expires_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    await asyncio.sleep(1.2)  # older than VAULT_STRAY_MULTIPART_AFTER_S

    async with replicas(scene, stray_multipart_after_s=1) as opened:
        reports = await at_once(
            *(
                lambda state=state, settings=settings: maintain_uploads(
                    state["sessionmaker"], state["store"], settings
                )
                for state, settings in opened
            )
        )

    assert sum(r.expired for r in reports) == len(opened_uploads), "each expired once"
    aborted = Counter(key for r in reports for key in r.aborted)
    assert set(strays) <= set(aborted) and max(aborted.values()) == 1, aborted
    async with scene.admin.connect() as connection:
        statuses = (
            await connection.scalars(
                select(UploadSession.status).where(UploadSession.id.in_(opened_uploads))
            )
        ).all()
    assert statuses == ["expired"] * len(opened_uploads)
    assert await store.list_multipart_uploads(f"recordings/{kit.id}/") == []


async def test_log_maintenance_by_three_replicas_makes_one_chain(
    scene: Scene, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="temoin.vault.audit")

    async def writer(settings: VaultSettings, sessionmaker: Any, w: int) -> None:
        for i in range(25):
            async with session_scope(sessionmaker) as session:
                await audit.append(
                    session,
                    AuditEntry(
                        action=AuditAction.consultation,
                        service="vault",
                        actor_subject=f"agent-{w}",
                        actor_role="habilite",
                        organisation_id=uuid.UUID(int=w),
                        motif=f"contrôle {w}-{i}",
                        recording_ids=[uuid.UUID(int=i)],
                    ),
                )
            await asyncio.sleep(0.04)

    async with replicas(scene, audit_head_interval_s=0.2, audit_sequence_interval_s=0.05) as opened:
        jobs = [
            asyncio.create_task(
                maintain_log(
                    state["sessionmaker"],
                    settings.log_keys(),
                    sequence_every_s=0.05,
                    sign_every_s=0.2,
                )
            )
            for state, settings in opened
        ]
        await asyncio.gather(
            *(
                writer(settings, state["sessionmaker"], w)
                for w, (state, settings) in enumerate(opened)
            )
        )
        await asyncio.sleep(0.5)
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        state, settings = opened[0]
        async with session_scope(state["sessionmaker"]) as session:
            await AuditLog(session, settings.log_keys()).sequence_all()
        async with session_scope(state["sessionmaker"]) as session:
            await AuditLog(session, settings.log_keys()).sign_head()

    async with scene.admin.connect() as connection:
        entry_count = await connection.scalar(text("SELECT count(*) FROM audit.entries"))
        seqs = (await connection.scalars(text("SELECT seq FROM audit.leaves ORDER BY seq"))).all()
        distinct = await connection.scalar(
            text("SELECT count(DISTINCT entry_id) FROM audit.leaves")
        )
        heads = (await connection.scalars(text("SELECT tree_size FROM audit.tree_heads"))).all()
    # The jobs never met: no sequencing nor signing refused by a constraint (which the
    # database would answer to two sequencers at once), no failure.
    assert [r.getMessage() for r in caplog.records if r.name == "temoin.vault.audit"] == []
    assert seqs == list(range(entry_count)), "every entry sequenced, once, without a gap"
    assert distinct == entry_count
    assert len(heads) == len(set(heads)) and len(heads) >= 3, heads
    assert await verified(scene, opened[0][1]) == []


REPORTING_TABLES = (
    "daily_counts", "camera_days", "delay_buckets", "procedure_uses", "recording_uses",
    "habilitations", "recording_days",
)  # fmt: skip


async def _statistics(scene: Scene) -> dict[str, list[tuple[Any, ...]]]:
    async with scene.admin.connect() as connection:
        return {
            table: sorted(
                tuple(row)
                for row in await connection.execute(text(f"SELECT * FROM reporting.{table}"))
            )
            for table in REPORTING_TABLES
        }


async def test_reporting_by_three_replicas_counts_once(scene: Scene) -> None:
    async with made_through_the_apps(scene) as (kit, ingest, _):
        for days in (40, 40, 1, 1, 2):
            await upload(ingest, kit, ended_days_ago=days)
    await asyncio.sleep(LOCK_S + 0.5)
    async with replicas(scene) as vaults:
        state, settings = vaults[0]
        done = await erasure_pass(state["sessionmaker"], state["store"], settings)
        assert len(done.erased.erased) == 2
        async with session_scope(state["sessionmaker"]) as session:
            await AuditLog(session, settings.log_keys()).sequence_all()

    async with scene.admin.begin() as connection:  # as in a running deployment: it exists
        await connection.execute(
            text("INSERT INTO reporting.checkpoints (name, last_seq) VALUES (:name, -1)"),
            {"name": CHECKPOINT},
        )
    async with replicas(scene, "reporting") as opened:
        consumed = await at_once(
            *(lambda state=state: consume_all(state["sessionmaker"]) for state, _ in opened)
        )
        together = await _statistics(scene)
        async with scene.admin.begin() as connection:  # the same feed, one consumer
            for table in (*REPORTING_TABLES, "checkpoints"):
                await connection.execute(text(f"DELETE FROM reporting.{table}"))
        alone = await consume_all(opened[0][0]["sessionmaker"])

    assert sum(consumed) == alone, "each event applied by one replica"
    assert together == await _statistics(scene)
    counts = Counter[str]()
    for org, _, metric, count in together["daily_counts"]:
        if org == kit.id:
            counts[metric] += count
    assert (counts["recordings"], counts["erasures"]) == (5, 2)


async def test_erasure_waits_for_the_log_beside_another_replicas_transaction(
    scene: Scene,
) -> None:
    """Another replica's transaction that began before a change committed (the scrub's check
    of protections, which talks to the store with its rows locked) holds the change's entries
    out of the log for a while. The erasure job must wait for them, not take rows ahead of
    the log for rows that contradict it."""
    async with scene.admin.connect() as other:
        async with made_through_the_apps(scene) as (kit, ingest, vault):
            due = [await upload(ingest, kit, ended_days_ago=40) for _ in range(2)]
            held = await upload(ingest, kit, ended_days_ago=40)
            procedure = await vault.post(
                f"{kit.path}/procedures",
                headers=kit.headers("responsable"),
                json={"type": "disciplinaire", "reference": "DISC-19"},
            )
            procedure_path = f"{kit.path}/procedures/{procedure.json()['id']}"
            attached = await vault.post(
                f"{procedure_path}/recordings",
                headers=kit.headers("responsable"),
                json={"recording_id": str(held), "qualification": "manquement"},
            )
            assert attached.status_code == 201, attached.text
            await asyncio.sleep(1.5)  # the apps' own job sequences the attachment
            other_replica = await other.begin()
            await other.execute(text("SELECT pg_current_xact_id()"))  # it has written
            closed = await vault.post(f"{procedure_path}/close", headers=kit.headers("responsable"))
            assert closed.status_code == 200, closed.text
        await asyncio.sleep(LOCK_S + 0.5)
        async with replicas(scene) as opened:
            state, settings = opened[0]
            first = await erasure_pass(state["sessionmaker"], state["store"], settings)
            await other_replica.commit()
            second = await erasure_pass(state["sessionmaker"], state["store"], settings)

    # The held recording's release waits for the log; the others' objects wait for their
    # erasures to be in the log.
    assert sorted(first.erased.erased) == sorted(due)
    assert first.erased.refused == first.deleted.refused == []
    assert first.deleted.objects_deleted == []
    assert second.erased.erased == [held]
    assert sorted(second.deleted.objects_deleted) == sorted(due)
    assert await log_entries(scene, AuditAction.registry_divergence, kit) == []
    assert await verified(scene, settings) == []


async def test_roll_forward_by_three_replicas_registers_each_clip_once(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def store_away(*args: object, **kwargs: object) -> str:
        raise StorageUnavailable("the store went away as the clip was being assembled")

    async with made_through_the_apps(scene) as (kit, ingest, _):
        clips = [make_clip(kit, size=64 * KiB + i) for i in range(3)]
        # Every byte in, the session `completing`, then the store fails: what a vault that
        # died between its commit and the registration leaves (the dock has no receipt).
        with monkeypatch.context() as patched:
            patched.setattr(ObjectStore, "complete_multipart", store_away)
            for data, metadata in clips:
                created = await ingest.post("/v1/uploads", headers=creation_headers(kit, metadata))
                location = created.headers["Location"]
                answer = await ingest.patch(location, content=data, headers=patch_headers(kit, 0))
                assert answer.status_code == 503, answer.text
    async with scene.admin.connect() as connection:
        waiting = (
            await connection.scalars(
                select(UploadSession.status).where(UploadSession.station_id == kit.station_id)
            )
        ).all()
    assert waiting == ["completing"] * len(clips)

    async with replicas(scene) as opened:
        await at_once(
            *(
                lambda state=state, settings=settings: maintain_uploads(
                    state["sessionmaker"], state["store"], settings
                )
                for state, settings in opened
            )
        )

    async with scene.admin.connect() as connection:
        statuses = (
            await connection.scalars(
                select(UploadSession.status).where(UploadSession.station_id == kit.station_id)
            )
        ).all()
        registered = (
            await connection.scalars(
                select(Recording.sha256).where(Recording.organisation_id == kit.id)
            )
        ).all()
    assert statuses == ["complete"] * len(clips)
    assert sorted(registered) == sorted(metadata.sha256 for _, metadata in clips)
    collected = Counter(
        r for _, ids in await log_entries(scene, AuditAction.collecte, kit) for r in ids
    )
    assert len(collected) == len(clips) and set(collected.values()) == {1}
    store = scene.store()
    objects = list(store.client.list_objects(scene.bucket, prefix=f"recordings/{kit.id}/"))
    assert len(objects) == len(clips)


async def test_anonymisation_jobs_claimed_by_three_replicas_once_each(scene: Scene) -> None:
    """The claim only: running a job needs the anonymisation engine, whose takeover of a dead
    worker's job is tested in tests/test_derivatives_live.py."""
    async with made_through_the_apps(scene) as (kit, ingest, vault):
        recordings = [await upload(ingest, kit, ended_days_ago=1) for _ in range(4)]
        training = await vault.post(
            f"{kit.path}/procedures",
            headers=kit.headers("responsable"),
            json={"type": "formation", "reference": "FORM-19"},
        )
        path = f"{kit.path}/procedures/{training.json()['id']}"
        asked = []
        for recording in recordings:
            attached = await vault.post(
                f"{path}/recordings",
                headers=kit.headers("responsable"),
                json={"recording_id": str(recording), "qualification": "formation"},
            )
            assert attached.status_code == 201, attached.text
            answer = await vault.post(
                f"{path}/derivatives",
                headers=kit.headers("habilite"),
                json={"recording_id": str(recording), "motif": "formation des agents"},
            )
            assert answer.status_code == 202, answer.text
            asked.append(uuid.UUID(answer.json()["id"]))

    async def claim_all(runner: JobRunner) -> list[uuid.UUID]:
        claimed = []
        while (job := await runner._claim()) is not None:  # noqa: SLF001
            claimed.append(job.derivative_id)
        return claimed

    async with replicas(scene) as opened:
        claims = await at_once(
            *(
                lambda state=state, settings=settings: claim_all(
                    JobRunner(state["sessionmaker"], state["store"], settings)
                )
                for state, settings in opened
            )
        )
    assert Counter(job for claimed in claims for job in claimed) == Counter(asked)
    async with scene.admin.connect() as connection:
        attempts = (
            await connection.execute(
                select(Derivative.status, Derivative.attempt).where(Derivative.id.in_(asked))
            )
        ).all()
    assert sorted(attempts) == [("en_cours", 1)] * len(asked)


async def test_audit_purge_by_three_replicas_purges_once(scene: Scene) -> None:
    old = datetime.now(UTC) - timedelta(days=3 * 366 + 2)

    def entry(i: int, **changes: Any) -> AuditEntry:
        return AuditEntry(
            action=AuditAction.consultation,
            service="vault",
            actor_subject="agent",
            actor_role="habilite",
            organisation_id=uuid.UUID(int=1),
            motif=f"contrôle {i}",
            recording_ids=[uuid.UUID(int=i)],
            **changes,
        )

    async with replicas(scene) as opened:
        state, settings = opened[0]
        sessionmaker = state["sessionmaker"]
        async with session_scope(sessionmaker) as session:
            for i in range(6):
                await audit.append(session, entry(i, occurred_at=old + timedelta(seconds=i)))
        async with session_scope(sessionmaker) as session:  # the head that covered them then
            log = AuditLog(session, settings.log_keys())
            await log.sequence_all()
            await log.sign_head(now=old + timedelta(hours=1))
        async with session_scope(sessionmaker) as session:
            for i in range(6, 9):
                await audit.append(session, entry(i))

        async def purge(state: ServiceState, settings: VaultSettings) -> int:
            async with session_scope(state["sessionmaker"]) as session:
                return await purge_expired(session, settings.log_keys(), actor="temoin-vault")

        purged = await at_once(
            *(
                lambda state=state, settings=settings: purge(state, settings)
                for state, settings in opened
            )
        )
        async with session_scope(sessionmaker) as session:
            log = AuditLog(session, settings.log_keys())
            await log.sequence_all()
            await log.sign_head()

    assert sorted(purged) == [0] * (REPLICAS - 1) + [6]
    async with scene.admin.connect() as connection:
        entries_of_purges = await connection.scalar(
            select(func.count()).where(entries.c.action == AuditAction.audit_purge.value)
        )
    assert entries_of_purges == 1
    assert await verified(scene, settings) == []
