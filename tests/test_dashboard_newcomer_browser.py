"""Issue 17's « Done when », in a browser on the stack `temoin run` starts: the maire of a new
organisation signs in, creates it, registers agents; the responsable designates a habilitation,
registers a camera, gives it to an agent and registers a docking station from the public key a
dock made (`temoin station keygen`); the dock adopts its id and uploads a clip (`temoin dock
upload`'s own code, the only call that is not the browser's); the habilité agent finds the clip
in Enregistrements, views it with a motif, opens a procedure, attaches the clip and extracts it
(the package passes verify_package); the maire downloads the year's report. Every Annuaire page
passes axe-core."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from services.dashboard.kit.templating import PARIS
from shared.package import verify_package
from temoin.dock import Dock, simulate
from temoin.station import StationKeyFile, adopt, generate
from tests.fixtures.browser import audit_accessibility, describe, screenshot, serious_violations
from tests.fixtures.directory import fresh_insee
from tests.fixtures.scene import Scene

pytestmark = pytest.mark.slow

ORGANISATION = "Police municipale de Villejuif"
PARIS_FORMAT = "%Y-%m-%dT%H:%M"


async def _audit(page: Page, where: str) -> list[str]:
    violations = serious_violations(await audit_accessibility(page))
    return [f"{where}: {describe(violations)}"] if violations else []


async def _sign_in_as(page: Page, scene: Scene, who: str) -> None:
    """The provider's page lists the directory's people by name: choose one."""
    await page.goto(f"{scene.dashboard}/connexion")
    await page.get_by_label(who, exact=True).check()
    await page.get_by_role("button", name="Se connecter en tant que cette personne").click()
    await page.wait_for_url(f"{scene.dashboard}/")


async def _sign_out(page: Page, scene: Scene) -> None:
    await page.locator("#deconnexion").click()
    await page.wait_for_url(f"{scene.dashboard}/au-revoir*")


async def _annuaire(page: Page) -> None:
    await page.get_by_role("navigation").get_by_role("link", name="Annuaire").click()
    await expect(page.locator("h1")).to_have_text("Annuaire")


async def _register_agent(
    page: Page, matricule: str, first: str, last: str, subject: str, roles: list[str]
) -> None:
    await page.get_by_role("link", name="Enregistrer un agent").click()
    await page.get_by_label("Matricule").fill(matricule)
    await page.get_by_label("Prénom").fill(first)
    await page.get_by_label("Nom", exact=True).fill(last)
    await page.get_by_label("Identifiant de connexion").fill(subject)
    for label in ("Porteur de caméra", "Responsable du service"):
        box = page.get_by_label(label)
        await (box.check() if label in roles else box.uncheck())
    await page.get_by_role("button", name="Enregistrer l'agent").click()
    await expect(page.locator("h1")).to_have_text(f"{first} {last}")


async def test_a_newcomer_sets_up_the_service_and_extracts_a_clip(
    audit_page: Page, running: Scene, tmp_path: Path
) -> None:
    page = audit_page
    started = time.monotonic()
    found: list[str] = []

    # The maire of an organisation Témoin does not know yet creates it.
    await _sign_in_as(page, running, "Maire d'une nouvelle organisation")
    await page.get_by_label("Nom du service").fill(ORGANISATION)
    await page.get_by_label("Département").fill("94")
    await page.get_by_label("Communes").fill(f"{fresh_insee()} Villejuif")
    await page.get_by_role("button", name="Créer l'organisation").click()
    await expect(page.locator("main")).to_contain_text("Votre organisation")

    await _annuaire(page)
    found += await _audit(page, "/annuaire (vide)")
    await _register_agent(
        page, "RESP-01", "Claire", "Martin", "claire-martin", ["Responsable du service"]
    )
    found += await _audit(page, "/annuaire/agents/{id}")
    await screenshot(page, "annuaire-agent", tmp_path)
    await _annuaire(page)
    await page.get_by_role("link", name="Enregistrer un agent").click()
    found += await _audit(page, "/annuaire/agents/nouveau")
    await screenshot(page, "annuaire-agent-nouveau", tmp_path)
    await page.get_by_role("link", name="Retour à l'annuaire").click()
    await _register_agent(page, "PM-0117", "Paul", "Durand", "paul-durand", ["Porteur de caméra"])
    await _sign_out(page, running)

    # The responsable designates Paul Durand (R241-12) and equips the service.
    await _sign_in_as(page, running, "Claire Martin")
    await _annuaire(page)
    await page.get_by_label("Portée (facultatif) de l'habilitation de Paul Durand").fill(
        "consultation et extraction"
    )
    await page.get_by_role("button", name="Habiliter Paul Durand").click()
    await expect(page.locator("#historique + .table-scroll")).to_contain_text("Claire Martin")
    found += await _audit(page, "/annuaire")
    await screenshot(page, "annuaire", tmp_path)

    await page.get_by_role("link", name="Enregistrer une caméra").click()
    found += await _audit(page, "/annuaire/cameras/nouvelle")
    await page.get_by_label("Numéro de série").fill("VJF-CAM-01")
    await page.get_by_label("Modèle").fill("Reveal D5")
    await page.get_by_role("button", name="Enregistrer la caméra").click()
    await expect(page.locator("h1")).to_have_text("Caméra VJF-CAM-01")
    clip_start = datetime.now(UTC) - timedelta(hours=1)
    await page.get_by_label("Agent", exact=True).select_option(label="Durand Paul (PM-0117)")
    since = (clip_start - timedelta(hours=1)).astimezone(PARIS).strftime(PARIS_FORMAT)
    await page.get_by_label("Début", exact=True).fill(since)
    await page.get_by_role("button", name="Confier la caméra").click()
    await expect(page.locator("main dl")).to_contain_text("Paul Durand, depuis le")
    found += await _audit(page, "/annuaire/cameras/{id}")
    await screenshot(page, "annuaire-camera", tmp_path)

    # The dock makes its key pair; the responsable registers its public key.
    key_file = tmp_path / "station.json"
    public_key = generate(key_file)
    await _annuaire(page)
    await page.get_by_role("link", name="Enregistrer une station").click()
    found += await _audit(page, "/annuaire/stations/nouvelle")
    await page.get_by_label("Nom de la station").fill("Poste central, dock 1")
    await page.get_by_label("Clé publique").fill(public_key[:20])  # a key cut short
    await page.get_by_role("button", name="Enregistrer la station").click()
    await expect(page.locator("#erreur-public_key")).to_contain_text("temoin station keygen")
    await expect(page.locator("#champ-public_key")).to_have_attribute("aria-invalid", "true")
    found += await _audit(page, "/annuaire/stations (erreur)")
    await screenshot(page, "annuaire-station-erreur", tmp_path)
    await page.get_by_label("Clé publique").fill(public_key)
    await page.get_by_role("button", name="Enregistrer la station").click()
    await expect(page.locator("h1")).to_have_text("Station Poste central, dock 1")
    command = await page.locator(".notice pre.command").inner_text()
    found += await _audit(page, "/annuaire/stations/{id}")
    await screenshot(page, "annuaire-station", tmp_path)
    command = re.sub(r"\s*\\\n\s*", " ", command.strip())  # a line per option
    match = re.fullmatch(r"temoin station adopt --station-id (\S+) --org (\S+)", command)
    assert match, command

    # On the dock: the command the page gave, then `temoin dock upload`'s code.
    station = adopt(key_file, uuid.UUID(match[1]), uuid.UUID(match[2]))
    assert station == StationKeyFile.load(key_file)
    clip = simulate(
        tmp_path / "clips", camera_serial="VJF-CAM-01", count=1, seconds=3, start=clip_start
    )[0]
    receipt = await asyncio.to_thread(Dock(running.ingest, station).upload, clip)
    await _sign_out(page, running)

    # Paul Durand, habilité, finds it, views it with a motif, extracts it for a procedure.
    await _sign_in_as(page, running, "Paul Durand")
    await page.get_by_role("navigation").get_by_role("link", name="Enregistrements").click()
    recording = f"/enregistrements/{receipt['recording_id']}"
    await page.locator(f'a[href="{recording}"]').first.click()
    await page.wait_for_url(f"{running.dashboard}{recording}")
    await page.locator("#visionner").click()
    await page.get_by_label("Motif du visionnage").fill("Réquisition du parquet de Créteil")
    await page.locator("main form button[type=submit]").click()
    await expect(page.locator("video")).to_be_visible()

    await page.get_by_role("navigation").get_by_role("link", name="Procédures").click()
    await page.get_by_label("Type de procédure").select_option("judiciaire")
    await page.get_by_label("Référence").fill("PV-2026-0420")
    await page.get_by_role("button", name="Ouvrir la procédure").click()
    await page.get_by_label("Identifiant de l'enregistrement").fill(str(receipt["recording_id"]))
    await page.get_by_label("Qualification").fill("Contrôle routier avenue de Paris")
    await page.get_by_role("button", name="Rattacher l'enregistrement").click()
    await page.get_by_role("link", name="Extraire cet enregistrement").click()
    await page.get_by_label("Motif de l'extraction").fill("Réquisition du parquet")
    await page.get_by_label("Destinataires").fill("OPJ Martin\nParquet de Créteil")
    async with page.expect_download() as waiting:
        await page.get_by_role("button", name="Extraire et télécharger").click()
    package = tmp_path / "paquet.zip"
    await (await waiting.value).save_as(package)
    await _sign_out(page, running)

    # The maire downloads the year's report (the letter to the préfet).
    await _sign_in_as(page, running, f"Maire ({ORGANISATION})")
    await page.get_by_role("navigation").get_by_role("link", name="Rapport annuel").click()
    async with page.expect_download() as waiting:
        await page.get_by_role("link", name="Aperçu de la lettre (PDF)").click()
    letter = tmp_path / "rapport.pdf"
    await (await waiting.value).save_as(letter)
    elapsed = time.monotonic() - started

    assert letter.read_bytes().startswith(b"%PDF-")
    async with httpx.AsyncClient(timeout=30) as http:  # the receiver's keys, as published
        vault_key = (await http.get(f"{running.vault}/v1/audit/public-key")).json()
        receipt_key = (await http.get(f"{running.ingest}/v1/receipts/public-key")).json()
    report = verify_package(
        package, vault_key=vault_key["public_key"], receipt_key=receipt_key["public_key"]
    )
    assert report.valid, report.problems
    assert found == [], "\n".join(found)
    assert elapsed < 90, elapsed
