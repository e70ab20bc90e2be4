"""The dashboard's pages for each role, with a real organisation and a real recording in the
vault: what each role sees is what the vault answers for their own token; refusals are said
in French; no token ever appears in a page; every answer has the strict security headers."""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from tests.fixtures.apps import ClientFactory
from tests.fixtures.directory import OrgKit, build_org
from tests.fixtures.oidc import Browser, OidcProvider, open_browser, person_claims
from tests.fixtures.servers import Servers
from tests.test_authorization_matrix import prepare_recordings

# The directory's subjects of build_org's people (tests/fixtures/directory.py).
SUBJECTS = {
    "maire": "maire-{tag}",
    "responsable": "responsable-{tag}",
    "habilite": "habilite-{tag}",
    "agent": "wearer-{tag}",
    "dpo": "dpo-{tag}",
    "prefecture": "prefecture-{tag}",
}
JWT = re.compile(r"eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+")
PLAYER = re.compile(r"^/enregistrements/[\w-]+/lecture/[\w-]+$")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' http://127.0.0.1:8720; frame-ancestors 'none'"
)


@dataclass
class Scene:
    kit: OrgKit
    browser: Browser

    async def as_role(self, role: str) -> httpx.Response:
        self.browser.http.cookies.clear()
        subject = SUBJECTS[role].format(tag=self.kit.id.hex[:8])
        claims = person_claims(self.kit.id, role, name=f"Personne {role}")
        if role == "prefecture":
            claims = {"name": "Préfecture", "roles": ["prefecture"], "departement": "94"}
        page = await self.browser.sign_in(subject, **claims)
        assert page.status_code == 200, page.text
        return page


@pytest.fixture
async def scene(
    client_for: ClientFactory, servers: Servers, oidc_provider: OidcProvider
) -> AsyncIterator[Scene]:
    async with client_for("vault") as vault:
        async with client_for("ingest", vault_transport=vault._transport) as ingest:  # noqa: SLF001
            kit = await build_org(vault, ingest, servers)
            await prepare_recordings(vault, ingest, kit)
        async with open_browser(oidc_provider, client_for, servers.database_url) as browser:
            yield Scene(kit=kit, browser=browser)


def _checked(page: httpx.Response) -> str:
    """The page's text, after the checks every page passes."""
    policy = page.headers["content-security-policy"]
    assert policy.startswith(CSP), policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"
    text = page.text
    # No JWT (access or ID token: header.claims.signature); the media URL's grant is a
    # two-part capability made for the browser, not a token.
    assert not JWT.search(text), JWT.search(text)
    assert "Traceback" not in text
    # The one script: the player's own file (no inline script anywhere, the CSP forbids it).
    player_script = '<script src="/static/lecteur.js" defer></script>'
    if PLAYER.search(page.url.path):
        text = text.replace(player_script, "", 1)
    assert "<script" not in text and "style=" not in text and "<style" not in text
    assert '<html lang="fr">' in text
    return html.unescape(text)


def _csrf(page: httpx.Response) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


async def test_each_role_sees_what_the_vault_answers(scene: Scene) -> None:
    kit = scene.kit
    recording = f"/enregistrements/{kit.recording_id}"
    for role in ("maire", "responsable", "habilite", "agent", "dpo"):
        home = _checked(await scene.as_role(role))
        assert "Police municipale de L'Haÿ-les-Roses" in home, role
        assert 'href="#contenu"' in home and '<main id="contenu"' in home

        listing = await scene.browser.http.get("/enregistrements")
        text = _checked(listing)
        assert listing.status_code == 200, (role, text)
        assert f'href="{recording}"' in text, role
        assert "1 enregistrement" in text

        page = await scene.browser.http.get(recording)
        text = _checked(page)
        assert page.status_code == 200, (role, text)
        assert "Données enregistrées (article R241-10)" in text
        assert "PV-" in text or "Vous n'avez pas accès aux procédures" in text
        # Who may read the history is the vault's decision: the page shows its answer.
        if role in ("responsable", "dpo"):
            assert "Consultation" in text, role  # its French label (kit/words.py)
        else:
            assert "Vous n'avez pas accès à l'historique" in text, role
        viewing = 'id="visionner"' in text
        assert viewing == (role != "dpo"), role


