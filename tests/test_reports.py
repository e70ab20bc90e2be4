"""Reports through the in-process apps: periods, refusals, the préfecture's table with an
organisation that has no data, and finalisation (later events do not change what was sent)."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import importlib
import io
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from pypdf import PdfReader
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.reporting.statistics.consumer import Consumer, delay_bucket
from shared.audit import FeedEvent
from shared.signatures import verify
from tests.fixtures.directory import OrgKit, World
from tests.fixtures.live import Live


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


async def test_a_finalised_report_is_final(world: World, connection: AsyncConnection) -> None:
    own = world.own
    await _feed(connection, (own.id, datetime(2024, 6, 3, 9, tzinfo=UTC)))
    period = {"start": "2024-01-01", "end": "2024-12-31"}
    path = f"{own.path}/report"
    written = await world.reporting.put(
        f"{path}/evaluation",
        headers=own.headers("responsable"),
        json={**period, "text": "Les interventions sont plus calmes."},
    )
    assert written.status_code == 204, written.text
    # The maire has no agent record: without a named signatory, who signs is asked.
    unsigned = await world.reporting.post(
        f"{path}/finalise", headers=own.headers("maire"), json=period
    )
    assert unsigned.status_code == 422, unsigned.text
    assert "signatory" in unsigned.json()["detail"]
    finalised = await world.reporting.post(
        f"{path}/finalise", headers=own.headers("responsable"), json=period
    )
    assert finalised.status_code == 201, finalised.text
    sent = finalised.json()
    signatory = sent["report"]["signatory"]
    assert signatory["name"].startswith("Responsable Test")  # the responsable's agent record
    assert signatory["title"] == "Chef de service de la police municipale"
    assert sent["report"]["evaluation"] == "Les interventions sont plus calmes."

    # The letter: the same bytes every time, whose hash was signed and logged.
    letters = [
        await world.reporting.get(
            f"{path}/finalised/{sent['id']}", headers=own.headers(role), params={"format": "pdf"}
        )
        for role in ("maire", "responsable", "maire")
    ]
    assert all(letter.headers["content-type"] == "application/pdf" for letter in letters)
    assert letters[0].content == letters[1].content == letters[2].content
    digest = hashlib.sha256(letters[0].content).hexdigest()
    assert digest == sent["pdf_sha256"]
    public = (await world.reporting.get("/v1/reports/public-key")).json()["public_key"]
    assert verify(public, b"temoin-report-pdf-v1\n" + letters[0].content, sent["pdf_signature"])
    logged = await connection.scalar(
        text(
            "SELECT details->>'pdf_sha256' FROM audit.entries "
            "WHERE action = 'report_finalised' AND details->>'report' = :id"
        ),
        {"id": sent["id"]},
    )
    assert logged == digest

    # Frozen: the évaluation, and the period itself.
    again = await world.reporting.put(
        f"{path}/evaluation",
        headers=own.headers("responsable"),
        json={**period, "text": "Réécrite après l'envoi."},
    )
    assert again.status_code == 409, again.text
    twice = await world.reporting.post(
        f"{path}/finalise",
        headers=own.headers("maire"),
        json={**period, "signatory": {"name": "Claire Martin", "title": "Maire"}},
    )
    assert twice.status_code == 409, twice.text
    assert twice.headers["content-type"] == "application/problem+json"
    assert twice.json()["finalised"] == f"/v1/organisations/{own.id}/report/finalised/{sent['id']}"
    await _feed(connection, (own.id, datetime(2024, 7, 1, 9, tzinfo=UTC)))
    kept = await world.reporting.get(
        f"{path}/finalised/{sent['id']}", headers=own.headers("maire"), params={"format": "pdf"}
    )
    assert kept.content == letters[0].content
    # Another period is another report; a named signatory is taken as given.
    other = await world.reporting.post(
        f"{path}/finalise",
        headers=own.headers("maire"),
        json={
            "start": "2024-01-01",
            "end": "2024-06-30",
            "signatory": {"name": "Claire Martin", "title": "Maire de Testville"},
        },
    )
    assert other.status_code == 201, other.text
    assert other.json()["report"]["signatory"] == {
        "name": "Claire Martin",
        "title": "Maire de Testville",
    }


async def test_the_report_says_whether_its_period_is_finalised(
    world: World, connection: AsyncConnection
) -> None:
    own = world.own
    await _feed(connection, (own.id, datetime(2022, 4, 5, 9, tzinfo=UTC)))
    path = f"{own.path}/report"

    async def live(**params: str | int) -> dict[str, object]:
        answer = await world.reporting.get(path, headers=own.headers("maire"), params=params)
        assert answer.status_code == 200, answer.text
        body: dict[str, object] = answer.json()
        return body

    assert (await live(year=2022))["finalised"] is None
    finalised = await world.reporting.post(
        f"{path}/finalise",
        headers=own.headers("maire"),
        json={
            "start": "2022-01-01",
            "end": "2022-12-31",
            "signatory": {"name": "Claire Martin", "title": "Maire de Testville"},
        },
    )
    assert finalised.status_code == 201, finalised.text
    sent = finalised.json()
    said = (await live(year=2022))["finalised"]
    assert said == {
        "id": sent["id"],
        "href": f"/v1/organisations/{own.id}/report/finalised/{sent['id']}",
        "finalised_at": sent["finalised_at"],
        "finalised_by": f"maire-{own.id.hex[:8]}",
        "signatory": {"name": "Claire Martin", "title": "Maire de Testville"},
    }
    # Only that exact period: a part of it, or another year, is not finalised.
    assert (await live(start="2022-01-01", end="2022-06-30"))["finalised"] is None
    assert (await live(year=2021))["finalised"] is None
    # The CSV and the letter are the report's own, unchanged.
    csv = await world.reporting.get(
        path, headers=own.headers("maire"), params={"year": 2022, "format": "csv"}
    )
    assert "finalis" not in csv.text


async def test_two_finalisations_at_once_make_one_report(
    live: Live, live_org: tuple[OrgKit, httpx.AsyncClient]
) -> None:
    # Against the running service: in process, requests share the test's one connection.
    kit, _ = live_org
    period = {"start": "2023-01-01", "end": "2023-12-31"}
    async with httpx.AsyncClient(base_url=live.reporting.url, timeout=30) as reporting:
        answers = await asyncio.gather(
            *(
                reporting.post(
                    f"{kit.path}/report/finalise", headers=kit.headers("responsable"), json=period
                )
                for _ in range(3)
            )
        )
    assert sorted(a.status_code for a in answers) == [201, 409, 409], [a.text for a in answers]


async def test_a_clip_uploaded_a_year_late_shows_a_year(
    world: World, connection: AsyncConnection
) -> None:
    own = world.own
    started = datetime(2025, 3, 1, 10, tzinfo=UTC)
    late = _collecte(0, own.id, started)
    ended = datetime.fromisoformat(str(late.details["ended_at"]))
    async with AsyncSession(bind=connection, join_transaction_mode="create_savepoint") as session:
        consumer = Consumer(session)
        after = await consumer.checkpoint(lock=True)
        late = dataclasses.replace(late, seq=after + 1, occurred_at=ended + timedelta(days=365))
        await consumer.apply([late], after=after)
        await session.commit()
    path = f"{own.path}/report"
    report = (await world.reporting.get(path, headers=own.headers("maire"),
                                        params={"year": 2025})).json()  # fmt: skip
    year = 365 * 24 * 60
    assert abs(report["median_upload_delay_minutes"] - year) / year < 0.05, report
    pdf = await world.reporting.get(path, headers=own.headers("maire"),
                                    params={"year": 2025, "format": "pdf"})  # fmt: skip
    text = " ".join(" ".join(p.extract_text().split()) for p in PdfReader(
        io.BytesIO(pdf.content)).pages)  # fmt: skip
    shown = re.search(r"Délai médian de transfert environ (\d+) jours", text)
    assert shown is not None and abs(int(shown.group(1)) - 365) < 365 * 0.05, text


async def test_migration_0012_recounts_the_capped_bucket_from_the_log(
    connection: AsyncConnection,
) -> None:
    """Rows counted at the old cap (9,412 minutes, « a week or more ») are counted again in
    the bucket of their true delay, from the collecte entries reporting had applied."""
    migration = importlib.import_module("migrations.versions.0012_delay_buckets_uncapped")
    await connection.execute(text("RESET ROLE"))  # as migrations run: the owner
    org, entry = uuid.uuid4(), uuid.uuid4()
    ended = datetime(2024, 6, 1, 10, 5, tzinfo=UTC)
    seq = await connection.scalar(
        text("SELECT least(coalesce(min(seq), 0), 0) - 1000 FROM audit.leaves")
    )
    await connection.execute(
        text(
            "INSERT INTO audit.entries (entry_id, occurred_at, service, action, outcome, "
            "organisation_id, actor_subject, details) VALUES (:e, :at, 'ingest', 'collecte', "
            "'success', :o, 'station:x', CAST(:d AS jsonb))"
        ),
        {"e": entry, "at": ended + timedelta(days=365), "o": org,
         "d": json.dumps({"started_at": "2024-06-01T12:00:00+02:00",
                          "ended_at": ended.isoformat(), "camera": "CAM-X"})},
    )  # fmt: skip
    await connection.execute(
        text(
            "INSERT INTO audit.leaves (seq, entry_id, entry_pk, txid, leaf_hash, sequenced_at) "
            "SELECT :s, entry_id, id, '0', '\\x00', now() FROM audit.entries WHERE entry_id = :e"
        ),
        {"s": seq, "e": entry},
    )
    await connection.execute(
        text(
            "INSERT INTO reporting.checkpoints (name, last_seq) VALUES ('audit-feed', :s) "
            "ON CONFLICT (name) DO NOTHING"
        ),
        {"s": seq},
    )
    await connection.execute(
        text(
            "INSERT INTO reporting.delay_buckets VALUES (:o, '2024-06-01', 9412, 1), "
            "(:o, '2024-06-01', 5, 2)"
        ),
        {"o": org},
    )
    for statement in migration.UPGRADE:
        await connection.execute(text(statement))
    rows = (
        await connection.execute(
            text(
                "SELECT minutes, count FROM reporting.delay_buckets WHERE organisation_id = :o "
                "ORDER BY minutes"
            ),
            {"o": org},
        )
    ).all()
    assert [tuple(r) for r in rows] == [(5, 2), (delay_bucket(365 * 24 * 60), 1)]
