"""The « copie anonymisée pour la formation » pages (issue 18), with a real vault and a real
clip: a formation procedure's page offers the demande per recording; the copy's page says its
state in French (en attente, en cours with its images, annulée, à vérifier, approuvée) and what
the anonymisation does not remove; the copy is made by the vault's own job runner, viewed
through a logged consultation, reviewed with a reason, and extracted for the formation; every
refusal of the vault is said in French."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import AsyncConnection, async_sessionmaker

from services.dashboard.copies import words
from services.vault.derivatives.jobs import JobRunner
from services.vault.settings import VaultSettings
from shared.audit import writer_info
from shared.storage import ObjectStore
from tests.fixtures.apps import VAULT_WRITER, ClientFactory, settings_for
from tests.fixtures.clips import make_clip, upload_headers
from tests.fixtures.directory import OrgKit, build_org
from tests.fixtures.oidc import OidcProvider, open_browser
from tests.fixtures.servers import Servers
from tests.test_dashboard_pages import Scene, _checked, _csrf
from tests.test_derivatives_live import _mp4

MADE_S = 180.0  # a 2-second clip on a loaded 2-core machine


@dataclass
class Stage:
    scene: Scene
    vault: httpx.AsyncClient  # the vault itself, for the media the player's page names
    recording: str
    runner: JobRunner


async def _upload_real_clip(
    vault: httpx.AsyncClient, ingest: httpx.AsyncClient, kit: OrgKit, tmp: Path
) -> str:
    data = _mp4(tmp / "clip.mp4", seconds=2)
    _, metadata = make_clip(kit, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    answer = await ingest.post(
        "/v1/recordings", content=data, headers=upload_headers(kit, metadata)
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["recording_id"])


def job_runner(connection: AsyncConnection, servers: Servers) -> JobRunner:
    """The vault's job runner, on the test's connection: the demande it claims was made in the
    test's transaction, which a runner of its own could not see."""
    settings = settings_for("vault", servers)
    assert isinstance(settings, VaultSettings)
    return JobRunner(
        async_sessionmaker(
            bind=connection,
            expire_on_commit=False,
            join_transaction_mode="create_savepoint",
            info=writer_info(VAULT_WRITER),
        ),
        ObjectStore(servers.storage),
        settings,
    )


@pytest.fixture
async def stage(
    client_for: ClientFactory,
    servers: Servers,
    oidc_provider: OidcProvider,
    connection: AsyncConnection,
    tmp_path: Path,
) -> AsyncIterator[Stage]:
    runner = job_runner(connection, servers)
    async with client_for("vault") as vault:
        async with client_for("ingest", vault_transport=vault._transport) as ingest:  # noqa: SLF001
            kit = await build_org(vault, ingest, servers)
            recording = await _upload_real_clip(vault, ingest, kit, tmp_path)
        async with open_browser(oidc_provider, client_for, servers.database_url) as browser:
            yield Stage(Scene(kit=kit, browser=browser), vault, recording, runner)


async def _formation(stage: Stage, reference: str) -> str:
    """A formation procedure opened and the clip attached, with the forms; its path."""
    http = stage.scene.browser.http
    listing = await http.get("/procedures")
    opened = await http.post(
        "/procedures",
        data={"csrf_token": _csrf(listing), "type": "formation", "reference": reference},
        follow_redirects=False,
    )
    assert opened.status_code == 303, opened.text
    path = str(opened.headers["location"])
    page = await http.get(path)
    attached = await http.post(
        f"{path}/rattacher",
        data={
            "csrf_token": _csrf(page),
            "enregistrement": stage.recording,
            "qualification": "Exemple d'interpellation pour la formation",
        },
        follow_redirects=False,
    )
    assert attached.status_code == 303, attached.text
    return path


async def _ask(stage: Stage, path: str, motif: str) -> httpx.Response:
    http = stage.scene.browser.http
    demande = f"{path}/enregistrements/{stage.recording}/copie-anonymisee"
    form = await http.get(demande)
    return await http.post(
        demande, data={"csrf_token": _csrf(form), "motif": motif}, follow_redirects=False
    )


def _state(page: str) -> str:
    found = re.search(r'<dd id="etat"><strong>(.*?)</strong>', page, re.S)
    assert found, page
    return found.group(1)