async def test_viewing_asks_for_a_motif_then_opens_the_player(scene: Scene) -> None:
    await scene.as_role("habilite")
    path = f"/enregistrements/{scene.kit.recording_id}/visionner"
    form = await scene.browser.http.get(path)
    text = _checked(form)
    assert '<label for="champ-motif">Motif du visionnage</label>' in text
    assert "finalite" not in text  # not a wearer: no purpose to choose

    empty = await scene.browser.http.post(path, data={"csrf_token": _csrf(form), "motif": ""})
    assert empty.status_code == 422
    text = _checked(empty)
    assert 'href="#champ-motif"' in text and 'aria-invalid="true"' in text

    forged = await scene.browser.http.post(path, data={"motif": "sans jeton"})
    assert forged.status_code == 403
    assert "Ce formulaire a expiré" in _checked(forged)

    opened = await scene.browser.http.post(
        path, data={"csrf_token": _csrf(form), "motif": "Réquisition du 3 mars"}
    )
    text = _checked(opened)
    assert opened.status_code == 200, text
    match = re.search(r'<video controls preload="metadata" src="([^"]+)"', text)
    assert match and "/v1/media/" in match.group(1)
    assert "« Réquisition du 3 mars »" in text


async def test_a_wearer_chooses_one_of_the_four_purposes(scene: Scene) -> None:
    await scene.as_role("agent")
    path = f"/enregistrements/{scene.kit.recording_id}/visionner"
    form = await scene.browser.http.get(path)
    text = _checked(form)
    assert "loi n° 2021-646 du 25 mai 2021, article 45" in text
    assert text.count('name="finalite"') == 4

    missing = await scene.browser.http.post(
        path, data={"csrf_token": _csrf(form), "motif": "compte rendu"}
    )
    assert missing.status_code == 422
    assert "Choisissez la finalité du visionnage." in _checked(missing)

    opened = await scene.browser.http.post(
        path,
        data={"csrf_token": _csrf(form), "motif": "compte rendu", "finalite": "compte_rendu"},
    )
    assert opened.status_code == 200, opened.text
    assert "<video controls" in _checked(opened)


async def test_an_api_refusal_is_said_in_french(scene: Scene) -> None:
    await scene.as_role("prefecture")
    page = await scene.browser.http.get("/enregistrements")
    assert page.status_code == 403
    text = _checked(page)
    assert "Votre compte ne désigne aucune organisation" in text
    assert 'href="/enregistrements"' not in text  # not in the préfecture's navigation

    await scene.as_role("dpo")
    refused = await scene.browser.http.get(f"/enregistrements/{scene.kit.recording_id}/visionner")
    form = _checked(refused)
    posted = await scene.browser.http.post(
        f"/enregistrements/{scene.kit.recording_id}/visionner",
        data={"csrf_token": _csrf(refused), "motif": "contrôle"},
    )
    assert posted.status_code == 403
    assert "Vous n'avez pas accès au visionnage de cet enregistrement." in _checked(posted)
    assert form


async def test_unknown_pages_and_anonymous_visits(scene: Scene) -> None:
    http = scene.browser.http
    http.cookies.clear()
    for path in ("/", "/au-revoir", "/page-inconnue", "/static/temoin.css"):
        response = await http.get(path)
        assert response.headers["content-security-policy"].startswith(CSP), path
        assert response.headers["x-frame-options"] == "DENY"
    assert (await http.get("/page-inconnue")).status_code == 404
    redirected = await http.get("/enregistrements", follow_redirects=False)
    assert redirected.status_code == 303
    assert redirected.headers["location"] == "/connexion?suite=/enregistrements"


async def test_an_expired_access_token_sends_the_person_to_sign_in_again(scene: Scene) -> None:
    await scene.as_role("responsable")
    assert (await scene.browser.http.get("/enregistrements")).status_code == 200
    session_id = scene.browser.session_id()
    await scene.browser.edit_session(lambda data: data["tokens"].update(expires_at=0))
    again = await scene.browser.http.get("/enregistrements", follow_redirects=False)
    assert again.status_code == 303
    assert again.headers["location"] == "/connexion?suite=/enregistrements"
    assert "Max-Age=0" in again.headers["set-cookie"]  # the session is gone, not kept
    assert await scene.browser.sessions.get(session_id) is None


