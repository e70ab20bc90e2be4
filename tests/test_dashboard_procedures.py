"""The « Procédures » pages, with a real vault and a real recording: open a procedure, attach
the recording, extract it as a signed package that ``verify_package`` accepts (streamed through
the dashboard), close it; the vault's refusals are said in French; no token in any page."""

from __future__ import annotations

import re
import time
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import text as sql
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.package import verify_package
from tests.fixtures.apps import ClientFactory
from tests.fixtures.directory import build_org
from tests.fixtures.oidc import OidcProvider, open_browser
from tests.fixtures.servers import Servers
from tests.test_authorization_matrix import prepare_recordings
from tests.test_dashboard_pages import Scene, _checked, _csrf


@dataclass
class Keys:
    vault: str
    receipt: str


@pytest.fixture
async def keyed(
    client_for: ClientFactory, servers: Servers, oidc_provider: OidcProvider
) -> AsyncIterator[tuple[Scene, Keys]]:
    async with client_for("vault") as vault:
        async with client_for("ingest", vault_transport=vault._transport) as ingest:  # noqa: SLF001
            kit = await build_org(vault, ingest, servers)
            await prepare_recordings(vault, ingest, kit)
            keys = Keys(
                vault=(await vault.get("/v1/audit/public-key")).json()["public_key"],
                receipt=(await ingest.get("/v1/receipts/public-key")).json()["public_key"],
            )
        async with open_browser(oidc_provider, client_for, servers.database_url) as browser:
            yield Scene(kit=kit, browser=browser), keys


async def _open(scene: Scene, kind: str, reference: str) -> str:
    """Open a procedure with the form; its page's path."""
    listing = await scene.browser.http.get("/procedures")
    assert listing.status_code == 200, listing.text
    opened = await scene.browser.http.post(
        "/procedures",
        data={"csrf_token": _csrf(listing), "type": kind, "reference": reference},
        follow_redirects=False,
    )
    assert opened.status_code == 303, opened.text
    location = opened.headers["location"]
    assert re.fullmatch(r"/procedures/[0-9a-f-]{36}", location), location
    return location