async def test_demande_review_and_extraction(
    stage: Stage, connection: AsyncConnection, tmp_path: Path
) -> None:
    http = stage.scene.browser.http
    await stage.scene.as_role("habilite")
    path = await _formation(stage, "FORM-2026-03")

    text = _checked(await http.get(path))
    demande = f"{path}/enregistrements/{stage.recording}/copie-anonymisee"
    assert f'href="{demande}"' in text and "Demander une copie anonymisée" in text
    assert "aucune pour l'instant" in text
    # The original is never extracted for training: no « Extraire » beside it.
    assert f"{stage.recording}/extraire" not in text

    form = await http.get(demande)
    text = _checked(form)
    assert "plaques d'immatriculation" in text and "tatouages" in text
    empty = await http.post(demande, data={"csrf_token": _csrf(form), "motif": " "})
    assert empty.status_code == 422
    assert 'href="#champ-motif"' in _checked(empty)

    # Asked, then cancelled from the procedure's page while it waits.
    asked = await _ask(stage, path, "Séance de formation aux interpellations")
    assert asked.status_code == 303, asked.text
    first = str(asked.headers["location"])
    assert re.fullmatch(r"/copies-anonymisees/[0-9a-f-]{36}", first), first
    page = _checked(await http.get(first))
    assert _state(page) == "en attente"
    assert f'href="{first}" id="actualiser"' in page
    assert "Annuler la fabrication" in page
    assert "ne sont <strong>pas détectés</strong>" in page.lower()
    again = await _ask(stage, path, "Une deuxième fois")
    assert again.status_code == 409
    assert "déjà en cours de fabrication" in _checked(again)

    procedure_page = await http.get(path)
    text = _checked(procedure_page)
    assert f'action="{first}/annuler"' in text and "en attente" in text
    assert f'href="{demande}"' not in text  # one copy made at a time
    cancelled = await http.post(
        f"{first}/annuler",
        data={"csrf_token": _csrf(procedure_page), "retour": "procedure"},
        follow_redirects=False,
    )
    assert cancelled.status_code == 303, cancelled.text
    assert cancelled.headers["location"].startswith(path)
    text = _checked(await http.get(path))
    assert '— <span class="copy-state">annulée</span>' in text
    assert f'href="{demande}"' in text
    page = _checked(await http.get(first))
    assert _state(page) == "annulée"
    assert re.search(r'<dd id="raison-fin">Fabrication annulée par [^<]+</dd>', page), page

    # Asked again; its worker seen mid-way (a row as a running job leaves it, long stale).
    asked = await _ask(stage, path, "Séance de formation aux interpellations")
    assert asked.status_code == 303, asked.text
    copy = str(asked.headers["location"])
    copy_id = copy.rsplit("/", 1)[1]
    await connection.execute(
        sql(
            "UPDATE vault.derivatives SET status = 'en_cours', frames_done = 12, "
            "frames_total = 50, attempt = 1, heartbeat_at = now() - interval '1 hour' "
            "WHERE id = :id"
        ),
        {"id": copy_id},
    )
    page = _checked(await http.get(copy))
    assert _state(page) == "en cours (12 / 50 images)"
    assert 'value="12"' in page and "Annuler la fabrication" in page
    assert "en cours (12 / 50 images)" in _checked(await http.get(path))

    # The vault's runner takes it over and makes it (bounded).
    made = await asyncio.wait_for(stage.runner.run_once(), MADE_S)
    assert str(made) == copy_id
    page = _checked(await http.get(copy))
    assert _state(page) == "à vérifier", page
    assert "Annuler la fabrication" not in page
    assert f'href="{copy}/visionner"' in page and 'id="verification"' in page
    assert "50 images" in page and "Extraire pour la formation" not in page

    # Reviewed only with a reason, and only having viewed it (the vault's rule, in French).
    empty = await http.post(
        f"{copy}/verification", data={"csrf_token": _csrf_of(page), "decision": "approuve"}
    )
    assert empty.status_code == 422
    assert 'href="#champ-raison"' in _checked(empty)
    unseen = await http.post(
        f"{copy}/verification",
        data={"csrf_token": _csrf_of(page), "decision": "approuve", "raison": "Rien de visible"},
    )
    assert unseen.status_code == 409
    assert "Visionnez la copie anonymisée avant de l'approuver" in _checked(unseen)

    form = await http.get(f"{copy}/visionner")
    viewed = await http.post(
        f"{copy}/visionner",
        data={"csrf_token": _csrf(form), "motif": "Vérification avant la formation"},
        follow_redirects=False,
    )
    assert viewed.status_code == 303, viewed.text
    player = await http.get(str(viewed.headers["location"]))
    text = _checked_player(player)
    media = re.search(r'<video [^>]*src="([^"]+)"', text)
    assert media, text
    assert "Vérification avant la formation" in text
    served = await stage.vault.get(httpx.URL(media.group(1)).path)
    assert served.status_code == 200 and served.headers["content-type"] == "video/mp4"
    assert b"ftyp" in served.content[:64]

    page = _checked(await http.get(copy))
    approved = await http.post(
        f"{copy}/verification",
        data={
            "csrf_token": _csrf_of(page),
            "decision": "approuve",
            "raison": "Visages floutés, ni plaque ni écran lisible",
        },
        follow_redirects=False,
    )
    assert approved.status_code == 303, approved.text
    page = _checked(await http.get(copy))
    assert _state(page) == "approuvée"
    assert "Visages floutés, ni plaque ni écran lisible" in page
    extraction = f"{path}/enregistrements/{stage.recording}/extraire?copie={copy_id}"
    assert f'href="{extraction}"' in page

    # The existing extraction form, for the copy: the package holds the copy, not the original.
    form = await http.get(extraction)
    text = _checked(form)
    assert f'name="copie" value="{copy_id}"' in text
    async with http.stream(
        "POST",
        extraction.split("?")[0],
        data={
            "csrf_token": _csrf(form),
            "copie": copy_id,
            "motif": "Séance de formation du 12 mars",
            "destinataires": "Formateur, centre de formation de la police municipale",
        },
    ) as download:
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/zip"
        content = b"".join([chunk async for chunk in download.aiter_bytes()])
    with zipfile.ZipFile(io.BytesIO(content)) as package:
        names = package.namelist()
        assert any(n.endswith(f"data/{copy_id}.mp4") for n in names), names
        assert not any(stage.recording in n for n in names), names
        record_name = next(n for n in names if n.endswith("data/derivation.json"))
        record = json.loads(package.read(record_name))["record"]
    assert record["original"]["recording_id"] == stage.recording
    assert record["derivative"]["id"] == copy_id

    # The original itself, for a formation procedure: refused, said whole in French.
    form = await http.get(extraction.split("?")[0])
    original = await http.post(
        extraction.split("?")[0],
        data={"csrf_token": _csrf(form), "motif": "Séance", "destinataires": "Formateur"},
    )
    assert original.status_code == 422
    assert "l'original n'est jamais extrait" in _checked(original)


