"""The directory through its administration API: organisations, agents, habilitations
(R241-12), cameras and their wearers, docking stations, and the audit entries they leave."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from nacl.signing import SigningKey
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.vault.recordings.models import Recording
from shared.audit import entries
from shared.signatures import public_key_of
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import World


async def _me(world: World, token: str) -> dict[str, object]:
    response = await world.vault.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_roles_in_force_follow_the_directory(world: World) -> None:
    own = world.own
    assert (await _me(world, own.tokens["habilite"]))["roles"] == ["habilite"]
    assert (await _me(world, own.tokens["responsable"]))["roles"] == ["responsable"]
    wearer = await _me(world, own.tokens["agent"])
    assert wearer["roles"] == ["agent"]
    assert wearer["agent_id"] == str(own.agents["wearer"])

    # Withdrawing the habilitation takes effect on the very next request.
    withdrawn = await world.vault.post(
        f"{own.path}/habilitations/{own.habilitation_id}/withdraw",
        headers=own.headers("responsable"),
        json={"reason": "mutation dans un autre service"},
    )
    assert withdrawn.status_code == 200
    assert withdrawn.json()["active"] is False
    assert (await _me(world, own.tokens["habilite"]))["roles"] == []

    # A token claiming habilite for someone never designated is not enough.
    issuer_token = own.tokens["agent"]  # the wearer has no habilitation
    listed = await world.vault.get(
        f"{own.path}/agents", headers={"Authorization": f"Bearer {issuer_token}"}
    )
    assert listed.status_code == 403


async def test_deactivated_agent_loses_roles(world: World) -> None:
    own = world.own
    response = await world.vault.patch(
        f"{own.path}/agents/{own.agents['responsable']}",
        headers=own.headers("maire"),
        json={"active": False},
    )
    assert response.status_code == 200
    assert (await _me(world, own.tokens["responsable"]))["roles"] == []


async def test_habilitation_rules(world: World) -> None:
    own = world.own
    again = await world.vault.post(
        f"{own.path}/agents/{own.agents['habilite']}/habilitations",
        headers=own.headers("responsable"),
        json={},
    )
    assert again.status_code == 409
    # R241-12: the responsable designates; the maire cannot.
    by_maire = await world.vault.post(
        f"{own.path}/agents/{own.agents['wearer']}/habilitations",
        headers=own.headers("maire"),
        json={},
    )
    assert by_maire.status_code == 403
    listed = await world.vault.get(
        f"{own.path}/habilitations", params={"active": True}, headers=own.headers("dpo")
    )
    assert [h["agent_id"] for h in listed.json()["items"]] == [str(own.agents["habilite"])]
    granted = listed.json()["items"][0]
    assert granted["granted_by"].startswith("responsable-")
    twice = await world.vault.post(
        f"{own.path}/habilitations/{own.habilitation_id}/withdraw",
        headers=own.headers("responsable"),
        json={"reason": "fin de mission"},
    )
    assert twice.status_code == 200
    thrice = await world.vault.post(
        f"{own.path}/habilitations/{own.habilitation_id}/withdraw",
        headers=own.headers("responsable"),
        json={"reason": "fin de mission"},
    )
    assert thrice.status_code == 409


async def test_camera_assignments_never_overlap(world: World) -> None:
    own = world.own
    url = f"{own.path}/cameras/{own.camera_id}/assignments"
    overlapping = await world.vault.post(
        url,
        headers=own.headers("responsable"),
        json={"agent_id": str(own.agents["habilite"]), "starts_at": "2026-03-01T08:00:00Z"},
    )
    assert overlapping.status_code == 409
    ended = await world.vault.post(
        f"{own.path}/assignments/{own.assignment_id}/end",
        headers=own.headers("responsable"),
        json={"ends_at": "2026-03-01T08:00:00Z"},
    )
    assert ended.status_code == 200
    handed_over = await world.vault.post(
        url,
        headers=own.headers("responsable"),
        json={"agent_id": str(own.agents["habilite"]), "starts_at": "2026-03-01T08:00:00Z"},
    )
    assert handed_over.status_code == 201, handed_over.text
    history = (await world.vault.get(url, headers=own.headers("dpo"))).json()["items"]
    assert [a["agent_id"] for a in history] == [
        str(own.agents["wearer"]),
        str(own.agents["habilite"]),
    ]
    foreign_agent = await world.vault.post(
        url,
        headers=own.headers("responsable"),
        json={"agent_id": str(world.other.agents["wearer"]), "starts_at": "2027-01-01T00:00:00Z"},
    )
    assert foreign_agent.status_code == 422
    assert foreign_agent.json()["errors"][0]["field"] == "body.agent_id"


async def test_authorised_camera_count_is_enforced(world: World) -> None:
    own = world.own
    organisation = (await world.vault.get(own.path, headers=own.headers("maire"))).json()
    settings = {k: organisation[k] for k in ("name", "departement", "communes")}
    response = await world.vault.put(
        own.path, headers=own.headers("maire"), json={**settings, "authorised_cameras": 1}
    )
    assert response.status_code == 200
    refused = await world.vault.post(
        f"{own.path}/cameras",
        headers=own.headers("responsable"),
        json={"serial": "CAM-2", "model": "Reveal D5"},
    )
    assert refused.status_code == 409
    assert "authorisation" in refused.json()["detail"]


async def test_organisation_settings_and_communes(world: World) -> None:
    own = world.own
    body = {
        "name": "PM",
        "departement": "94",
        "communes": [{"insee_code": "91027", "name": "Athis-Mons"}],
    }
    taken = await world.vault.put(own.path, headers=own.headers("maire"), json=body)
    assert taken.status_code == 409  # Athis-Mons is served by the other organisation
    too_long = await world.vault.put(
        own.path,
        headers=own.headers("maire"),
        json={**body, "communes": [{"insee_code": "94038", "name": "L'Haÿ"}], "retention_days": 90},
    )
    assert too_long.status_code == 422
    assert too_long.json()["errors"][0]["field"] == "body.retention_days"
    organisation = (await world.vault.get(own.path, headers=own.headers("agent"))).json()
    assert organisation["retention_days"] == 30
    assert organisation["wearer_access"] is False


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/agents", {"matricule": "bad matricule!", "first_name": "A", "last_name": "B"},
         "body.matricule"),
        ("/agents", {"matricule": "A1", "first_name": "A", "last_name": "B", "roles": ["maire"]},
         "body.roles.0"),
        ("/cameras", {"serial": "", "model": "X"}, "body.serial"),
        ("/stations", {"name": "Dock", "public_key": "not-a-key"}, "body.public_key"),
        ("/stations", {"name": "Dock", "public_key": "AAAA"}, "body.public_key"),
        ("/agents", {"matricule": "A1", "first_name": "A", "last_name": "B", "extra": 1},
         "body.extra"),
    ],
)  # fmt: skip
async def test_invalid_payloads_name_the_field(
    world: World, connection: AsyncConnection, path: str, payload: dict[str, object], field: str
) -> None:
    own = world.own
    before = (await connection.execute(select(entries.c.id))).all()
    response = await world.vault.post(
        f"{own.path}{path}", headers=own.headers("responsable"), json=payload
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in response.json()["errors"]]
    after = (await connection.execute(select(entries.c.id))).all()
    assert after == before  # nothing half-written, not even an audit entry


async def test_duplicates_are_conflicts(world: World) -> None:
    own = world.own
    duplicate = await world.vault.post(
        f"{own.path}/cameras",
        headers=own.headers("responsable"),
        json={"serial": own.camera_serial, "model": "Reveal D5"},
    )
    assert duplicate.status_code == 409
    same_key = await world.vault.get(
        f"{own.path}/stations/{own.station_id}", headers=own.headers("dpo")
    )
    reused = await world.vault.post(
        f"{world.other.path}/stations",
        headers=world.other.headers("maire"),
        json={"name": "Copy", "public_key": same_key.json()["public_key"]},
    )
    assert reused.status_code == 409


async def test_every_change_is_in_the_audit_trail(
    world: World, connection: AsyncConnection
) -> None:
    own = world.own
    rows = (
        await connection.execute(
            select(entries).where(entries.c.organisation_id == own.id).order_by(entries.c.id)
        )
    ).all()
    actions = [row.action for row in rows]
    assert actions == [
        "directory_change",  # organisation created
        "directory_change",  # 3 agents
        "directory_change",
        "directory_change",
        "habilitation_granted",
        "directory_change",  # camera
        "directory_change",  # assignment
        "station_registered",
    ]
    granted = rows[4]
    assert granted.actor_role == "responsable"
    assert granted.actor_subject.startswith("responsable-")
    assert granted.details["agent_id"] == str(own.agents["habilite"])
    assert rows[0].details["change"] == "created"
    assert rows[0].actor_role == "maire"
    assert all(row.request_id for row in rows)


async def test_unknown_ids_are_404(world: World) -> None:
    own = world.own
    for path in (
        f"/agents/{uuid.uuid4()}",
        f"/cameras/{uuid.uuid4()}",
        f"/stations/{uuid.uuid4()}",
    ):
        response = await world.vault.get(f"{own.path}{path}", headers=own.headers("maire"))
        assert response.status_code == 404, path
        assert response.headers["content-type"] == "application/problem+json"
    malformed = await world.vault.get(f"{own.path}/agents/not-a-uuid", headers=own.headers("maire"))
    assert malformed.status_code == 422


async def test_stations_say_when_they_last_uploaded(
    world: World, connection: AsyncConnection
) -> None:
    """`last_upload_at` on each station; `silent_since`: the active ones to check on (issue 17,
    Accueil), those that never uploaded included; a bad instant is 422."""
    own = world.own
    path = f"{own.path}/stations"
    silent = await world.vault.post(
        path,
        headers=own.headers("responsable"),
        json={"name": "Dock du poste annexe", "public_key": public_key_of(SigningKey.generate())},
    )
    assert silent.status_code == 201, silent.text
    assert silent.json()["last_upload_at"] is None
    data, metadata = make_clip(own)
    uploaded = await world.ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(own, metadata)
    )
    assert uploaded.status_code == 201, uploaded.text
    two_days_ago = datetime.now(UTC) - timedelta(days=2)
    await connection.execute(
        update(Recording)
        .where(Recording.id == uuid.UUID(str(uploaded.json()["recording_id"])))
        .values(received_at=two_days_ago)
    )
    listed = await world.vault.get(path, headers=own.headers("dpo"))
    assert listed.status_code == 200, listed.text
    last = {item["id"]: item["last_upload_at"] for item in listed.json()["items"]}
    assert last[silent.json()["id"]] is None
    assert datetime.fromisoformat(last[str(own.station_id)]) == two_days_ago
    one = await world.vault.get(f"{path}/{own.station_id}", headers=own.headers("maire"))
    assert datetime.fromisoformat(one.json()["last_upload_at"]) == two_days_ago

    def silent_since(days: int) -> dict[str, str]:
        return {"silent_since": (datetime.now(UTC) - timedelta(days=days)).isoformat()}

    quiet = await world.vault.get(path, headers=own.headers("dpo"), params=silent_since(3))
    assert [item["id"] for item in quiet.json()["items"]] == [silent.json()["id"]]
    assert quiet.json()["total"] == 1
    quieter = await world.vault.get(path, headers=own.headers("dpo"), params=silent_since(1))
    assert {item["id"] for item in quieter.json()["items"]} == {
        silent.json()["id"],
        str(own.station_id),
    }
    # A revoked station is no longer expected to upload.
    revoked = await world.vault.post(
        f"{path}/{silent.json()['id']}/revoke",
        headers=own.headers("responsable"),
        json={"reason": "déposée"},
    )
    assert revoked.status_code == 200, revoked.text
    assert "last_upload_at" in revoked.json()
    after = await world.vault.get(path, headers=own.headers("dpo"), params=silent_since(3))
    assert after.json()["items"] == []
    bad = await world.vault.get(path, headers=own.headers("dpo"), params={"silent_since": "3j"})
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "query.silent_since"
    refused = await world.vault.get(path, headers=own.headers("habilite"))
    assert refused.status_code == 403
