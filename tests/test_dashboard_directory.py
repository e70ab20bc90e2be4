"""The Annuaire's forms (issue 17), with a real organisation in the vault: each form's success,
a value the vault refuses shown beside its field, a role the vault refuses said in French, and
a post without its CSRF token refused. The dashboard decides nothing: every refusal here is the
vault's answer for the person's own token."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from nacl.signing import SigningKey

from services.dashboard.directory.forms import agent_changes, paris_instant, public_key_text
from shared.signatures import public_key_of
from tests.fixtures.apps import ClientFactory
from tests.fixtures.directory import build_org, fresh_insee
from tests.fixtures.oidc import OidcProvider, open_browser
from tests.fixtures.servers import Servers
from tests.test_dashboard_pages import Scene, _checked, _csrf

EXPIRED = "Ce formulaire a expiré"


@pytest.fixture
async def scene(
    client_for: ClientFactory, servers: Servers, oidc_provider: OidcProvider
) -> AsyncIterator[Scene]:
    async with client_for("vault") as vault:
        async with client_for("ingest", vault_transport=vault._transport) as ingest:  # noqa: SLF001
            kit = await build_org(vault, ingest, servers, insee=fresh_insee())
        async with open_browser(oidc_provider, client_for, servers.database_url) as browser:
            yield Scene(kit=kit, browser=browser)


async def _token(scene: Scene, role: str, path: str = "/annuaire") -> str:
    """Sign in as ``role`` and take a CSRF token from a page they may read."""
    await scene.as_role(role)
    page = await scene.browser.http.get(path)
    assert page.status_code == 200, page.text
    return _csrf(page)


def _plain(text: str) -> str:
    """The page's words, without its tags (a date is a <time> inside a sentence)."""
    return re.sub(r"<[^>]+>", "", text)


def _beside(text: str, field: str) -> str:
    """The error shown beside ``field``, which the summary at the top links to."""
    assert f'href="#champ-{field}"' in text, text
    match = re.search(rf'<p class="error-message" id="erreur-{field}">(.*?)</p>', text, re.S)
    assert match, f"no error beside {field}"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


async def _post(
    scene: Scene, path: str, data: dict[str, str | list[str]], token: str | None
) -> httpx.Response:
    body = {**data, "csrf_token": token} if token is not None else data
    return await scene.browser.http.post(path, data=body, follow_redirects=False)


async def test_register_an_agent(scene: Scene) -> None:
    http = scene.browser.http
    token = await _token(scene, "maire", "/annuaire/agents/nouveau")
    fields = {"matricule": "PM-0042", "first_name": "Inès", "last_name": "Ferrand"}
    new = {**fields, "subject": "ines-ferrand", "roles": ["agent", "responsable"]}

    created = await _post(scene, "/annuaire/agents", new, token)
    assert created.status_code == 303, created.text
    page = await http.get(created.headers["location"])
    text = _checked(page)
    assert page.status_code == 200, text
    assert "<h1>Inès Ferrand</h1>" in text and "PM-0042" in text
    assert "Agent porteur de caméra, Responsable du service" in text
    assert "Cet agent n'a jamais été habilité." in text

    bad = await _post(scene, "/annuaire/agents", {**new, "matricule": "PM 42 é"}, token)
    assert bad.status_code == 422
    text = _checked(bad)
    assert "matricule" in _beside(text, "matricule")
    assert 'value="Inès"' in text  # what was typed is kept

    again = await _post(scene, "/annuaire/agents", new, token)
    assert again.status_code == 409
    assert "Ce n'est pas possible pour l'enregistrement des agents" in _checked(again)

    token = await _token(scene, "dpo")
    refused = await _post(scene, "/annuaire/agents", {**new, "matricule": "PM-0043"}, token)
    assert refused.status_code == 403
    assert "Vous n'avez pas accès à l'enregistrement des agents." in _checked(refused)
    assert "Enregistrer un agent" not in _checked(await http.get("/annuaire"))

    await scene.as_role("maire")
    forged = await _post(scene, "/annuaire/agents", {**new, "matricule": "PM-0044"}, None)
    assert forged.status_code == 403
    assert EXPIRED in _checked(forged)


