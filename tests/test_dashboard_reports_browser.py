"""« Rapport annuel » finalised and « Préfecture » with its totals row, in a real browser
against the whole stack: the finalised year says when and by whom, with no form to finalise
again; the département's table ends with its totals; both pass axe-core."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.fixtures.browser import screenshot
from tests.fixtures.scene import Scene
from tests.test_dashboard_browser import _audit, sign_in

pytestmark = pytest.mark.slow


async def test_a_finalised_report_and_the_prefecture_table(
    audit_page: Page, running: Scene, tmp_path: Path
) -> None:
    page = audit_page
    kit = await running.organisation()
    await sign_in(page, running, kit, "maire")
    await page.goto(f"{running.dashboard}/rapport")
    await page.get_by_label("Nom du signataire").fill("Claire Martin")
    await page.get_by_label("Qualité du signataire").fill("Maire de L'Haÿ-les-Roses")
    await page.get_by_role("button", name="Finaliser le rapport").click()
    said = page.locator("p.finalised")
    await expect(said).to_contain_text("Rapport finalisé le")
    await expect(said).to_contain_text("par Claire Martin, Maire de L'Haÿ-les-Roses")
    await expect(page.get_by_role("button", name="Finaliser le rapport")).to_have_count(0)
    await expect(
        page.get_by_role("link", name="Télécharger le rapport finalisé (PDF)")
    ).to_be_visible()
    found = await _audit(page, "/rapport (finalisé)")
    await screenshot(page, "rapport-finalise", tmp_path)

    await page.context.clear_cookies()
    await page.goto(f"{running.dashboard}/connexion")
    await page.locator(f'input[type=radio][value="prefecture:{kit.departement}"]').check()
    await page.get_by_role("button").first.click()
    await page.wait_for_url(f"{running.dashboard}/")
    await page.goto(f"{running.dashboard}/prefecture")
    total = page.locator("tfoot th[scope=row]")
    await expect(total).to_have_text("Total du département")
    found += await _audit(page, "/prefecture")
    await screenshot(page, "prefecture", tmp_path)
    assert found == [], "\n".join(found)