async def test_open_attach_extract_and_close(keyed: tuple[Scene, Keys], tmp_path: Path) -> None:
    scene, keys = keyed
    recording = str(scene.kit.recording_id)
    http = scene.browser.http
    await scene.as_role("habilite")
    path = await _open(scene, "judiciaire", "PV-2026-0042")

    listing = _checked(await http.get("/procedures"))
    assert f'href="{path}"' in listing and "PV-2026-0042" in listing
    # Open first: the new procedure comes before any closed one; all here are open.
    assert 'action="/procedures"' in listing and 'name="reference"' in listing

    page = await http.get(path)
    text = _checked(page)
    assert "Aucun enregistrement n'est rattaché" in text

    missing = await http.post(
        f"{path}/rattacher",
        data={"csrf_token": _csrf(page), "enregistrement": "pas-un-id", "qualification": ""},
    )
    assert missing.status_code == 422
    text = _checked(missing)
    assert 'href="#champ-enregistrement"' in text and 'href="#champ-qualification"' in text

    attached = await http.post(
        f"{path}/rattacher",
        data={
            "csrf_token": _csrf(page),
            "enregistrement": recording,
            "qualification": "Interpellation rue Jean-Jaurès",
        },
        follow_redirects=False,
    )
    assert attached.status_code == 303, attached.text
    page = await http.get(path)
    text = _checked(page)
    assert f'href="/enregistrements/{recording}"' in text
    extraction = f"{path}/enregistrements/{recording}/extraire"
    assert f'href="{extraction}"' in text
    again = await http.post(
        f"{path}/rattacher",
        data={"csrf_token": _csrf(page), "enregistrement": recording, "qualification": "bis"},
    )
    assert again.status_code == 409
    assert "Ce n'est pas possible pour le rattachement" in _checked(again)

    form = await http.get(extraction)
    text = _checked(form)
    assert "temoin verify paquet.zip --vault-key" in text
    assert "/v1/audit/public-key" in text and "/v1/receipts/public-key" in text
    empty = await http.post(extraction, data={"csrf_token": _csrf(form), "motif": "réquisition"})
    assert empty.status_code == 422
    assert 'href="#champ-destinataires"' in _checked(empty)

    started = time.monotonic()
    async with http.stream(
        "POST",
        extraction,
        data={
            "csrf_token": _csrf(form),
            "motif": "Réquisition du parquet de Créteil",
            "destinataires": "OPJ Martin, commissariat de L'Haÿ-les-Roses\n\n  Parquet de Créteil ",
        },
    ) as download:
        assert download.status_code == 200
        assert download.headers["content-type"] == "application/zip"
        assert download.headers["content-disposition"].startswith("attachment;")
        assert "no-store" in download.headers["cache-control"]
        package = tmp_path / "paquet.zip"
        with package.open("wb") as out:
            async for chunk in download.aiter_bytes():
                out.write(chunk)
    assert time.monotonic() - started < 60
    report = verify_package(package, vault_key=keys.vault, receipt_key=keys.receipt)
    # In-process, the vault's audit entries stay inside the test's transaction, which the log
    # sequences only once committed (services/vault/audit/repository.py): the package carries
    # no inclusion proof yet, and that is the one thing refused. Everything else — the zip,
    # the bag, the vault's and the receipt's signatures, the clip's hash — must pass.
    # (tests/test_vault_live.py checks a committed package with its proofs end to end.)
    others = [p for p in report.problems if p.rule != "audit-collecte"]
    assert not others, others
    assert [p.detail.split(" for ")[0] for p in report.problems] == ["0 collecte entries"]
    assert not report.unauthenticated
    fiche = _checked(await http.get(f"/enregistrements/{recording}"))
    assert report.clip_sha256 and report.clip_sha256 in fiche
    tampered = tmp_path / "altere.zip"
    data = bytearray(package.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    altered = verify_package(tampered, vault_key=keys.vault, receipt_key=keys.receipt)
    assert any(p.rule != "audit-collecte" for p in altered.problems)
    with zipfile.ZipFile(package) as archive:
        info = next(n for n in archive.namelist() if n.endswith("bag-info.txt"))
        bag_info = archive.read(info).decode()
    # One recipient a line, blank lines dropped, each trimmed.
    assert "OPJ Martin, commissariat de L'Haÿ-les-Roses" in bag_info
    assert "Parquet de Créteil" in bag_info

    page = await http.get(path)
    assert "Clore la procédure" in _checked(page)
    closed = await http.post(
        f"{path}/clore", data={"csrf_token": _csrf(page)}, follow_redirects=False
    )
    assert closed.status_code == 303, closed.text
    text = _checked(await http.get(path))
    assert "close le" in text and 'id="clore"' not in text
    listing = _checked(await http.get("/procedures"))
    assert listing.index("PV-2026-0042") > listing.index(f"PV-{scene.kit.id.hex[:6]}")

    late = await http.post(
        extraction,
        data={"csrf_token": _csrf(form), "motif": "trop tard", "destinataires": "OPJ Martin"},
    )
    assert late.status_code == 409
    assert "Ce n'est pas possible pour l'extraction de cet enregistrement" in _checked(late)


async def test_refusals_are_said_in_french(keyed: tuple[Scene, Keys]) -> None:
    scene, _ = keyed
    recording = str(scene.kit.recording_id)
    http = scene.browser.http

    # The DPO reads the procedures but may not open one: the vault says so, the page too.
    await scene.as_role("dpo")
    listing = await http.get("/procedures")
    assert listing.status_code == 200
    refused = await http.post(
        "/procedures",
        data={"csrf_token": _csrf(listing), "type": "judiciaire", "reference": "PV-DPO"},
    )
    assert refused.status_code == 403
    assert "Vous n'avez pas accès à l'ouverture de procédures." in _checked(refused)
    forged = await http.post("/procedures", data={"type": "judiciaire", "reference": "PV-X"})
    assert forged.status_code == 403 and "Ce formulaire a expiré" in _checked(forged)

    # A wearer does not see procedures at all.
    await scene.as_role("agent")
    assert "Vous n'avez pas accès aux procédures." in _checked(await http.get("/procedures"))

    # Formation: the vault refuses the extraction (no anonymisation yet).
    await scene.as_role("responsable")
    path = await _open(scene, "formation", "FORM-2026-01")
    page = await http.get(path)
    attached = await http.post(
        f"{path}/rattacher",
        data={"csrf_token": _csrf(page), "enregistrement": recording, "qualification": "Module"},
        follow_redirects=False,
    )
    assert attached.status_code == 303, attached.text
    extraction = f"{path}/enregistrements/{recording}/extraire"
    form = await http.get(extraction)
    denied = await http.post(
        extraction,
        data={"csrf_token": _csrf(form), "motif": "formation", "destinataires": "Formateur"},
    )
    assert denied.status_code == 422
    text = _checked(denied)
    assert "L'extraction pour la formation des agents est refusée" in text
    assert "copie anonymisée" in text


async def test_attach_from_the_recording_page(keyed: tuple[Scene, Keys]) -> None:
    scene, _ = keyed
    recording = f"/enregistrements/{scene.kit.recording_id}"
    http = scene.browser.http
    await scene.as_role("habilite")
    path = await _open(scene, "administrative", "ADM-2026-7")

    page = await http.get(recording)
    text = _checked(page)
    assert "Rattacher à une procédure" in text
    assert f'<option value="{path.rsplit("/", 1)[1]}">Procédure administrative ADM-2026-7' in text
    short = await http.post(
        "/procedures/rattachement",
        data={
            "csrf_token": _csrf(page),
            "procedure": path.rsplit("/", 1)[1],
            "enregistrement": str(scene.kit.recording_id),
            "qualification": "x",
        },
    )
    assert short.status_code == 422
    assert 'href="#champ-qualification"' in _checked(short)
    attached = await http.post(
        "/procedures/rattachement",
        data={
            "csrf_token": _csrf(page),
            "procedure": path.rsplit("/", 1)[1],
            "enregistrement": str(scene.kit.recording_id),
            "qualification": "Contrôle d'un débit de boissons",
        },
        follow_redirects=False,
    )
    assert attached.status_code == 303, attached.text
    assert attached.headers["location"] == recording
    text = _checked(await http.get(recording))
    assert f'<a href="{path}">Procédure administrative ADM-2026-7</a>' in text
    assert "ADM-2026-7</option>" not in text  # attached: no longer offered

    await scene.as_role("dpo")
    assert "Rattacher à une procédure" not in _checked(await http.get(recording))


async def test_detach_with_a_motif(keyed: tuple[Scene, Keys], connection: AsyncConnection) -> None:
    scene, _ = keyed
    recording = str(scene.kit.recording_id)
    held_by = f"/procedures/{scene.kit.procedure_id}"  # prepare_recordings attached it there
    http = scene.browser.http
    await scene.as_role("habilite")
    path = await _open(scene, "judiciaire", "PV-2026-0099")
    page = await http.get(path)
    attached = await http.post(
        f"{path}/rattacher",
        data={"csrf_token": _csrf(page), "enregistrement": recording, "qualification": "Erreur"},
        follow_redirects=False,
    )
    assert attached.status_code == 303, attached.text
    detach = f"{path}/enregistrements/{recording}/detacher"
    assert f'href="{detach}"' in _checked(await http.get(path))

    form = await http.get(detach)
    text = _checked(form)
    # Another open procedure holds it: the page says the hold stays, and which one.
    assert "Il reste retenu par une autre procédure ouverte" in text
    assert f'href="{held_by}"' in text
    assert 'name="motif"' in text and "Détacher l'enregistrement" in text
    short = await http.post(detach, data={"csrf_token": _csrf(form), "motif": "x"})
    assert short.status_code == 422
    assert 'href="#champ-motif"' in _checked(short)
    forged = await http.post(detach, data={"motif": "rattaché par erreur"})
    assert forged.status_code == 403 and "Ce formulaire a expiré" in _checked(forged)

    await scene.as_role("dpo")  # reads procedures, may not detach: the vault says so
    form = await http.get(detach)
    refused = await http.post(detach, data={"csrf_token": _csrf(form), "motif": "contrôle"})
    assert refused.status_code == 403
    assert "Vous n'avez pas accès au détachement d'enregistrements." in _checked(refused)

    await scene.as_role("habilite")
    form = await http.get(detach)
    done = await http.post(
        detach,
        data={"csrf_token": _csrf(form), "motif": "Rattaché par erreur"},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    assert done.headers["location"] == f"{path}#enregistrements"
    assert "Aucun enregistrement n'est rattaché" in _checked(await http.get(path))
    again = await http.post(detach, data={"csrf_token": _csrf(form), "motif": "encore"})
    assert again.status_code == 404
    text = _checked(again)
    assert "Cet enregistrement n'est pas (ou plus) rattaché à cette procédure." in text
    assert 'name="motif"' not in text  # nothing left to detach: no form

    # The last procedure holding it, the recording past its retention: the page warns that
    # the next erasure takes it.
    await connection.execute(
        sql("UPDATE vault.recordings SET retain_until = now() - interval '1 day' WHERE id = :id"),
        {"id": scene.kit.recording_id},
    )
    last = f"{held_by}/enregistrements/{recording}/detacher"
    text = _checked(await http.get(last))
    assert "Sa durée de conservation est échue" in text
    assert "effacé lors du prochain passage de l'effacement automatique" in text
    assert "retenu par" not in text

    # Closed, the procedure's history is frozen: the vault refuses, the page says why.
    procedure = await http.get(held_by)
    closed = await http.post(
        f"{held_by}/clore", data={"csrf_token": _csrf(procedure)}, follow_redirects=False
    )
    assert closed.status_code == 303, closed.text
    assert f'href="{last}"' not in _checked(await http.get(held_by))
    frozen = await http.post(last, data={"csrf_token": _csrf(procedure), "motif": "trop tard"})
    assert frozen.status_code == 409
    text = _checked(frozen)
    assert "La procédure est close : ses enregistrements ne peuvent plus en être détachés." in text
