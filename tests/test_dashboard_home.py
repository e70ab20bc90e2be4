"""Accueil (issue 17): what needs attention, each list as the vault answers it for the person's
token: today's clips by station, recordings erased soon (« qualifier »), damaged objects, open
procedures, silent stations; and the player's page, a GET that says when its link expired."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from nacl.signing import SigningKey
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from services.dashboard.api.client import ApiClient, ApiProblem
from services.dashboard.auth.sessions import Person
from services.dashboard.home.attention import gather
from services.dashboard.kit.templating import PARIS
from services.vault.recordings.models import Recording
from shared.signatures import public_key_of
from tests.fixtures.apps import ClientFactory
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, build_org
from tests.fixtures.oidc import OidcProvider, open_browser
from tests.fixtures.servers import Servers
from tests.test_authorization_matrix import prepare_recordings
from tests.test_dashboard_pages import Scene, _checked, _csrf


@dataclass
class Office:
    """An organisation with what Accueil lists: the held clip of prepare_recordings, one
    received today, one erased in two days, one damaged, a station that never uploaded."""

    scene: Scene
    vault: httpx.AsyncClient
    today: str
    soon: str
    damaged: str
    silent_station: str
    open_procedures: int


async def _upload(ingest: httpx.AsyncClient, kit: OrgKit) -> str:
    data, metadata = make_clip(kit)
    response = await ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["recording_id"])


@pytest.fixture
async def office(
    client_for: ClientFactory,
    servers: Servers,
    oidc_provider: OidcProvider,
    connection: AsyncConnection,
) -> AsyncIterator[Office]:
    async with client_for("vault") as vault:
        async with client_for("ingest", vault_transport=vault._transport) as ingest:  # noqa: SLF001
            kit = await build_org(vault, ingest, servers)
            await prepare_recordings(vault, ingest, kit)
            today, soon, damaged = [await _upload(ingest, kit) for _ in range(3)]
        now = datetime.now(UTC)
        yesterday = now - timedelta(days=1, hours=1)
        # Only `today` came in today; the held clip of prepare_recordings too is yesterday's.
        await connection.execute(
            update(Recording)
            .where(Recording.organisation_id == kit.id, Recording.id != uuid.UUID(today))
            .values(received_at=yesterday)
        )
        await connection.execute(
            update(Recording)
            .where(Recording.id == uuid.UUID(soon))
            .values(retain_until=now + timedelta(days=2))
        )
        await connection.execute(
            update(Recording)
            .where(Recording.id == uuid.UUID(damaged))
            .values(status="damaged", checked_at=now - timedelta(hours=2))
        )
        silent = await vault.post(
            f"{kit.path}/stations",
            headers=kit.headers("responsable"),
            json={"name": "Dock du poste Sud", "public_key": public_key_of(SigningKey.generate())},
        )
        assert silent.status_code == 201, silent.text
        procedures = await vault.get(
            f"{kit.path}/procedures", headers=kit.headers("dpo"), params={"open_only": True}
        )
        open_procedures = procedures.json()["total"]
        assert open_procedures > 1  # prepare_recordings' (the test says « procédures »)
        async with open_browser(oidc_provider, client_for, servers.database_url) as browser:
            yield Office(
                Scene(kit=kit, browser=browser),
                vault,
                today,
                soon,
                damaged,
                silent.json()["id"],
                open_procedures,
            )


def _section(text: str, title: str) -> str:
    """The panel of Accueil whose heading starts with ``title`` (empty when not shown)."""
    match = re.search(rf"<h2 id=\"[\w-]+\">{re.escape(title)}.*?</section>", text, re.S)
    return match.group(0) if match else ""


async def test_accueil_shows_each_role_what_needs_attention(office: Office) -> None:
    scene, kit = office.scene, office.scene.kit
    station = f"Dock {kit.id.hex[:8]}"
    for role in ("maire", "responsable", "habilite", "dpo", "agent"):
        text = _checked(await scene.as_role(role))
        received = _section(text, "Reçus aujourd'hui")
        assert "1 enregistrement reçu depuis minuit" in received, (role, received)
        erased = _section(text, "Effacés d'ici le")
        damaged = _section(text, "Objets endommagés")
        procedures = _section(text, "Procédures ouvertes")
        silent = _section(text, "Stations sans dépôt depuis 3 jours")
        actions = _section(text, "Ce que vous pouvez faire")
        shown = set(re.findall(r'<li><a href="(/[a-z]+)">', actions))
        expected = {
            "maire": {"/enregistrements", "/procedures", "/annuaire", "/rapport"},
            "responsable": {"/enregistrements", "/procedures", "/annuaire", "/rapport", "/journal"},
            "habilite": {"/enregistrements", "/procedures"},
            "dpo": {"/enregistrements", "/procedures", "/journal"},
            "agent": {"/enregistrements"},
        }
        assert shown == expected[role], (role, actions)
        if role in ("maire", "responsable", "dpo"):
            # By station, with the link to exactly those clips.
            assert f'<th scope="row">{station}</th>' in received, (role, received)
            assert f"station={kit.station_id}" in received
            assert "Dock du poste Sud" in silent and "aucun dépôt depuis" in silent, silent
            assert station not in silent  # it uploaded today
        else:
            assert silent == "" and '<th scope="row">' not in received, role
        if role == "agent":
            # The wearer's own clip came today; the service's lists are not theirs.
            assert erased == damaged == procedures == "", role
            assert "Seulement les vôtres" in received
            continue
        assert f'href="/enregistrements/{office.soon}"' in erased, (role, erased)
        assert str(kit.recording_id) not in erased  # held by the open procedure
        assert office.damaged not in erased  # damaged: the scrub's list
        assert ("Qualifier" in erased) == (role != "dpo"), role
        if role != "dpo":
            assert f'href="/enregistrements/{office.soon}#procedures-titre"' in erased
        assert f'href="/enregistrements/{office.damaged}"' in damaged, (role, damaged)
        assert f"{office.open_procedures} procédures ouvertes" in procedures, (role, procedures)
        assert "PV-" in procedures
        # « Voir tout » leads to the search with the same filters, which finds the same ones.
        more = re.search(r'<a href="(/enregistrements\?effacement_avant=[^"]+)">Voir tout', erased)
        assert more, erased
        listing = _checked(await scene.browser.http.get(more.group(1)))
        assert "1 enregistrement</h2>" in listing and office.soon in listing, role


async def test_the_search_takes_accueil_filters_and_refuses_bad_ones(office: Office) -> None:
    scene, kit = office.scene, office.scene.kit
    await scene.as_role("responsable")
    today = datetime.now(PARIS).date().isoformat()
    by_station = _checked(
        await scene.browser.http.get(
            "/enregistrements", params={"recus_depuis": today, "station": str(kit.station_id)}
        )
    )
    assert f"Dock {kit.id.hex[:8]}" in by_station and "Retirer ce filtre" in by_station
    assert office.today in by_station and office.soon not in by_station
    damaged = _checked(await scene.browser.http.get("/enregistrements?statut=damaged"))
    assert office.damaged in damaged and office.today not in damaged
    bad = await scene.browser.http.get("/enregistrements?recus_depuis=hier&station=x")
    text = _checked(bad)
    assert 'href="#champ-recus_depuis"' in text and "Date de réception invalide." in text
    assert "Station d'accueil inconnue." in text


async def test_the_player_page_says_when_its_link_has_expired(office: Office) -> None:
    scene, kit = office.scene, office.scene.kit
    await scene.as_role("habilite")
    path = f"/enregistrements/{office.today}/visionner"
    form = await scene.browser.http.get(path)
    opened = await scene.browser.http.post(
        path,
        data={"csrf_token": _csrf(form), "motif": "Contrôle du lien"},
        follow_redirects=False,
    )
    assert opened.status_code == 303
    player = opened.headers["location"]
    assert re.fullmatch(rf"/enregistrements/{office.today}/lecture/[\w-]+", player), player
    page = await scene.browser.http.get(player)
    text = _checked(page)
    assert page.status_code == 200 and "<video controls" in text
    assert '<label for="vitesse">Vitesse de lecture</label>' in text
    assert "Le lien de lecture a expiré" in text  # the notice lecteur.js shows, hidden
    assert re.search(r'id="lien-expire" role="alert" hidden', text)
    # Reloading shows the same consultation: no second one is opened.
    assert _checked(await scene.browser.http.get(player)).count("/v1/media/") == 1

    # The link's time has passed (as in the session): the page says so instead of the player.
    def link_expired(data: dict[str, Any]) -> None:
        for consultation in data["consultations"].values():
            consultation["expires_at"] = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()

    await scene.browser.edit_session(link_expired)
    expired = await scene.browser.http.get(player)
    text = _checked(expired)
    assert expired.status_code == 200
    assert "<video" not in text and "/v1/media/" not in text
    assert "Le lien de lecture a expiré" in text
    assert f'href="/enregistrements/{office.today}/visionner" id="nouveau-visionnage"' in text
    # Another recording's page, or a consultation this session never opened: the same offer.
    consultation = player.rsplit("/", 1)[1]
    for elsewhere in (
        f"/enregistrements/{kit.recording_id}/lecture/{consultation}",
        f"/enregistrements/{office.today}/lecture/{uuid.uuid4()}",
    ):
        unknown = await scene.browser.http.get(elsewhere)
        assert unknown.status_code == 410, unknown.text
        assert "Ce visionnage n'est plus ouvert" in _checked(unknown)


class _Refusing(ApiClient):
    """A vault that refuses the procedures (a role withdrawn between two calls) and answers
    every other list with nothing."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def get(self, path: str, what: str, **kwargs: Any) -> Any:
        self.asked.append(path.rsplit("/", 1)[1])
        if path.endswith("/procedures"):
            raise ApiProblem(403, "Vous n'avez pas accès aux procédures.")
        return {"items": [], "total": 0}


async def test_a_refused_list_is_explained_and_the_others_shown() -> None:
    person = Person("s", "Nom", str(uuid.uuid4()), "94", ("responsable",), {})
    vault = _Refusing()
    found = await gather(
        vault, person, "/v1/organisations/x", now=datetime.now(UTC), erasure_days=7, stale_days=3
    )
    assert found.lists["procedures"].refused == "Vous n'avez pas accès aux procédures."
    assert found.lists["effacement"].refused is None and found.lists["effacement"].total == 0
    assert found.by_station == []
    # A wearer is asked only what the vault lets a wearer read: no refusal logged for nothing.
    wearer = _Refusing()
    await gather(
        wearer,
        Person("w", "Porteur", str(uuid.uuid4()), "94", ("agent",), {}),
        "/v1/organisations/x",
        now=datetime.now(UTC),
        erasure_days=7,
        stale_days=3,
    )
    assert wearer.asked == ["recordings"]