def _checked_player(page: httpx.Response) -> str:
    """The recordings' player page checks (tests/test_dashboard_pages.py), for the copy's
    player: its one script is the player's own file."""
    script = '<script src="/static/lecteur.js" defer></script>'
    assert page.text.count(script) == 1, page.text
    stripped = httpx.Response(
        page.status_code,
        headers=page.headers,
        text=page.text.replace(script, ""),
        request=page.request,
    )
    return _checked(stripped)


def _csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def test_a_judiciaire_procedure_offers_no_copy(stage: Stage) -> None:
    """The demande exists only for formation; asked anyway, the vault's refusal in French."""
    http = stage.scene.browser.http
    await stage.scene.as_role("habilite")
    listing = await http.get("/procedures")
    opened = await http.post(
        "/procedures",
        data={"csrf_token": _csrf(listing), "type": "judiciaire", "reference": "PV-2026-0099"},
        follow_redirects=False,
    )
    path = str(opened.headers["location"])
    page = await http.get(path)
    await http.post(
        f"{path}/rattacher",
        data={"csrf_token": _csrf(page), "enregistrement": stage.recording, "qualification": "PV"},
    )
    text = _checked(await http.get(path))
    assert "copie-anonymisee" not in text and "Copies anonymisées" not in text
    refused = await _ask(stage, path, "Pour voir")
    assert refused.status_code == 422
    assert "ne se demande que pour la formation" in _checked(refused)


def test_states_in_french() -> None:
    base = {"frames_done": 0, "frames_total": None, "reason": None, "review_reason": None}
    assert words.status({**base, "status": "en_attente"}) == "en attente"
    assert words.status({**base, "status": "en_cours", "frames_done": 3}) == "en cours (3 images)"
    assert words.status({**base, "status": "a_verifier"}) == "à vérifier"
    assert words.status({**base, "status": "approuve"}) == "approuvée"
    rejected = {**base, "status": "rejete", "review_reason": "plaque lisible à 0:04"}
    assert words.status(rejected) == "rejetée : plaque lisible à 0:04"
    failed = {**base, "status": "echec", "reason": "ffmpeg ne peut pas décoder la vidéo : x."}
    assert words.status(failed) == "échec : ffmpeg ne peut pas décoder la vidéo : x"
    erased = {**base, "status": "echec", "reason": "L'enregistrement original a été effacé."}
    assert words.status(erased) == "échec : l'enregistrement original a été effacé"
    # A damaged original's reason is the vault's English detail: said in French.
    damaged = {
        **base,
        "status": "echec",
        "reason": "this recording failed its integrity check: the sealed object ends 9 bytes early",
    }
    assert words.status(damaged) == (
        "échec : l'enregistrement a échoué au contrôle d'intégrité : l'objet scellé se termine "
        "9 octets trop tôt"
    )
    # Reasons of copies made before the vault wrote them in French.
    old = {**base, "status": "echec", "reason": "the anonymisation failed: MemoryError"}
    assert "l'anonymisation a échoué" in words.status(old)
    assert words.status({**base, "status": "annule", "reason": "cancelled"}) == "annulée"
    assert words.reason("cancelled by agent-7") == "à la demande de agent-7"


