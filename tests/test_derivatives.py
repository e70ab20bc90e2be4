"""Anonymised copies for training (issue 18) through the in-process apps: every bad request is
a clear 4xx (R241-12: a copy is asked for within a `formation` procedure holding the recording,
of an original only, one at a time; only an approved copy is extracted for training, and the
original never is), and a waiting job is cancelled. The making of a copy, its review and its
extraction run against real processes: tests/test_derivatives_live.py."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.audit import entries
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, World


async def _upload(world: World, kit: OrgKit) -> str:
    data, metadata = make_clip(kit)
    response = await world.ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["recording_id"])


async def _procedure(world: World, kit: OrgKit, kind: str, *recordings: str) -> str:
    opened = await world.vault.post(
        f"{kit.path}/procedures",
        headers=kit.headers("responsable"),
        json={"type": kind, "reference": f"{kind}-{kit.id.hex[:6]}"},
    )
    assert opened.status_code == 201, opened.text
    path = f"{kit.path}/procedures/{opened.json()['id']}"
    for recording in recordings:
        attached = await world.vault.post(
            f"{path}/recordings",
            headers=kit.headers("responsable"),
            json={"recording_id": recording, "qualification": "exemple"},
        )
        assert attached.status_code == 201, attached.text
    return path


def _problem(response: Any, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert words in response.json()["detail"], response.json()


async def test_bad_requests_are_clear_4xx(world: World, connection: AsyncConnection) -> None:
    kit = world.own
    habilite = kit.headers("habilite")
    recording = await _upload(world, kit)
    loose = await _upload(world, kit)
    judiciaire = await _procedure(world, kit, "judiciaire", recording)
    formation = await _procedure(world, kit, "formation", recording)
    ask = {"recording_id": recording, "motif": "formation des agents"}

    # Only within a formation procedure, and only a recording it holds.
    _problem(
        await world.vault.post(f"{judiciaire}/derivatives", headers=habilite, json=ask),
        422,
        "`formation` procedure",
    )
    _problem(
        await world.vault.post(
            f"{formation}/derivatives", headers=habilite, json={**ask, "recording_id": loose}
        ),
        409,
        "attach the recording",
    )
    asked = await world.vault.post(f"{formation}/derivatives", headers=habilite, json=ask)
    assert asked.status_code == 202, asked.text
    assert asked.json()["status"] == "en_attente"
    derivative = asked.json()["id"]
    path = f"{kit.path}/derivatives/{derivative}"

    # One job at a time per recording; a copy of a copy is not made.
    _problem(
        await world.vault.post(f"{formation}/derivatives", headers=habilite, json=ask),
        409,
        "already being made",
    )
    _problem(
        await world.vault.post(
            f"{formation}/derivatives", headers=habilite, json={**ask, "recording_id": derivative}
        ),
        422,
        "original recording only",
    )
    # Nothing to view nor review before it is made.
    _problem(
        await world.vault.post(f"{path}/consultations", headers=habilite, json={"motif": "voir"}),
        409,
        "not made yet",
    )
    _problem(
        await world.vault.post(
            f"{path}/review", headers=habilite, json={"decision": "approuve", "reason": "bien"}
        ),
        409,
        "waiting for review",
    )
    # Extraction: never the original for training, never a copy for another procedure,
    # never a copy not approved.
    extraction = {"recording_id": recording, "motif": "session", "destinataires": ["Formateur"]}
    _problem(
        await world.vault.post(f"{formation}/extractions", headers=habilite, json=extraction),
        422,
        "approved anonymised copy",
    )
    _problem(
        await world.vault.post(
            f"{judiciaire}/extractions",
            headers=habilite,
            json={**extraction, "derivative_id": derivative},
        ),
        422,
        "`formation` procedure only",
    )
    _problem(
        await world.vault.post(
            f"{formation}/extractions",
            headers=habilite,
            json={**extraction, "derivative_id": derivative},
        ),
        409,
        "only an approved anonymised copy",
    )

    # Followed, then cancelled: a waiting job ends at once, logged; a second cancel is 409.
    followed = await world.vault.get(path, headers=kit.headers("dpo"))
    assert followed.status_code == 200, followed.text
    assert (followed.json()["frames_done"], followed.json()["frames_total"]) == (0, None)
    cancelled = await world.vault.post(f"{path}/cancel", headers=kit.headers("responsable"))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "annule"
    assert cancelled.json()["reason"].startswith("Fabrication annulée par ")
    _problem(await world.vault.post(f"{path}/cancel", headers=habilite), 409, "nothing to cancel")
    # One at a time, not one ever: a new demande is taken.
    again = await world.vault.post(f"{formation}/derivatives", headers=habilite, json=ask)
    assert again.status_code == 202, again.text

    logged = (
        await connection.execute(
            select(
                entries.c.action,
                entries.c.outcome,
                entries.c.actor_role,
                entries.c.details["derivative"].astext,
            )
            .where(entries.c.organisation_id == kit.id, entries.c.action.like("derivation_%"))
            .order_by(entries.c.id)
        )
    ).all()
    assert [tuple(row) for row in logged] == [
        ("derivation_requested", "success", "habilite", derivative),
        ("derivation_finished", "failed", "responsable", derivative),  # who cancelled it
        ("derivation_requested", "success", "habilite", again.json()["id"]),
    ]
