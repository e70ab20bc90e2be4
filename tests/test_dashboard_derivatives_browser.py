"""The « copie anonymisée pour la formation » pages in a browser, on the stack `temoin run`
starts (its vault's own runner makes the copy): the demande from a formation procedure, the
copy's page refreshed with « Actualiser » until it is « à vérifier », viewed in the player,
approved with a reason, extracted for the formation; every page passes axe-core."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.fixtures.browser import audit_accessibility, screenshot, serious_violations
from tests.fixtures.directory import OrgKit
from tests.fixtures.scene import Scene
from tests.test_dashboard_browser import kit, sign_in

pytestmark = pytest.mark.slow
__all__ = ["kit"]  # the module's own organisation with a clip (test_dashboard_browser)
MADE_S = 240.0  # a 3-second clip, on a loaded 2-core machine


async def _violations(page: Page, where: str) -> list[str]:
    return [f"{where}: {v}" for v in serious_violations(await audit_accessibility(page))]


async def test_training_copy_from_demande_to_extraction(
    audit_page: Page, running: Scene, kit: OrgKit, tmp_path: Path
) -> None:
    page = audit_page
    await sign_in(page, running, kit, "habilite")
    await page.get_by_role("navigation").get_by_role("link", name="Procédures").click()
    await page.get_by_label("Type de procédure").select_option("formation")
    await page.get_by_label("Référence").fill("FORM-2026-0007")
    await page.get_by_role("button", name="Ouvrir la procédure").click()
    await expect(page.locator("h1")).to_contain_text("FORM-2026-0007")
    await page.get_by_label("Identifiant de l'enregistrement").fill(str(kit.recording_id))
    await page.get_by_label("Qualification").fill("Interpellation, exemple pour la formation")
    await page.get_by_role("button", name="Rattacher l'enregistrement").click()
    found = await _violations(page, "procédure de formation")

    await page.get_by_role("link", name="Demander une copie anonymisée").click()
    await expect(page.locator("h1")).to_have_text("Demander une copie anonymisée")
    found += await _violations(page, "demande")
    await page.get_by_role("button", name="Demander la copie anonymisée").click()
    await expect(page.locator(".error-summary")).to_contain_text("motif de la demande")
    found += await _violations(page, "demande refusée")
    await page.get_by_label("Motif de la demande").fill("Séance de formation aux interpellations")
    await page.get_by_role("button", name="Demander la copie anonymisée").click()
    await expect(page.locator("h1")).to_have_text("Copie anonymisée pour la formation")
    found += await _violations(page, "copie en fabrication")
    await screenshot(page, "copie-anonymisee-en-cours", tmp_path)

    # « Actualiser » until the vault's runner has made it (bounded).
    state = page.locator("#etat")
    deadline = time.monotonic() + MADE_S
    while "à vérifier" not in (await state.inner_text()):
        assert "échec" not in await state.inner_text(), await state.inner_text()
        assert time.monotonic() < deadline, await state.inner_text()
        await page.wait_for_timeout(1000)
        await page.locator("#actualiser").click()
    found += await _violations(page, "copie à vérifier")
    await screenshot(page, "copie-anonymisee-a-verifier", tmp_path)

    await page.get_by_role("link", name="Visionner la copie").click()
    found += await _violations(page, "visionner la copie")
    await page.get_by_label("Motif du visionnage").fill("Vérification de l'anonymisation")
    await page.get_by_role("button", name="Visionner").click()
    video = page.locator("video")
    await expect(video).to_be_visible()
    media = await video.get_attribute("src")
    assert media and media.startswith(running.vault), media
    await expect(page.locator("#commandes")).to_be_visible()  # lecteur.js ran
    found += await _violations(page, "lecture de la copie")
    await screenshot(page, "copie-anonymisee-lecture", tmp_path)

    await page.get_by_role("link", name="Approuver ou rejeter la copie").click()
    await page.get_by_label("Approuver la copie").check()
    await page.get_by_role("button", name="Enregistrer la décision").click()
    await expect(page.locator(".error-summary")).to_contain_text("au moins 3 caractères")
    found += await _violations(page, "vérification refusée")
    await page.get_by_label("Approuver la copie").check()
    await page.get_by_label("Raison").fill("Visages floutés ; ni plaque, ni écran lisible")
    await page.get_by_role("button", name="Enregistrer la décision").click()
    await expect(state).to_have_text("approuvée")
    found += await _violations(page, "copie approuvée")
    await screenshot(page, "copie-anonymisee-approuvee", tmp_path)

    await page.get_by_role("link", name="Extraire pour la formation").click()
    await expect(page.locator("h1")).to_have_text("Extraire la copie anonymisée pour la formation")
    found += await _violations(page, "extraction de la copie")
    await page.get_by_label("Motif de l'extraction").fill("Séance de formation du 12 mars")
    await page.get_by_label("Destinataires").fill("Formateur, centre de formation")
    async with page.expect_download() as waiting:
        await page.get_by_role("button", name="Extraire et télécharger").click()
    download = await waiting.value
    package = tmp_path / "formation.zip"
    await download.save_as(package)
    with zipfile.ZipFile(io.BytesIO(package.read_bytes())) as bag:
        names = bag.namelist()
    assert any(n.endswith("data/derivation.json") for n in names), names
    assert not any(str(kit.recording_id) in n for n in names), names

    await page.goto(f"{running.dashboard}/procedures")
    await page.get_by_role("link", name="FORM-2026-0007").first.click()
    await expect(page.locator(".copy-state")).to_have_text("approuvée")
    found += await _violations(page, "procédure avec sa copie")
    await screenshot(page, "procedure-formation", tmp_path)
    assert found == [], "\n".join(found)
