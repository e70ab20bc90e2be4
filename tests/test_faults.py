"""Faults and decisions through the in-process apps: a viewer's standing checked at every
media request, ingest's reading of the vault's answers, tus termination, and the sweep of the
store's stray multipart uploads."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.vault.recordings.resumable import ResumableService
from services.vault.recordings.service import RECORDINGS_PREFIX
from services.vault.settings import VaultSettings
from shared.audit import entries
from shared.storage import ObjectStore
from tests.fixtures.apps import ClientFactory, settings_for
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, World
from tests.fixtures.servers import Servers
from tests.test_tus import create, tus_headers


async def _upload(world: World, kit: OrgKit) -> str:
    data, metadata = make_clip(kit)
    response = await world.ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["recording_id"])


async def _consult(world: World, kit: OrgKit, recording_id: str, role: str) -> dict[str, str]:
    response = await world.vault.post(
        f"{kit.path}/recordings/{recording_id}/consultations",
        headers=kit.headers(role),
        json={"motif": "vérification d'un signalement", "purpose": "compte_rendu"},
    )
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


async def _refusals(connection: AsyncConnection, kit: OrgKit) -> list[str]:
    rows = await connection.execute(
        select(entries.c.details).where(
            entries.c.organisation_id == kit.id, entries.c.action == "access_refused"
        )
    )
    return [row.details["reason"] for row in rows if row.details["path"].startswith("/v1/media/")]


async def test_a_withdrawn_habilitation_stops_its_media_url_at_once(
    world: World, connection: AsyncConnection
) -> None:
    kit = world.own
    recording_id = await _upload(world, kit)
    url = (await _consult(world, kit, recording_id, "habilite"))["url"]
    assert (await world.vault.get(url, headers={"Range": "bytes=0-99"})).status_code == 206

    withdrawn = await world.vault.post(
        f"{kit.path}/habilitations/{kit.habilitation_id}/withdraw",
        headers=kit.headers("responsable"),
        json={"reason": "fin de mission"},
    )
    assert withdrawn.status_code == 200, withdrawn.text
    for method in ("GET", "HEAD"):
        refused = await world.vault.request(method, url, headers={"Range": "bytes=0-99"})
        assert refused.status_code == 403, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
    assert any("habilite" in reason for reason in await _refusals(connection, kit))


async def test_a_closed_consultation_and_wearer_access_withdrawn(
    world: World, connection: AsyncConnection
) -> None:
    kit = world.own
    recording_id = await _upload(world, kit)
    consultation = await _consult(world, kit, recording_id, "responsable")
    assert (await world.vault.head(consultation["url"])).status_code == 200
    path = f"{kit.path}/recordings/{recording_id}/consultations/{consultation['id']}"
    # Only its viewer closes it; anyone else is told it does not exist.
    assert (await world.vault.delete(path, headers=kit.headers("maire"))).status_code == 404
    assert (await world.vault.delete(path, headers=kit.headers("responsable"))).status_code == 204
    assert (await world.vault.head(consultation["url"])).status_code == 403

    # A wearer's access lasts only while the service allows it.
    organisation = (await world.vault.get(kit.path, headers=kit.headers("maire"))).json()
    allow = {k: organisation[k] for k in ("name", "departement", "communes")}
    await world.vault.put(
        kit.path, headers=kit.headers("maire"), json={**allow, "wearer_access": True}
    )
    own_view = await _consult(world, kit, recording_id, "agent")
    assert (await world.vault.head(own_view["url"])).status_code == 200
    await world.vault.put(
        kit.path, headers=kit.headers("maire"), json={**allow, "wearer_access": False}
    )
    assert (await world.vault.head(own_view["url"])).status_code == 403
    reasons = await _refusals(connection, kit)
    assert any("closed" in r for r in reasons) and any("wearers" in r for r in reasons)


async def test_a_consultation_gives_an_absolute_media_url(
    world: World, client_for: ClientFactory
) -> None:
    """``media_url`` is absolute: the address the request came to, or VAULT_PUBLIC_URL (the
    vault behind a proxy); ``url`` stays relative for the clients that use it."""
    kit = world.own
    recording_id = await _upload(world, kit)
    consulted = await _consult(world, kit, recording_id, "habilite")
    assert consulted["url"].startswith("/v1/media/")
    assert consulted["media_url"] == str(world.vault.base_url).rstrip("/") + consulted["url"]
    assert (await world.vault.head(consulted["media_url"])).status_code == 200
    async with client_for("vault", public_url="https://temoin.example.fr/vault/") as proxied:
        behind = await proxied.post(
            f"{kit.path}/recordings/{recording_id}/consultations",
            headers=kit.headers("habilite"),
            json={"motif": "vérification d'un signalement"},
        )
    assert behind.status_code == 201, behind.text
    assert behind.json()["media_url"] == "https://temoin.example.fr/vault" + behind.json()["url"]


def _vault_answering(*answers: httpx.Response | Exception) -> httpx.MockTransport:
    """A vault that answers each of ``answers`` in turn (the first: the upload's creation)."""
    remaining = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        answer = remaining.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return httpx.MockTransport(handle)


async def test_ingest_tells_the_dock_final_from_passing(
    world: World, client_for: ClientFactory
) -> None:
    """A refusal of the vault reaches the dock as the same 4xx; a vault that is away or
    unavailable is a 503 with Retry-After; one that fails on the request is a 502."""
    kit = world.own
    data, metadata = make_clip(kit)
    errors = [{"field": "metadata.camera_serial", "message": "no such camera"}]
    problem = {"type": "https://temoin.fr/problems/invalid-input", "title": "Invalid input",
               "status": 422, "detail": "no such camera", "errors": errors}  # fmt: skip
    cases: list[tuple[httpx.Response | Exception, int, str | None]] = [
        (httpx.Response(422, json=problem), 422, None),
        (httpx.Response(403, json={**problem, "status": 403, "detail": "revoked"}), 403, None),
        (httpx.Response(404, text="not json at all"), 404, None),
        (httpx.Response(503, headers={"Retry-After": "7"}, json={}), 503, "7"),
        (httpx.Response(504, text="gateway timeout"), 503, "5"),
        (httpx.ConnectError("refused"), 503, "5"),
        (httpx.ReadTimeout("slow"), 503, "5"),
        (httpx.Response(500, json={"title": "Internal error"}), 502, None),
        (httpx.Response(401, json={}), 503, "5"),  # ingest's own credential: not the dock's
    ]
    for answer, status, retry_after in cases:
        async with client_for("ingest", vault_transport=_vault_answering(answer)) as ingest:
            response = await ingest.post(
                "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
            )
        assert response.status_code == status, (answer, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers.get("Retry-After") == retry_after, answer
        if status == 422:
            assert response.json()["errors"] == problem["errors"]


async def test_a_second_tus_termination_is_gone(world: World) -> None:
    kit = world.own
    _, metadata = make_clip(kit)
    location = await create(world, kit, metadata)
    assert (await world.ingest.delete(location, headers=tus_headers(kit))).status_code == 204
    for method in ("DELETE", "HEAD"):
        again = await world.ingest.request(method, location, headers=tus_headers(kit))
        assert again.status_code == 410, (method, again.text)


async def test_the_sweep_aborts_multipart_uploads_no_session_owns(
    world: World, session: AsyncSession, servers: Servers
) -> None:
    """A crash between the store's start of a multipart upload and the commit of the session
    that owns it leaves one no row knows of: the sweep aborts it, and only it."""
    kit = world.own
    store = ObjectStore(servers.storage)
    stray_key = f"{RECORDINGS_PREFIX}{kit.id}/{uuid.uuid4()}.sealed"
    stray = await store.start_multipart(stray_key, retain_until=datetime.now(UTC) + timedelta(1))
    await store.upload_part(stray_key, stray, 1, bytearray(b"x" * 1000))
    _, metadata = make_clip(kit)
    owned = (await create(world, kit, metadata)).rsplit("/", 1)[1]

    def listed() -> set[str]:
        return {key for key, _, _ in uploads if key.startswith(f"{RECORDINGS_PREFIX}{kit.id}/")}

    uploads = await store.list_multipart_uploads(RECORDINGS_PREFIX)
    assert stray_key in listed() and len(listed()) == 2
    settings = settings_for("vault", servers)
    assert isinstance(settings, VaultSettings)
    service = ResumableService(session, store, settings)
    # Recent ones are left alone: a creation may be between its start and its commit.
    assert stray_key not in await service.sweep_store(timedelta(hours=1))
    assert stray_key in await service.sweep_store(timedelta(0))
    uploads = await store.list_multipart_uploads(RECORDINGS_PREFIX)
    assert stray_key not in listed() and len(listed()) == 1  # the open session's is kept
    state = await world.ingest.head(f"/v1/uploads/{owned}", headers=tus_headers(kit))
    assert state.status_code == 200