async def test_edit_and_deactivate_an_agent(scene: Scene) -> None:
    wearer = scene.kit.agents["wearer"]
    path = f"/annuaire/agents/{wearer}"
    token = await _token(scene, "responsable", path)
    form = {
        "first_name": "Wearer",
        "last_name": "Renommé",
        "subject": f"wearer-{scene.kit.id.hex[:8]}",
    }

    changed = await _post(scene, path, {**form, "roles": ["agent"], "active": "non"}, token)
    assert changed.status_code == 303, changed.text
    text = _checked(await scene.browser.http.get(path))
    assert "<h1>Wearer Renommé</h1>" in text
    assert "<dt>État</dt><dd>désactivé</dd>" in text
    listing = _checked(await scene.browser.http.get("/annuaire"))
    assert 'Renommé</a> <span class="tag">désactivé</span>' in listing

    empty = await _post(scene, path, {**form, "first_name": " ", "active": "oui"}, token)
    assert empty.status_code == 422
    assert "prénom" in _beside(_checked(empty), "first_name")

    token = await _token(scene, "dpo", path)  # the DPO reads the page…
    refused = await _post(scene, path, {**form, "active": "oui"}, token)
    assert refused.status_code == 403  # …and may change nothing
    assert "Vous n'avez pas accès à la modification des agents." in _checked(refused)

    await scene.as_role("responsable")
    forged = await _post(scene, path, {**form, "active": "oui"}, None)
    assert forged.status_code == 403 and EXPIRED in _checked(forged)


async def test_the_habilitations_history(scene: Scene) -> None:
    kit = scene.kit
    token = await _token(scene, "responsable")
    withdrawn = await _post(
        scene,
        f"/annuaire/habilitations/{kit.habilitation_id}/retrait",
        {"motif": "mutation dans une autre commune"},
        token,
    )
    assert withdrawn.status_code in (200, 303), withdrawn.text
    await _post(scene, f"/annuaire/agents/{kit.agents['habilite']}/habilitation", {}, token)

    await scene.as_role("maire")
    text = _checked(await scene.browser.http.get("/annuaire"))
    history = text.split('id="historique"', 1)[1].split("</section>", 1)[0]
    # Newest first: the new designation in force, then the one withdrawn, with who and why.
    rows = history.split("<tr>")[2:]
    assert len(rows) == 2, history
    assert "en vigueur" in rows[0]
    assert "mutation dans une autre commune" in rows[1]
    responsable = f"Responsable Test {kit.id.hex[:8]}"  # the subject, shown as the agent's name
    assert rows[1].count(responsable) == 2  # granted by, withdrawn by

    agent = _checked(await scene.browser.http.get(f"/annuaire/agents/{kit.agents['habilite']}"))
    assert "mutation dans une autre commune" in agent

    await scene.as_role("habilite")
    refused = _checked(await scene.browser.http.get("/annuaire"))
    assert "Vous n'avez pas accès aux habilitations." in refused
    assert refused.count("Vous n'avez pas accès aux habilitations.") == 1  # said once
    assert "Historique des habilitations" not in refused


async def test_register_a_camera_and_change_its_status(scene: Scene) -> None:
    http = scene.browser.http
    token = await _token(scene, "responsable", "/annuaire/cameras/nouvelle")
    created = await _post(
        scene, "/annuaire/cameras", {"serial": "AX-77", "model": "Reveal D5"}, token
    )
    assert created.status_code == 303, created.text
    path = created.headers["location"]
    text = _checked(await http.get(path))
    assert (
        "<h1>Caméra AX-77</h1>" in text
        and "Cette caméra n'a encore été confiée à personne." in text
    )

    bad = await _post(scene, "/annuaire/cameras", {"serial": "", "model": "Reveal D5"}, token)
    assert bad.status_code == 422
    assert "numéro de série" in _beside(_checked(bad), "serial")

    retired = await _post(scene, f"{path}/etat", {"status": "retired"}, token)
    assert retired.status_code == 303
    text = _checked(await http.get(path))
    assert "<dt>État</dt><dd>retirée</dd>" in text
    assert "Confier la caméra" not in text  # a retired camera is worn by no one

    unknown = await _post(scene, f"{path}/etat", {"status": "cassée"}, token)
    assert unknown.status_code == 422
    assert "état" in _beside(_checked(unknown), "status")

    token = await _token(scene, "dpo")
    refused = await _post(scene, "/annuaire/cameras", {"serial": "AX-78", "model": "X"}, token)
    assert refused.status_code == 403
    assert "Vous n'avez pas accès à l'enregistrement des caméras." in _checked(refused)
    refused = await _post(scene, f"{path}/etat", {"status": "active"}, token)
    assert refused.status_code == 403
    assert "Vous n'avez pas accès à la modification des caméras." in _checked(refused)

    await scene.as_role("responsable")
    for target, data in (("/annuaire/cameras", {"serial": "AX-79", "model": "X"}),
                         (f"{path}/etat", {"status": "active"})):  # fmt: skip
        forged = await _post(scene, target, data, None)
        assert forged.status_code == 403 and EXPIRED in _checked(forged)


