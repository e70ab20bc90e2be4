"""The « Procédures » pages in a browser, on the stack `temoin run` starts: a procedure opened
with its form, the recording attached, its extraction downloaded by the browser and checked
with the published keys — every audit entry proved, as the receiver checks it — then
detached with its motif; the pages pass axe-core."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, expect

from shared.package import verify_package
from tests.fixtures.browser import audit_accessibility, screenshot, serious_violations
from tests.fixtures.directory import OrgKit
from tests.fixtures.scene import Scene
from tests.test_dashboard_browser import kit, sign_in

pytestmark = pytest.mark.slow
__all__ = ["kit"]  # the module's own organisation with a clip (test_dashboard_browser)


async def _violations(page: Page, where: str) -> list[str]:
    return [f"{where}: {v}" for v in serious_violations(await audit_accessibility(page))]


async def test_extract_a_recording_for_a_procedure(
    audit_page: Page, running: Scene, kit: OrgKit, tmp_path: Path
) -> None:
    page = audit_page
    await sign_in(page, running, kit, "habilite")
    await page.get_by_role("navigation").get_by_role("link", name="Procédures").click()
    found = await _violations(page, "procédures")
    await page.get_by_label("Type de procédure").select_option("judiciaire")
    await page.get_by_label("Référence").fill("PV-2026-0117")
    await page.get_by_role("button", name="Ouvrir la procédure").click()
    await expect(page.locator("h1")).to_contain_text("PV-2026-0117")
    found += await _violations(page, "procédure")

    await page.get_by_label("Identifiant de l'enregistrement").fill(str(kit.recording_id))
    await page.get_by_label("Qualification").fill("Interpellation rue Jean-Jaurès")
    await page.get_by_role("button", name="Rattacher l'enregistrement").click()
    await page.get_by_role("link", name="Extraire cet enregistrement").click()
    found += await _violations(page, "extraction")
    await page.get_by_label("Motif de l'extraction").fill("Réquisition du parquet")
    await page.get_by_label("Destinataires").fill("OPJ Martin\nParquet de Créteil")
    async with page.expect_download() as waiting:
        await page.get_by_role("button", name="Extraire et télécharger").click()
    download = await waiting.value
    package = tmp_path / "paquet.zip"
    await download.save_as(package)
    assert download.suggested_filename.endswith(".zip")

    async with httpx.AsyncClient(timeout=30) as http:
        vault_key = (await http.get(f"{running.vault}/v1/audit/public-key")).json()
        receipt_key = (await http.get(f"{running.ingest}/v1/receipts/public-key")).json()
    report = verify_package(
        package, vault_key=vault_key["public_key"], receipt_key=receipt_key["public_key"]
    )
    assert report.valid, report.problems
    assert not report.unauthenticated

    # Detached afterwards, with its motif: the copy made stays logged.
    await page.get_by_role("link", name="Retour à la procédure").click()
    await screenshot(page, "procedure", tmp_path)
    await page.get_by_role("link", name="Détacher cet enregistrement").click()
    await expect(page.locator("h1")).to_have_text("Détacher un enregistrement")
    found += await _violations(page, "détachement")
    await page.get_by_role("button", name="Détacher l'enregistrement").click()
    await expect(page.locator(".error-summary")).to_contain_text("motif du détachement")
    found += await _violations(page, "détachement refusé")
    await screenshot(page, "detacher", tmp_path)
    await page.get_by_label("Motif du détachement").fill("Rattaché par erreur")
    await page.get_by_role("button", name="Détacher l'enregistrement").click()
    await expect(page.locator("h1")).to_contain_text("PV-2026-0117")
    await expect(page.get_by_text("Aucun enregistrement n'est rattaché")).to_be_visible()
    assert found == [], "\n".join(found)
