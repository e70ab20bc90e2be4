"""The browser harness itself (tests/fixtures/browser.py), on small pages a local server serves:
each check here can fail, and the dashboard's browser tests rely on them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from playwright.async_api import Page

from temoin.embedded import free_port
from tests.fixtures.browser import (
    _missing,
    audit_accessibility,
    describe,
    frame_at,
    frame_difference,
    frame_number,
    make_clip,
    screenshot,
    serious_violations,
    tab_to,
)

CLEAN = """<!doctype html>
<html lang="fr">
<head><meta charset="utf-8"><title>Témoin — Enregistrements</title>
<style>a:focus-visible { outline: 3px solid #000091; outline-offset: 2px; }</style></head>
<body>
<header><nav aria-label="Menu principal">
  <a href="/enregistrements">Enregistrements</a> <a href="/rapports">Rapports</a>
</nav></header>
<main>
  <h1>Enregistrements</h1>
  <form method="get" action="/enregistrements">
    <label for="agent">Agent</label> <input id="agent" name="agent" type="text">
    <button type="submit">Rechercher</button>
  </form>
  <img src="/logo.png" alt="Logo de la commune">
</main>
</body></html>"""

FAULTY = """<!doctype html>
<html lang="fr">
<head><meta charset="utf-8"><title>Page fautive</title></head>
<body><main>
  <h1>Recherche</h1>
  <input type="text" name="agent">
  <img src="/logo.png">
  <p style="color: #bbbbbb; background: #ffffff">Texte trop pâle pour être lu.</p>
</main></body></html>"""

SAME_FRAME = 3.0  # mean absolute pixel difference, 0-255
STRICT_CSP = {"Content-Security-Policy": "default-src 'self'; script-src 'self'"}
# 1x1 transparent PNG.
LOGO = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


class Site:
    def __init__(self, clip: Path) -> None:
        self.ranges: list[str] = []
        app = FastAPI()

        @app.middleware("http")
        async def record_ranges(request: Request, call_next):  # type: ignore[no-untyped-def]
            if "range" in request.headers:
                self.ranges.append(request.headers["range"])
            return await call_next(request)

        @app.get("/propre")
        def clean() -> HTMLResponse:
            return HTMLResponse(CLEAN, headers=STRICT_CSP)

        @app.get("/fautive")
        def faulty() -> HTMLResponse:
            return HTMLResponse(FAULTY)

        @app.get("/logo.png")
        def logo() -> Response:
            return Response(LOGO, media_type="image/png")

        @app.get("/lecteur")
        def player() -> HTMLResponse:
            page = (
                '<!doctype html><html lang="fr"><head><meta charset="utf-8"><title>Lecteur</title>'
                '</head><body style="margin:0"><video id="clip" src="/clip.mp4" width="640" '
                'height="360" muted preload="auto"></video></body></html>'
            )
            return HTMLResponse(page, headers=STRICT_CSP)

        @app.get("/clip.mp4")
        def video() -> FileResponse:  # Starlette answers Range requests with 206
            return FileResponse(clip, media_type="video/mp4")

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Site:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test site did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", seconds=3)


@pytest.fixture(scope="module")
def site(clip: Path) -> Iterator[Site]:
    with Site(clip) as running:
        yield running


async def test_a_clean_french_page_has_no_serious_violation(
    audit_page: Page, site: Site, tmp_path: Path
) -> None:
    await audit_page.goto(f"{site.url}/propre")
    violations = await audit_accessibility(audit_page)
    assert serious_violations(violations) == [], describe(violations)
    assert (await screenshot(audit_page, "harness-propre", tmp_path)).stat().st_size > 0


async def test_the_audit_names_what_is_wrong(audit_page: Page, site: Site) -> None:
    await audit_page.goto(f"{site.url}/fautive")
    found = {
        violation["id"] for violation in serious_violations(await audit_accessibility(audit_page))
    }
    assert {"label", "image-alt", "color-contrast"} <= found


async def test_a_strict_csp_blocks_the_audit_outside_audit_page(page: Page, site: Site) -> None:
    """Why audit_page exists: the dashboard's CSP (script-src 'self') refuses axe-core's inline
    script in an ordinary context, and the helper says which fixture to use."""
    await page.goto(f"{site.url}/propre")
    with pytest.raises(AssertionError, match="audit_page"):
        await audit_accessibility(page)


async def test_tab_reaches_the_first_link_with_a_visible_focus(page: Page, site: Site) -> None:
    await page.goto(f"{site.url}/propre")
    focus = await tab_to(page)
    assert (focus.tag, focus.text, focus.href) == ("a", "Enregistrements", "/enregistrements")
    assert focus.visible, focus
    assert (await tab_to(page)).text == "Rapports"
    # A focus drawn by nothing is seen as such (CSSOM: the page's CSP allows no inline style).
    await page.reload()
    await page.evaluate("document.querySelectorAll('a').forEach(a => a.style.outline = 'none')")
    hidden = await tab_to(page)
    assert hidden.text == "Enregistrements", hidden
    assert not hidden.visible, hidden


async def test_contexts_do_not_share_cookies(page: Page, site: Site) -> None:
    """A fresh context per test: this one starts with no cookie, whatever others set."""
    assert await page.context.cookies() == []
    await page.context.add_cookies([{"name": "session", "value": "x", "url": site.url}])
    assert len(await page.context.cookies()) == 1


async def test_the_player_shows_the_frame_at_the_time_sought(
    page: Page, site: Site, clip: Path, tmp_path: Path
) -> None:
    await page.goto(f"{site.url}/lecteur")
    png = await frame_at(page, "#clip", 1.0)
    (tmp_path / "frame-1.0.png").write_bytes(png)
    assert frame_number(png) == 25  # 25 images/s
    # The same frame differs by about 1 (scaling, colour conversion); the next one by 6 or more.
    same = frame_difference(png, clip, 1.0)
    neighbours = [frame_difference(png, clip, seconds) for seconds in (0.96, 1.04, 2.0)]
    assert same < SAME_FRAME < min(neighbours), (same, neighbours)
    png = await frame_at(page, "#clip", 2.0)
    assert frame_number(png) == 50
    assert frame_difference(png, clip, 2.0) < SAME_FRAME
    assert any(value.startswith("bytes=") for value in site.ranges), site.ranges


def test_a_missing_browser_fails_and_says_how_to_install_it(tmp_path: Path) -> None:
    """Never a silent skip: what `browser` and `audit_accessibility` do when Chromium or
    axe-core is absent."""
    with pytest.raises(pytest.fail.Exception, match=r"`make test` installs it"):
        _missing(tmp_path / "chromium", "Debian's chromium")
