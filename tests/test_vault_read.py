"""Search and consultation rules through the in-process apps: scoping by role, the wearer's
limits, refusals, and the media URL's binding, expiry, refusals and content type."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.vault.recordings.media import MediaGrant, sign_grant
from services.vault.recordings.models import Recording
from services.vault.settings import DEV_MEDIA_KEY
from shared.audit import entries
from shared.signatures import b64decode
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, World


async def _upload(world: World, kit: OrgKit, **changes: object) -> str:
    data, metadata = make_clip(kit, **changes)
    response = await world.ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["recording_id"])


async def test_search_filters_and_scopes(world: World) -> None:
    own = world.own
    worn = await _upload(world, own)  # the camera is assigned to the wearer
    # A second camera, worn by the habilité agent.
    camera = await world.vault.post(
        f"{own.path}/cameras",
        headers=own.headers("responsable"),
        json={"serial": "CAM-2", "model": "Reveal D5"},
    )
    assigned = await world.vault.post(
        f"{own.path}/cameras/{camera.json()['id']}/assignments",
        headers=own.headers("responsable"),
        json={"agent_id": str(own.agents["habilite"]), "starts_at": "2026-01-01T00:00:00Z"},
    )
    assert assigned.status_code == 201, assigned.text
    other_agent = await _upload(world, own, camera_serial="CAM-2")
    found = await world.vault.get(
        f"{own.path}/recordings", headers=own.headers("dpo"), params={"place": "hôtel de ville"}
    )
    assert found.status_code == 200
    assert {r["id"] for r in found.json()["items"]} == {worn, other_agent}
    assert "wrapped_key" not in found.json()["items"][0]  # metadata only
    none = await world.vault.get(
        f"{own.path}/recordings",
        headers=own.headers("responsable"),
        params={"started_from": (datetime.now(UTC) + timedelta(days=1)).isoformat()},
    )
    assert none.json()["total"] == 0
    # The wearer sees their own recordings only; the other organisation sees none of these.
    mine = await world.vault.get(f"{own.path}/recordings", headers=own.headers("agent"))
    assert {r["agent_id"] for r in mine.json()["items"]} == {str(own.agents["wearer"])}
    theirs = await world.vault.get(
        f"{world.other.path}/recordings/{worn}", headers=world.other.headers("responsable")
    )
    assert theirs.status_code == 404
    bad_status = await world.vault.get(
        f"{own.path}/recordings", headers=own.headers("dpo"), params={"status": "lost"}
    )
    assert bad_status.status_code == 422


async def test_consultation_rules(world: World, connection: AsyncConnection) -> None:
    own = world.own
    recording = await _upload(world, own)
    path = f"{own.path}/recordings/{recording}/consultations"
    no_motif = await world.vault.post(path, headers=own.headers("habilite"), json={})
    assert no_motif.status_code == 422
    assert no_motif.json()["errors"][0]["field"] == "body.motif"
    dpo = await world.vault.post(path, headers=own.headers("dpo"), json={"motif": "contrôle"})
    assert dpo.status_code == 403  # the DPO is not among those R241-12 lets view
    # The wearer: refused (and logged) while the service does not allow wearers' access.
    wearer = await world.vault.post(
        path, headers=own.headers("agent"), json={"motif": "rapport", "purpose": "compte_rendu"}
    )
    assert wearer.status_code == 403
    refused = await connection.execute(
        select(entries.c.actor_subject).where(
            entries.c.action == "access_refused", entries.c.organisation_id == own.id
        )
    )
    assert f"wearer-{own.id.hex[:8]}" in {row.actor_subject for row in refused}
    elsewhere = await world.vault.post(
        f"{world.other.path}/recordings/{recording}/consultations",
        headers=world.other.headers("habilite"),
        json={"motif": "curiosité"},
    )
    assert elsewhere.status_code == 404


async def test_media_url_is_bound_and_expires(world: World) -> None:
    own = world.own
    recording = await _upload(world, own)
    opened = await world.vault.post(
        f"{own.path}/recordings/{recording}/consultations",
        headers=own.headers("habilite"),
        json={"motif": "vérification"},
    )
    consultation = uuid.UUID(opened.json()["id"])
    key = b64decode(DEV_MEDIA_KEY)
    good = MediaGrant(
        consultation, uuid.UUID(recording), f"habilite-{own.id.hex[:8]}",
        datetime.now(UTC) + timedelta(minutes=5),
    )  # fmt: skip
    assert (await world.vault.get(f"/v1/media/{sign_grant(good, key)}")).status_code == 200
    expired = MediaGrant(
        good.consultation_id, good.recording_id, good.subject, datetime.now(UTC) - timedelta(1)
    )
    response = await world.vault.get(f"/v1/media/{sign_grant(expired, key)}")
    assert response.status_code == 403 and "expired" in response.json()["detail"]
    someone_else = MediaGrant(good.consultation_id, good.recording_id, "intrus", good.expires_at)
    assert (await world.vault.get(f"/v1/media/{sign_grant(someone_else, key)}")).status_code == 404
    forged = sign_grant(good, b"k" * 32)
    assert (await world.vault.get(f"/v1/media/{forged}")).status_code == 403


def _signed(payload: bytes, key: bytes) -> str:
    """A media token whose HMAC is right, whatever its payload (the development key is
    public: anyone can make these)."""
    mac = hmac.new(key, b"temoin-media-v1\n" + payload, hashlib.sha256).digest()
    encode = base64.urlsafe_b64encode
    return f"{encode(payload).decode().rstrip('=')}.{encode(mac).decode().rstrip('=')}"


async def test_a_well_signed_but_malformed_media_token_is_forbidden(world: World) -> None:
    key = b64decode(DEV_MEDIA_KEY)
    ids = {"c": str(uuid.uuid4()), "r": str(uuid.uuid4()), "s": "habilite-x"}
    later = int((datetime.now(UTC) + timedelta(minutes=5)).timestamp())
    payloads: list[object] = [
        [ids],
        "text",
        {"c": ids["c"], "r": ids["r"]},
        {**ids, "c": "not-a-uuid", "e": later},
        {**ids, "e": str(later)},
        {**ids, "e": float(later)},
        {**ids, "e": True},
        {**ids, "e": 10**30},
        {**ids, "e": -1},
        {**ids, "s": 7, "e": later},
        {**ids, "s": "a\x00b", "e": later},
        {**ids, "s": "a\ud800b", "e": later},
    ]
    raw = [json.dumps(p).encode() for p in payloads]
    raw += [b"not json", b"\xff\xfe", b"[" * 20_000, b'{"e": 1' + b"0" * 5000 + b"}"]
    for payload in raw:
        for method in ("GET", "HEAD"):
            response = await world.vault.request(method, f"/v1/media/{_signed(payload, key)}")
            assert response.status_code == 403, (payload[:40], response.text)
            assert response.headers["content-type"] == "application/problem+json"


async def _media_url(world: World) -> tuple[str, int]:
    own = world.own
    recording = await _upload(world, own)
    opened = await world.vault.post(
        f"{own.path}/recordings/{recording}/consultations",
        headers=own.headers("habilite"),
        json={"motif": "vérification"},
    )
    assert opened.status_code == 201, opened.text
    size = await world.vault.get(f"{own.path}/recordings/{recording}", headers=own.headers("dpo"))
    return opened.json()["url"], size.json()["size"]


async def test_an_unsatisfiable_range_is_a_problem(world: World) -> None:
    url, size = await _media_url(world)
    for method in ("GET", "HEAD"):
        for asked in (f"bytes={size}-", "bytes=-0", f"bytes={'9' * 5000}-"):
            response = await world.vault.request(method, url, headers={"Range": asked})
            assert response.status_code == 416, (method, asked)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.headers["content-range"] == f"bytes */{size}"
            assert response.headers["x-content-type-options"] == "nosniff"
            if method == "GET":
                assert response.json()["status"] == 416


async def test_media_is_served_as_a_clip_never_as_a_page(
    world: World, connection: AsyncConnection
) -> None:
    """The type a dock declared comes back, with nosniff; one that is not a clip's (a row kept
    from before ingest checked it) is served as opaque bytes."""
    url, _ = await _media_url(world)
    served = await world.vault.get(url)
    assert served.headers["content-type"] == "video/mp4"
    assert served.headers["x-content-type-options"] == "nosniff"
    await connection.execute(update(Recording).values(content_type="text/html"))
    served = await world.vault.get(url)
    assert served.status_code == 200
    assert served.headers["content-type"] == "application/octet-stream"
    assert served.headers["x-content-type-options"] == "nosniff"


async def test_search_pages_are_newest_first_each_recording_once(world: World) -> None:
    """Page after page (the page's ids found first, then their rows: shared/db.py `page`), the
    whole selection in its order, newest first and the id breaking ties, none twice."""
    own = world.own
    now = datetime.now(UTC).replace(microsecond=0)
    starts = [now - timedelta(hours=h) for h in (5, 1, 3, 3, 2, 4, 3)]  # three at the same time
    for n, started in enumerate(starts):
        address = "Rue Jean Jaurès" if n % 2 else "Place de l'Hôtel de Ville"
        await _upload(
            world, own, started_at=started, ended_at=started + timedelta(minutes=1),
            place={"latitude": 48.7798, "longitude": 2.3376, "address": address},
        )  # fmt: skip
    for params in ({}, {"place": "jaurès"}):
        paged: list[dict[str, object]] = []
        total = None
        for offset in range(0, 10, 2):
            found = await world.vault.get(
                f"{own.path}/recordings",
                headers=own.headers("responsable"),
                params={**params, "limit": 2, "offset": offset},
            )
            assert found.status_code == 200, found.text
            paged += found.json()["items"]
            total = found.json()["total"]
        expected = sorted(
            paged, key=lambda r: (-datetime.fromisoformat(str(r["started_at"])).timestamp(),
                                  str(r["id"]))
        )  # fmt: skip
        assert total == len(paged) == (7 if not params else 3), params
        assert [r["id"] for r in paged] == [r["id"] for r in expected], params
        assert len({r["id"] for r in paged}) == len(paged)


async def _ids(world: World, kit: OrgKit, role: str = "responsable", **params: str) -> set[str]:
    found = await world.vault.get(
        f"{kit.path}/recordings", headers=kit.headers(role), params=params
    )
    assert found.status_code == 200, found.text
    return {item["id"] for item in found.json()["items"]}


async def test_search_for_what_needs_attention(world: World, connection: AsyncConnection) -> None:
    """Accueil's lists (issue 17): received since a time, by station; erased within days unless
    a procedure holds it; damaged by the scrub. Bad values are 422."""
    own = world.own
    now = datetime.now(UTC)
    old, fresh, damaged = [await _upload(world, own) for _ in range(3)]
    rows = {
        old: {"received_at": now - timedelta(days=2), "retain_until": now + timedelta(days=2)},
        fresh: {
            "received_at": now - timedelta(minutes=5),
            "retain_until": now + timedelta(days=29),
        },
        damaged: {"status": "damaged", "retain_until": now + timedelta(days=1)},
    }
    for recording, values in rows.items():
        await connection.execute(
            update(Recording).where(Recording.id == uuid.UUID(recording)).values(**values)
        )
    since = (now - timedelta(hours=1)).isoformat()
    assert await _ids(world, own, received_since=since) == {fresh, damaged}
    assert await _ids(world, own, received_since=since, station_id=str(own.station_id)) == {
        fresh,
        damaged,
    }
    assert await _ids(world, own, station_id=str(uuid.uuid4())) == set()
    soon = (now + timedelta(days=5)).isoformat()
    # The damaged one is the scrub's list; the sealed one is erased within 5 days.
    assert await _ids(world, own, erasure_before=soon) == {old}
    assert await _ids(world, own, "dpo", status="damaged") == {damaged}
    # A wearer: only their own, in every list.
    assert await _ids(world, own, "agent", erasure_before=soon) == {old}
    # Attached to an open procedure, it is no longer going: the list says so.
    opened = await world.vault.post(
        f"{own.path}/procedures",
        headers=own.headers("responsable"),
        json={"type": "judiciaire", "reference": "PV-ACCUEIL"},
    )
    assert opened.status_code == 201, opened.text
    attached = await world.vault.post(
        f"{own.path}/procedures/{opened.json()['id']}/recordings",
        headers=own.headers("habilite"),
        json={"recording_id": old, "qualification": "outrage"},
    )
    assert attached.status_code == 201, attached.text
    assert await _ids(world, own, erasure_before=soon) == set()
    for name, value in (
        ("received_since", "hier"),
        ("received_since", "2026-11-30T10:00:00"),  # no time zone
        ("erasure_before", "2026-13-01T00:00:00Z"),
        ("station_id", "station-1"),
    ):
        refused = await world.vault.get(
            f"{own.path}/recordings", headers=own.headers("dpo"), params={name: value}
        )
        assert refused.status_code == 422, (name, value, refused.text)
        assert refused.json()["errors"][0]["field"] == f"query.{name}", refused.json()