async def test_the_responsable_designates_and_withdraws_habilitations(scene: Scene) -> None:
    kit = scene.kit
    habilite, wearer = kit.agents["habilite"], kit.agents["wearer"]
    page = await scene.as_role("responsable")
    annuaire = await scene.browser.http.get("/annuaire")
    text = _checked(annuaire)
    assert annuaire.status_code == 200, text
    assert f"CAM-{kit.id.hex[:8]}" in text and f"Dock {kit.id.hex[:8]}" in text
    assert "habilité depuis le" in text
    assert f'action="/annuaire/habilitations/{kit.habilitation_id}/retrait"' in text
    token = _csrf(annuaire)

    empty = await scene.browser.http.post(
        f"/annuaire/habilitations/{kit.habilitation_id}/retrait", data={"csrf_token": token}
    )
    assert empty.status_code == 422
    assert f'href="#champ-retrait-{kit.habilitation_id}"' in _checked(empty)

    withdrawn = await scene.browser.http.post(
        f"/annuaire/habilitations/{kit.habilitation_id}/retrait",
        data={"csrf_token": token, "motif": "mutation dans une autre commune"},
    )
    assert withdrawn.status_code == 200
    text = _checked(withdrawn)
    assert "habilité depuis le" not in text
    assert f'action="/annuaire/agents/{habilite}/habilitation"' in text

    designated = await scene.browser.http.post(
        f"/annuaire/agents/{wearer}/habilitation",
        data={"csrf_token": token, "note": "consultation des enregistrements"},
    )
    assert "(consultation des enregistrements)" in _checked(designated)
    assert page


async def test_the_annuaire_shows_what_each_role_may_read(scene: Scene) -> None:
    await scene.as_role("maire")
    annuaire = await scene.browser.http.get("/annuaire")
    text = _checked(annuaire)
    assert "habilité depuis le" in text
    assert "Retirer l'habilitation" not in text  # the responsable designates, not the maire
    refused = await scene.browser.http.post(
        f"/annuaire/agents/{scene.kit.agents['wearer']}/habilitation",
        data={"csrf_token": _csrf(annuaire)},
    )
    assert refused.status_code == 403
    assert "Vous n'avez pas accès à la désignation d'agents." in _checked(refused)

    await scene.as_role("habilite")
    text = _checked(await scene.browser.http.get("/annuaire"))
    assert f"CAM-{scene.kit.id.hex[:8]}" in text  # cameras: yes
    assert "Vous n'avez pas accès à la liste des stations." in text
    assert "Habilitations : Vous n'avez pas accès aux habilitations." in text


class _Together(httpx.AsyncBaseTransport):
    """Around the vault: counts the calls of ``paths`` in flight at once. Each waits (a second
    at most) until ``wanted`` of them are there, so that calls made one after the other show
    as one at a time, whatever the machine's speed."""

    def __init__(self, inner: httpx.AsyncBaseTransport, paths: re.Pattern[str], wanted: int):
        self.inner, self.paths, self.wanted = inner, paths, wanted
        self.in_flight = self.most = 0
        self.all_there = asyncio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.paths.search(request.url.path):
            return await self.inner.handle_async_request(request)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= self.wanted:
            self.all_there.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_there.wait(), 1.0)
            return await self.inner.handle_async_request(request)
        finally:
            self.in_flight -= 1


async def test_a_recordings_page_asks_the_vault_for_its_parts_together(
    client_for: ClientFactory, servers: Servers, oidc_provider: OidcProvider
) -> None:
    """The recording, its procedures and its history do not depend on one another: the page
    waits for the slowest of them, not for their sum (`make bench-dashboard`)."""
    async with client_for("vault") as vault:
        async with client_for("ingest", vault_transport=vault._transport) as ingest:  # noqa: SLF001
            kit = await build_org(vault, ingest, servers)
            await prepare_recordings(vault, ingest, kit)
    parts = re.compile(r"/recordings/[^/]+$|/procedures$|/audit/entries$")
    watched: list[_Together] = []

    def wrap(inner: httpx.AsyncBaseTransport) -> httpx.AsyncBaseTransport:
        watched.append(_Together(inner, parts, wanted=3))
        return watched[-1]

    async with open_browser(
        oidc_provider, client_for, servers.database_url, wrap_vault=wrap
    ) as browser:
        scene = Scene(kit=kit, browser=browser)
        await scene.as_role("responsable")
        page = await browser.http.get(f"/enregistrements/{kit.recording_id}")
        text = _checked(page)
        assert page.status_code == 200, text
        assert "Données enregistrées (article R241-10)" in text and "Consultation" in text
        assert watched[0].most == 3
        # Refused or missing, it says so in French all the same.
        missing = await browser.http.get(f"/enregistrements/{uuid.uuid4()}")
        assert missing.status_code == 404
        assert "Introuvable : cet enregistrement n'existe pas ou plus." in _checked(missing)