async def test_rejected_and_failed_copies(
    stage: Stage, client_for: ClientFactory, servers: Servers
) -> None:
    """A copy rejected with its reason is never extracted (the vault's refusal, in French); a
    clip ffmpeg cannot decode ends « échec » with the engine's reason."""
    http = stage.scene.browser.http
    await stage.scene.as_role("habilite")
    path = await _formation(stage, "FORM-2026-04")
    asked = await _ask(stage, path, "Séance de formation")
    copy = str(asked.headers["location"])
    copy_id = copy.rsplit("/", 1)[1]
    assert str(await asyncio.wait_for(stage.runner.run_once(), MADE_S)) == copy_id
    form = await http.get(f"{copy}/visionner")
    await http.post(f"{copy}/visionner", data={"csrf_token": _csrf(form), "motif": "Vérifier"})
    page = _checked(await http.get(copy))
    rejected = await http.post(
        f"{copy}/verification",
        data={
            "csrf_token": _csrf_of(page),
            "decision": "rejete",
            "raison": "Plaque d'immatriculation lisible à 0:01",
        },
        follow_redirects=False,
    )
    assert rejected.status_code == 303, rejected.text
    page = _checked(await http.get(copy))
    assert _state(page) == "rejetée : Plaque d'immatriculation lisible à 0:01"
    assert "Extraire pour la formation" not in page and 'id="verification"' not in page
    assert "rejetée : Plaque d'immatriculation" in _checked(await http.get(path))
    # Asked for anyway (an old link): the vault refuses, said in French on the form.
    extraction = f"{path}/enregistrements/{stage.recording}/extraire"
    form = await http.get(f"{extraction}?copie={copy_id}")
    refused = await http.post(
        extraction,
        data={
            "csrf_token": _csrf(form),
            "copie": copy_id,
            "motif": "Séance",
            "destinataires": "Formateur",
        },
    )
    assert refused.status_code == 409
    assert "Seule une copie anonymisée approuvée peut être extraite" in _checked(refused)

    # Not a video at all: the job fails with a readable reason.
    async with client_for("ingest", vault_transport=stage.vault._transport) as ingest:  # noqa: SLF001
        data, metadata = make_clip(stage.scene.kit)
        answer = await ingest.post(
            "/v1/recordings", content=data, headers=upload_headers(stage.scene.kit, metadata)
        )
        assert answer.status_code == 201, answer.text
    stage.recording = str(answer.json()["recording_id"])
    procedure_page = await http.get(path)
    await http.post(
        f"{path}/rattacher",
        data={
            "csrf_token": _csrf(procedure_page),
            "enregistrement": stage.recording,
            "qualification": "Exemple",
        },
    )
    asked = await _ask(stage, path, "Séance de formation")
    assert asked.status_code == 303, asked.text
    broken = str(asked.headers["location"])
    assert str(await asyncio.wait_for(stage.runner.run_once(), MADE_S)) == broken.rsplit("/")[-1]
    page = _checked(await http.get(broken))
    assert _state(page).startswith("échec : ffmpeg ne peut pas décoder la vidéo"), page
    assert "Visionner la copie" not in page and "Annuler la fabrication" not in page

    # The maire follows the copies but neither views nor reviews them (the vault's rule); an
    # agent not habilité is refused, in French.
    await stage.scene.as_role("maire")
    page = _checked(await http.get(copy))
    assert _state(page).startswith("rejetée")
    assert "Visionner la copie" not in page and "Annuler la fabrication" not in page
    assert "rejetée : Plaque d'immatriculation" in _checked(await http.get(path))
    await stage.scene.as_role("agent")
    refused_page = await http.get(copy)
    assert refused_page.status_code == 403
    assert "Vous n'avez pas accès à cette copie anonymisée" in _checked(refused_page)