async def test_assign_a_camera_and_end_the_assignment(scene: Scene) -> None:
    kit = scene.kit
    http = scene.browser.http
    path = f"/annuaire/cameras/{kit.camera_id}"
    token = await _token(scene, "responsable", path)
    page = _plain(_checked(await http.get(path)))
    wearer = f"Wearer Test {kit.id.hex[:8]}"
    assert f"{wearer}, depuis le 1 janvier 2026 à 1\u00a0h\u00a000" in page  # Paris time
    assert "Terminer l'affectation en cours" in page
    assert "Confier la caméra" not in page  # worn until further notice: end that first

    early = await _post(
        scene, f"{path}/affectations/{kit.assignment_id}/fin", {"fin": "2025-12-31T12:00"}, token
    )
    assert early.status_code == 422
    assert "postérieures au début" in _beside(_checked(early), "fin")

    ended = await _post(
        scene, f"{path}/affectations/{kit.assignment_id}/fin", {"fin": "2026-02-01T18:30"}, token
    )
    assert ended.status_code == 303, ended.text
    page = _plain(_checked(await http.get(path)))
    assert "1 février 2026 à 18\u00a0h\u00a030" in page and "Terminer l'affectation" not in page

    habilite = str(kit.agents["habilite"])
    given = {"agent_id": habilite, "starts_at": "2026-02-02T08:00", "ends_at": ""}
    assigned = await _post(scene, f"{path}/affectations", given, token)
    assert assigned.status_code == 303, assigned.text
    page = _checked(await http.get(path))
    history = page.split('id="affectations"', 1)[1].split("</table>", 1)[0]
    rows = history.split("<tr>")[2:]
    assert len(rows) == 2  # who wore it when, newest first
    assert f"Habilite Test {kit.id.hex[:8]}" in rows[0] and "en cours" in rows[0]
    assert wearer in rows[1] and "1 février 2026" in rows[1]

    overlapping = await _post(scene, f"{path}/affectations", given, token)
    assert overlapping.status_code == 409
    assert "Ce n'est pas possible pour l'affectation des caméras" in _checked(overlapping)

    stranger = {**given, "agent_id": str(uuid.uuid4()), "starts_at": "2027-01-01T08:00"}
    unknown = await _post(scene, f"{path}/affectations", stranger, token)
    assert unknown.status_code == 422
    assert "agent en service" in _beside(_checked(unknown), "agent_id")

    missing = await _post(scene, f"{path}/affectations", {**given, "starts_at": ""}, token)
    assert missing.status_code == 422
    assert "heure de Paris" in _beside(_checked(missing), "starts_at")

    token = await _token(scene, "dpo", path)
    assert "Confier la caméra" not in _checked(await http.get(path))
    refused = await _post(
        scene, f"{path}/affectations", {**given, "starts_at": "2028-01-01T08:00"}, token
    )
    assert refused.status_code == 403
    assert "Vous n'avez pas accès à l'affectation des caméras." in _checked(refused)

    await scene.as_role("responsable")
    forged = await _post(scene, f"{path}/affectations", given, None)
    assert forged.status_code == 403 and EXPIRED in _checked(forged)


def _pem(key: SigningKey) -> str:
    der = bytes.fromhex("302a300506032b6570032100") + bytes(key.verify_key)
    return (
        f"-----BEGIN PUBLIC KEY-----\n{base64.b64encode(der).decode()}\n-----END PUBLIC KEY-----\n"
    )


