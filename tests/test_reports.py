"""Reports through the in-process apps: periods, refusals, the préfecture's table with an
organisation that has no data, and finalisation (later events do not change what was sent)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.reporting.statistics.consumer import Consumer
from shared.audit import FeedEvent
from shared.signatures import verify
from tests.fixtures.directory import World


def _collecte(seq: int, organisation_id: uuid.UUID, started: datetime) -> FeedEvent:
    return FeedEvent(
        seq=seq,
        entry_id=uuid.uuid4(),
        occurred_at=started + timedelta(hours=2),
        action="collecte",
        outcome="success",
        organisation_id=organisation_id,
        actor_subject="station:x",
        actor_role="station",
        recording_ids=[uuid.uuid4()],
        procedure_ref=None,
        details={
            "camera": "CAM-X",
            "started_at": started.isoformat(),
            "ended_at": (started + timedelta(minutes=5)).isoformat(),
        },
    )


async def _feed(connection: AsyncConnection, *events_of: tuple[uuid.UUID, datetime]) -> None:
    async with AsyncSession(bind=connection, join_transaction_mode="create_savepoint") as session:
        consumer = Consumer(session)
        # Locked: the reporting app's own consumer may move the checkpoint meanwhile, and
        # events at or before it would be skipped.
        after = await consumer.checkpoint(lock=True)
        await consumer.apply(
            [_collecte(after + 1 + n, org, when) for n, (org, when) in enumerate(events_of)],
            after=after,
        )
        await session.commit()


async def test_periods_and_refusals(world: World) -> None:
    own = world.own
    path = f"{own.path}/report"
    inverted = await world.reporting.get(
        path, headers=own.headers("maire"), params={"start": "2026-05-01", "end": "2026-04-30"}
    )
    assert inverted.status_code == 422
    half = await world.reporting.get(
        path, headers=own.headers("maire"), params={"start": "2026-05-01"}
    )
    assert half.status_code == 422
    ranged = await world.reporting.get(
        path,
        headers=own.headers("responsable"),
        params={"start": "2026-02-01", "end": "2026-02-28"},
    )
    assert ranged.status_code == 200
    assert ranged.json()["period"] == {"start": "2026-02-01", "end": "2026-02-28"}
    # A maire whose organisation was never created: 404, not an empty report.
    nowhere = uuid.uuid4()
    token = world.own.tokens["maire"]
    ghost = await world.reporting.get(
        f"/v1/organisations/{nowhere}/report", headers={"Authorization": f"Bearer {token}"}
    )
    assert ghost.status_code == 404
    dpo = await world.reporting.get(path, headers=own.headers("dpo"))
    assert dpo.status_code == 403


async def test_prefecture_table_lists_organisations_without_data(
    world: World, connection: AsyncConnection
) -> None:
    own, other = world.own, world.other
    await _feed(connection, (other.id, datetime(2025, 3, 1, 10, tzinfo=UTC)))
    table = await world.reporting.get(
        f"/v1/prefectures/{own.departement}/table",
        headers=own.headers("prefecture"),
        params={"year": 2025},
    )
    assert table.status_code == 200, table.text
    rows = {r["organisation"]["id"]: r for r in table.json()["rows"]}
    assert rows[str(own.id)]["has_data"] is False
    assert str(other.id) not in rows  # another département
    csv = await world.reporting.get(
        f"/v1/prefectures/{own.departement}/table",
        headers=own.headers("prefecture"),
        params={"year": 2025, "format": "csv"},
    )
    assert "aucune donnée" in csv.text and csv.text.strip().splitlines()[-1].startswith("TOTAL")
    pdf = await world.reporting.get(
        f"/v1/prefectures/{own.departement}/table",
        headers=own.headers("prefecture"),
        params={"year": 2025, "format": "pdf"},
    )
    assert pdf.content.startswith(b"%PDF")


async def test_a_finalised_report_does_not_change(
    world: World, connection: AsyncConnection
) -> None:
    own = world.own
    march = datetime(2025, 3, 10, 9, tzinfo=UTC)
    await _feed(connection, (own.id, march), (own.id, march + timedelta(days=1)))
    period = {"start": "2025-01-01", "end": "2025-12-31"}
    finalised = await world.reporting.post(
        f"{own.path}/report/finalise", headers=own.headers("responsable"), json=period
    )
    assert finalised.status_code == 201, finalised.text
    sent = finalised.json()
    assert sent["report"]["recordings"] == 2
    # Signed and hashed as sent: anyone can check it with the published key.
    public = (await world.reporting.get("/v1/reports/public-key")).json()["public_key"]
    assert hashlib.sha256(sent["body"].encode()).hexdigest() == sent["sha256"]
    assert verify(public, b"temoin-report-v1\n" + sent["body"].encode(), sent["signature"])
    assert not verify(
        public, b"temoin-report-v1\n" + sent["body"].encode() + b" ", sent["signature"]
    )
    await _feed(connection, (own.id, march + timedelta(days=2)))
    live = await world.reporting.get(
        f"{own.path}/report", headers=own.headers("maire"), params={"year": 2025}
    )
    assert live.json()["recordings"] == 3
    kept = await world.reporting.get(
        f"{own.path}/report/finalised/{sent['id']}", headers=own.headers("maire")
    )
    assert kept.json()["report"]["recordings"] == 2
    assert kept.json()["sha256"] == sent["sha256"]
