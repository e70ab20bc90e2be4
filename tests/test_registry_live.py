"""The registry bound to the log (issue 15), against real processes: each tampering an insider
with the database superuser's account or the storage credentials would try, and what catches
it or refuses it. Each test puts back what it changed, so that the session's data stays
consistent for the tests after it."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.vault.recordings.models import Recording
from shared.audit import entries, leaves
from shared.storage import ObjectStore
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, build_org, fresh_insee
from tests.fixtures.live import Live, run_temoin
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


async def _upload(kit: OrgKit, *, ended_days_ago: float = 0, size: int = 4096) -> str:
    ended = datetime.now(UTC) - timedelta(days=ended_days_ago, minutes=1)
    data, metadata = make_clip(
        kit, size=size, started_at=ended - timedelta(minutes=2), ended_at=ended
    )
    async with httpx.AsyncClient(base_url=kit.tokens["_ingest_url"], timeout=60) as ingest:
        response = await ingest.post(
            "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
        )
    assert response.status_code == 201, response.text
    return str(response.json()["recording_id"])


async def _sql(engine: AsyncEngine, statement: str, **values: object) -> None:
    """As the database superuser: what an insider with that account can do."""
    async with engine.begin() as connection:
        await connection.execute(text(statement), values)


async def _sequenced(engine: AsyncEngine, kit: OrgKit) -> None:
    """Wait until the organisation's entries are all in the log (the vault sequences them
    every second)."""
    deadline = time.monotonic() + 30
    while True:
        async with engine.connect() as connection:
            waiting = await connection.scalar(
                select(func.count())
                .select_from(entries)
                .where(
                    entries.c.organisation_id == kit.id,
                    ~select(leaves.c.seq).where(leaves.c.entry_id == entries.c.entry_id).exists(),
                )
            )
        if not waiting:
            return
        assert time.monotonic() < deadline, "entries not sequenced"
        await asyncio.sleep(0.2)


async def _row(engine: AsyncEngine, recording_id: str) -> Recording:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(Recording.__table__).where(Recording.id == uuid.UUID(recording_id))
            )
        ).one()
    return row  # type: ignore[return-value]


async def _actions(engine: AsyncEngine, kit: OrgKit, action: str) -> list[dict[str, object]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(entries.c.details).where(
                entries.c.organisation_id == kit.id, entries.c.action == action
            )
        )
        return [dict(row.details) for row in rows]


def _registry_findings(servers: Servers) -> str:
    checked = run_temoin("audit", "verify", "--registry", env=servers.env())
    assert "Traceback" not in checked.stderr, checked.stderr
    return checked.stdout


async def test_rows_edited_or_deleted_by_sql_are_reported(
    org: tuple[OrgKit, httpx.AsyncClient], engine: AsyncEngine, servers: Servers
) -> None:
    kit, vault = org
    recording_id = await _upload(kit)
    consulted = await vault.post(
        f"{kit.path}/recordings/{recording_id}/consultations",
        headers=kit.headers("habilite"),
        json={"motif": "signalement"},
    )
    consultation_id = consulted.json()["id"]
    row = await _row(engine, recording_id)
    before = _registry_findings(servers)
    assert f"recording {recording_id}" not in before

    await _sql(
        engine,
        "UPDATE vault.recordings SET started_at = started_at - interval '1 hour', "
        "agent_id = :other WHERE id = :id",
        other=kit.agents["habilite"],
        id=uuid.UUID(recording_id),
    )
    await _sql(engine, "DELETE FROM vault.consultations WHERE id = :id", id=consultation_id)
    try:
        found = _registry_findings(servers)
        lines = [line for line in found.splitlines() if recording_id in line]
        assert any("started_at: row" in line and "(entry " in line for line in lines), found
        assert any("agent_id: row" in line for line in lines), found
        assert f"consultation {consultation_id}" in found and "its row is gone" in found
    finally:
        await _sql(
            engine,
            "UPDATE vault.recordings SET started_at = :started, agent_id = :agent WHERE id = :id",
            started=row.started_at,
            agent=row.agent_id,
            id=uuid.UUID(recording_id),
        )


async def test_a_retention_shortened_by_sql_erases_nothing(
    org: tuple[OrgKit, httpx.AsyncClient], engine: AsyncEngine, servers: Servers
) -> None:
    kit, _ = org
    recording_id = await _upload(kit, ended_days_ago=5)  # kept another 25 days by the log
    await _sequenced(engine, kit)
    row = await _row(engine, recording_id)
    await _sql(
        engine,
        "UPDATE vault.recordings SET retain_until = now() - interval '1 day' WHERE id = :id",
        id=uuid.UUID(recording_id),
    )
    try:
        for _ in range(2):  # alerted once, kept every time
            erased = run_temoin("erase", env=servers.env())
            assert erased.returncode == 1, erased.stdout + erased.stderr
            assert f"KEPT {recording_id}" in erased.stdout
        kept = await _row(engine, recording_id)
        assert kept.status == "sealed" and kept.wrapped_key == row.wrapped_key
        alerts = await _actions(engine, kit, "registry_divergence")
        assert len(alerts) == 1 and "retain_until" in str(alerts[0]["problem"]), alerts
    finally:
        await _sql(
            engine,
            "UPDATE vault.recordings SET retain_until = :until, divergence_noted_at = NULL "
            "WHERE id = :id",
            until=row.retain_until,
            id=uuid.UUID(recording_id),
        )


async def test_a_hold_is_kept_by_the_log_and_by_the_store(
    org: tuple[OrgKit, httpx.AsyncClient], engine: AsyncEngine, servers: Servers
) -> None:
    """A recording past its retention, held by a procedure: closing the procedure by SQL does
    not let the erasure job destroy it, and lifting its legal hold with the storage
    credentials does not make it deletable (its lock was extended); the scrub restores the
    hold."""
    kit, vault = org
    recording_id = await _upload(kit, ended_days_ago=40)
    procedure = await vault.post(
        f"{kit.path}/procedures",
        headers=kit.headers("responsable"),
        json={"type": "judiciaire", "reference": f"PV-{uuid.uuid4().hex[:6]}"},
    )
    procedure_id = procedure.json()["id"]
    attached = await vault.post(
        f"{kit.path}/procedures/{procedure_id}/recordings",
        headers=kit.headers("responsable"),
        json={"recording_id": recording_id, "qualification": "scellé"},
    )
    assert attached.status_code == 201, attached.text
    row = await _row(engine, recording_id)
    store = ObjectStore(servers.storage)
    until, held = await store.protection(row.object_key, row.object_version)
    assert held and until is not None and until > datetime.now(UTC) + timedelta(days=89)
    await _sequenced(engine, kit)

    await _sql(
        engine, "UPDATE vault.procedures SET closed_at = now() WHERE id = :id", id=procedure_id
    )
    try:
        erased = run_temoin("erase", env=servers.env())
        assert erased.returncode == 1 and f"KEPT {recording_id}" in erased.stdout, erased.stdout
        assert (await _row(engine, recording_id)).wrapped_key == row.wrapped_key
    finally:
        await _sql(
            engine, "UPDATE vault.procedures SET closed_at = NULL WHERE id = :id", id=procedure_id
        )
        await _sql(
            engine,
            "UPDATE vault.recordings SET divergence_noted_at = NULL WHERE id = :id",
            id=uuid.UUID(recording_id),
        )

    # With the storage credentials, the legal hold can be lifted: the lock still holds.
    await store.set_legal_hold(row.object_key, row.object_version, False)
    assert not await store.delete_version(row.object_key, row.object_version)
    scrub = run_temoin("scrub", "--recording", recording_id, env=servers.env())
    assert scrub.returncode == 0, scrub.stdout + scrub.stderr
    _, held = await store.protection(row.object_key, row.object_version)
    assert held
    mismatches = await _actions(engine, kit, "protection_mismatch")
    assert any("legal hold is off" in str(m["problems"]) for m in mismatches), mismatches


async def test_a_habilitation_revived_or_made_up_by_sql_grants_nothing(
    org: tuple[OrgKit, httpx.AsyncClient], engine: AsyncEngine, servers: Servers
) -> None:
    kit, vault = org
    recording_id = await _upload(kit)
    consult = f"{kit.path}/recordings/{recording_id}/consultations"
    motif = {"motif": "contrôle"}
    assert (
        await vault.post(consult, headers=kit.headers("habilite"), json=motif)
    ).status_code == 201
    withdrawn = await vault.post(
        f"{kit.path}/habilitations/{kit.habilitation_id}/withdraw",
        headers=kit.headers("responsable"),
        json={"reason": "mutation"},
    )
    assert withdrawn.status_code == 200
    # Revived and backdated by SQL: the log says withdrawn, so it grants nothing.
    await _sql(
        engine,
        "UPDATE vault.habilitations SET withdrawn_at = NULL, "
        "granted_at = granted_at - interval '30 days' WHERE id = :id",
        id=kit.habilitation_id,
    )
    assert (
        await vault.post(consult, headers=kit.headers("habilite"), json=motif)
    ).status_code == 403
    found = _registry_findings(servers)
    assert f"habilitation {kit.habilitation_id}" in found and "withdrawn in the log" in found

    # Made up by SQL for the wearer, with no entry at all: grants nothing either.
    await _sql(
        engine,
        "INSERT INTO vault.habilitations (id, organisation_id, agent_id, granted_by, granted_at)"
        " VALUES (:id, :org, :agent, 'sql', now())",
        id=uuid.uuid4(),
        org=kit.id,
        agent=kit.agents["wearer"],
    )
    wearer_as_habilite = servers.issuer.mint(
        f"wearer-{kit.id.hex[:8]}", ["habilite"], organisation_id=kit.id
    )
    refused = await vault.post(
        consult, headers={"Authorization": f"Bearer {wearer_as_habilite}"}, json=motif
    )
    assert refused.status_code == 403, refused.text
    await _sql(
        engine,
        "DELETE FROM vault.habilitations WHERE granted_by = 'sql' AND organisation_id = :org",
        org=kit.id,
    )
    await _sql(
        engine,
        "UPDATE vault.habilitations SET withdrawn_at = now(), granted_at = granted_at "
        "+ interval '30 days' WHERE id = :id",
        id=kit.habilitation_id,
    )


async def test_a_data_key_that_does_not_unwrap_stops_nothing(
    org: tuple[OrgKit, httpx.AsyncClient], engine: AsyncEngine, servers: Servers
) -> None:
    kit, vault = org
    damaged = await _upload(kit, size=MiB + 3)
    intact = await _upload(kit, size=MiB + 5)
    consulted = await vault.post(
        f"{kit.path}/recordings/{damaged}/consultations",
        headers=kit.headers("habilite"),
        json={"motif": "visionnage"},
    )
    url = consulted.json()["url"]
    await _sql(
        engine,
        "UPDATE vault.recordings SET wrapped_key = overlay(wrapped_key placing '\\x00'::bytea "
        "from 30 for 1) WHERE id = :id",
        id=uuid.UUID(damaged),
    )
    answer = await vault.get(url, headers={"Range": "bytes=0-99"})
    assert answer.status_code == 409, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    scrub = run_temoin("scrub", "--recording", damaged, "--recording", intact, env=servers.env())
    assert scrub.returncode == 1, scrub.stdout + scrub.stderr
    assert f"DAMAGED {damaged}" in scrub.stdout and "2 recording(s) checked" in scrub.stdout
    assert (await _row(engine, intact)).status == "sealed"
    failures = await _actions(engine, kit, "fixity_failure")
    assert ["key" in str(f["problem"]) for f in failures] == [True]


async def test_a_row_deleted_by_sql_leaves_no_orphan_to_delete(
    org: tuple[OrgKit, httpx.AsyncClient], engine: AsyncEngine, servers: Servers
) -> None:
    kit, _ = org
    recording_id = await _upload(kit)
    row = await _row(engine, recording_id)
    await _sql(engine, "DELETE FROM vault.recordings WHERE id = :id", id=uuid.UUID(recording_id))
    preview = run_temoin("erase", "--dry-run", env=servers.env())
    assert row.object_key not in preview.stdout  # not an orphan: the log collected it
    found = _registry_findings(servers)
    assert f"recording {recording_id}" in found and "its row is gone" in found


async def test_no_package_is_made_from_a_row_the_log_contradicts(
    org: tuple[OrgKit, httpx.AsyncClient], engine: AsyncEngine, servers: Servers
) -> None:
    kit, vault = org
    recording_id = await _upload(kit)
    procedure = await vault.post(
        f"{kit.path}/procedures",
        headers=kit.headers("responsable"),
        json={"type": "judiciaire", "reference": f"PV-{uuid.uuid4().hex[:6]}"},
    )
    path = f"{kit.path}/procedures/{procedure.json()['id']}"
    await vault.post(
        f"{path}/recordings",
        headers=kit.headers("responsable"),
        json={"recording_id": recording_id, "qualification": "scellé"},
    )
    row = await _row(engine, recording_id)
    await _sql(
        engine,
        "UPDATE vault.recordings SET address = 'ailleurs' WHERE id = :id",
        id=uuid.UUID(recording_id),
    )
    try:
        refused = await vault.post(
            f"{path}/extractions",
            headers=kit.headers("responsable"),
            json={"recording_id": recording_id, "motif": "réquisition", "destinataires": ["OPJ"]},
        )
        assert refused.status_code == 409, refused.text
        assert "place" in refused.json()["detail"]
        assert len(await _actions(engine, kit, "registry_divergence")) == 1
    finally:
        await _sql(
            engine,
            "UPDATE vault.recordings SET address = :address, divergence_noted_at = NULL "
            "WHERE id = :id",
            address=row.address,
            id=uuid.UUID(recording_id),
        )


async def test_a_detach_agrees_with_the_log_and_lets_the_erasure_proceed(
    org: tuple[OrgKit, httpx.AsyncClient], engine: AsyncEngine, servers: Servers
) -> None:
    """Both past their retention: one attached by mistake and detached, erased by the next
    run; one detached, attached again and detached again from one procedure, still held by
    another, kept. The log's history and the rows agree all along; a detach made by SQL
    instead (the link deleted) erases nothing."""
    kit, vault = org
    mistaken = await _upload(kit, ended_days_ago=40)
    shared = await _upload(kit, ended_days_ago=40)
    procedures = []
    for kind in ("judiciaire", "administrative"):
        opened = await vault.post(
            f"{kit.path}/procedures",
            headers=kit.headers("responsable"),
            json={"type": kind, "reference": f"PV-{uuid.uuid4().hex[:6]}"},
        )
        assert opened.status_code == 201, opened.text
        procedures.append(f"{kit.path}/procedures/{opened.json()['id']}")
    first, second = procedures

    async def attach(procedure: str, recording_id: str) -> None:
        attached = await vault.post(
            f"{procedure}/recordings",
            headers=kit.headers("habilite"),
            json={"recording_id": recording_id, "qualification": "intervention"},
        )
        assert attached.status_code == 201, attached.text

    async def detach(procedure: str, recording_id: str) -> None:
        detached = await vault.post(
            f"{procedure}/recordings/{recording_id}/detach",
            headers=kit.headers("habilite"),
            json={"motif": "sans rapport avec la procédure"},
        )
        assert detached.status_code == 200, detached.text

    await attach(first, mistaken)
    await attach(second, shared)
    await attach(first, shared)
    await detach(first, mistaken)
    await detach(first, shared)
    await attach(first, shared)
    await detach(first, shared)
    await _sequenced(engine, kit)

    found = _registry_findings(servers)
    assert mistaken not in found and shared not in found, found
    scrub = run_temoin("scrub", "--recording", mistaken, "--recording", shared, env=servers.env())
    assert scrub.returncode == 0, scrub.stdout + scrub.stderr
    kept_row = await _row(engine, shared)
    erased = run_temoin("erase", env=servers.env())
    assert f"KEPT {mistaken}" not in erased.stdout, erased.stdout
    assert f"KEPT {shared}" not in erased.stdout, erased.stdout
    assert (await _row(engine, mistaken)).status == "erased"
    still = await _row(engine, shared)
    assert still.status == "sealed" and still.wrapped_key == kept_row.wrapped_key
    assert await _actions(engine, kit, "registry_divergence") == []
    assert await _actions(engine, kit, "protection_mismatch") == []
    found = _registry_findings(servers)
    assert mistaken not in found and shared not in found, found

    # The last hold lifted by SQL rather than by a detach: the log still holds it.
    second_id = uuid.UUID(second.rsplit("/", 1)[1])
    async with engine.connect() as connection:
        link = (
            await connection.execute(
                text(
                    "SELECT * FROM vault.procedure_recordings "
                    "WHERE procedure_id = :p AND recording_id = :r"
                ),
                {"p": second_id, "r": uuid.UUID(shared)},
            )
        ).one()
    await _sql(
        engine,
        "DELETE FROM vault.procedure_recordings WHERE procedure_id = :p AND recording_id = :r",
        p=second_id,
        r=uuid.UUID(shared),
    )
    try:
        erased = run_temoin("erase", env=servers.env())
        assert erased.returncode == 1 and f"KEPT {shared}" in erased.stdout, erased.stdout
        assert (await _row(engine, shared)).wrapped_key == kept_row.wrapped_key
        (alert,) = await _actions(engine, kit, "registry_divergence")
        assert "held: row False" in str(alert["problem"]), alert
    finally:
        await _sql(
            engine,
            "INSERT INTO vault.procedure_recordings "
            "(procedure_id, recording_id, qualification, attached_by, created_at) "
            "VALUES (:p, :r, :q, :by, :at)",
            p=second_id,
            r=uuid.UUID(shared),
            q=link.qualification,
            by=link.attached_by,
            at=link.created_at,
        )
        await _sql(
            engine,
            "UPDATE vault.recordings SET divergence_noted_at = NULL WHERE id = :id",
            id=uuid.UUID(shared),
        )