async def test_register_and_revoke_a_station(scene: Scene) -> None:
    http = scene.browser.http
    key = SigningKey.generate()
    token = await _token(scene, "maire", "/annuaire/stations/nouvelle")
    form = _checked(await http.get("/annuaire/stations/nouvelle"))
    assert "temoin station keygen" in form

    registered = await _post(
        scene,
        "/annuaire/stations",
        {"name": "Poste central, dock 2", "public_key": _pem(key)},
        token,
    )
    assert registered.status_code == 303, registered.text
    page = await http.get(registered.headers["location"])
    text = _checked(page)
    station_id = re.search(r"/annuaire/stations/([0-9a-f-]{36})", registered.headers["location"])
    assert station_id
    # The PEM block became the key the vault takes, and the page says what the dock runs next.
    assert public_key_of(key) in text
    command = f"temoin station adopt --station-id {station_id.group(1)} --org {scene.kit.id}"
    assert command in re.sub(r"\s*\\\n\s*", " ", text)  # one command, a line per option

    twice = await _post(
        scene, "/annuaire/stations", {"name": "Doublon", "public_key": public_key_of(key)}, token
    )
    assert twice.status_code == 409
    assert "Ce n'est pas possible pour l'enregistrement des stations" in _checked(twice)

    bad = await _post(scene, "/annuaire/stations", {"name": "Dock", "public_key": "abc"}, token)
    assert bad.status_code == 422
    text = _checked(bad)
    assert "temoin station keygen" in _beside(text, "public_key")
    assert ">abc</textarea>" in text

    path = f"/annuaire/stations/{station_id.group(1)}"
    short = await _post(scene, f"{path}/revocation", {"motif": "x"}, token)
    assert short.status_code == 422
    assert "au moins 3 caractères" in _beside(_checked(short), "motif")

    token = await _token(scene, "dpo", path)
    refused = await _post(scene, f"{path}/revocation", {"motif": "perdue"}, token)
    assert refused.status_code == 403
    assert "Vous n'avez pas accès à la révocation des stations." in _checked(refused)
    refused = await _post(
        scene,
        "/annuaire/stations",
        {"name": "D", "public_key": public_key_of(SigningKey.generate())},
        token,
    )
    assert refused.status_code == 403
    assert "Vous n'avez pas accès à l'enregistrement des stations." in _checked(refused)

    token = await _token(scene, "responsable", path)
    forged = await _post(scene, f"{path}/revocation", {"motif": "volée"}, None)
    assert forged.status_code == 403 and EXPIRED in _checked(forged)
    revoked = await _post(scene, f"{path}/revocation", {"motif": "station volée"}, token)
    assert revoked.status_code == 303
    text = _checked(await http.get(path))
    assert "<dd>révoquée</dd>" in text and "station volée" in text
    assert "Révoquer la station" not in text
    again = await _post(scene, f"{path}/revocation", {"motif": "encore"}, token)
    assert again.status_code == 409


def test_what_the_forms_send() -> None:
    """The form helpers alone: a PEM block unwrapped, Paris time with its summer offset, and a
    deactivation only when asked for."""
    key = SigningKey.generate()
    assert public_key_text(_pem(key)) == public_key_of(key)
    folded = public_key_of(key)[:20] + "\n  " + public_key_of(key)[20:]
    assert public_key_text(folded) == public_key_of(key)
    broken = "-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----"
    assert public_key_text(broken) == "not base64!"  # sent as is: the vault says why not
    assert paris_instant("2026-07-01T10:00") == "2026-07-01T10:00:00+02:00"
    assert paris_instant("2026-01-01T10:00") == "2026-01-01T10:00:00+01:00"
    assert paris_instant("") is None and paris_instant("demain") is None
    agent = {
        "first_name": "A",
        "last_name": "B",
        "subject": "s",
        "roles": ["agent"],
        "active": True,
    }
    same = {"first_name": "A", "last_name": "B", "subject": "s"}
    assert agent_changes(agent, same, ["agent"]) == {}
    assert agent_changes(agent, {**same, "active": "non"}, ["agent"]) == {"active": False}
    assert agent_changes(agent, {**same, "subject": " "}, ["agent", "responsable"]) == {
        "subject": None,
        "roles": ["agent", "responsable"],
    }
