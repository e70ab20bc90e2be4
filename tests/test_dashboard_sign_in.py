"""Signing in to the dashboard against a second, independent provider (node-oidc-provider):
code + PKCE, state and nonce, userinfo as a signed JWT, acr asked and checked, sign-out at the
provider; and a newcomer maire who creates the organisation from nothing."""

from __future__ import annotations

import html
import uuid
from urllib.parse import parse_qs, urlsplit

from tests.fixtures.apps import ClientFactory
from tests.fixtures.oidc import OidcProvider, open_browser, person_claims
from tests.fixtures.servers import Servers
from tests.test_dashboard_pages import _csrf


async def test_authorization_request_is_code_pkce_with_long_state_and_nonce(
    oidc_provider: OidcProvider, client_for: ClientFactory, servers: Servers
) -> None:
    async with open_browser(
        oidc_provider, client_for, servers.database_url, oidc_acr_values="eidas2"
    ) as browser:
        response = await browser.http.get("/connexion", follow_redirects=False)
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    assert location.netloc == urlsplit(oidc_provider.issuer).netloc
    query = {name: values[0] for name, values in parse_qs(location.query).items()}
    assert query["response_type"] == "code"
    assert query["code_challenge_method"] == "S256"
    assert len(query["code_challenge"]) >= 43
    assert len(query["state"]) >= 32 and len(query["nonce"]) >= 32
    assert query["acr_values"] == "eidas2"
    assert query["redirect_uri"] == f"{oidc_provider.dashboard_url}/auth/callback"
    # The session cookie is opaque, HttpOnly and SameSite: the state stays on the server.
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert query["state"] not in cookie


async def test_a_newcomer_maire_signs_in_and_creates_the_organisation(
    oidc_provider: OidcProvider, client_for: ClientFactory, servers: Servers
) -> None:
    org = uuid.uuid4()
    subject = f"maire-{org.hex[:8]}"
    async with open_browser(
        oidc_provider,
        client_for,
        servers.database_url,
        oidc_acr_values="eidas2",
        oidc_required_acr="eidas2",
    ) as browser:
        home = await browser.sign_in(subject, **person_claims(org, "maire", name="Anne Dupré"))
        assert home.status_code == 200, home.text
        assert str(home.url) == f"{oidc_provider.dashboard_url}/"
        assert "Anne Dupré" in home.text  # the name came from the userinfo JWT
        assert "Créer l'organisation" in home.text, home.text[home.text.find("<main") :]
        # No token in the page, none in a cookie.
        for cookie in browser.http.cookies.jar:
            assert cookie.value is not None and cookie.value.count(".") <= 1
        assert "eyJ" not in home.text

        refused = await browser.http.post(
            "/organisation",
            data={
                "csrf_token": _csrf(home),
                "name": "Police municipale de Créteil",
                "departement": "94",
                "communes": "9402 Créteil",  # four digits: the vault refuses the INSEE code
            },
        )
        assert refused.status_code == 422
        assert 'href="#champ-communes"' in refused.text
        assert 'aria-invalid="true"' in refused.text

        created = await browser.http.post(
            "/organisation",
            data={
                "csrf_token": _csrf(home),
                "name": "Police municipale de Créteil",
                "departement": "94",
                "communes": "94028 Créteil",
            },
        )
        assert created.status_code == 200, created.text
        assert "Votre organisation" in created.text
        assert "Créteil (94028)" in created.text


async def test_an_acr_below_the_required_one_is_refused(
    oidc_provider: OidcProvider, client_for: ClientFactory, servers: Servers
) -> None:
    org = uuid.uuid4()
    async with open_browser(
        oidc_provider,
        client_for,
        servers.database_url,
        oidc_acr_values="eidas1",
        oidc_required_acr="eidas2",
    ) as browser:
        page = await browser.sign_in(
            f"maire-{org.hex[:8]}", **person_claims(org, "maire", name="X")
        )
        assert page.status_code == 403
        assert "double authentification" in page.text
        assert (
            await browser.http.get("/enregistrements", follow_redirects=False)
        ).status_code == 303


async def test_a_replayed_callback_is_refused_in_french(
    oidc_provider: OidcProvider, client_for: ClientFactory, servers: Servers
) -> None:
    async with open_browser(oidc_provider, client_for, servers.database_url) as browser:
        page = await browser.http.get("/auth/callback?code=forged&state=" + "x" * 43)
    assert page.status_code == 400
    assert "La connexion n'a pas abouti" in html.unescape(page.text)
    assert "Traceback" not in page.text


async def test_sign_out_ends_the_session_and_goes_to_the_provider(
    oidc_provider: OidcProvider, client_for: ClientFactory, servers: Servers
) -> None:
    org = uuid.uuid4()
    async with open_browser(oidc_provider, client_for, servers.database_url) as browser:
        home = await browser.sign_in(
            f"maire-{org.hex[:8]}", **person_claims(org, "maire", name="Y")
        )
        assert home.status_code == 200
        without_token = await browser.http.post("/deconnexion", data={}, follow_redirects=False)
        assert without_token.status_code == 403  # CSRF
        out = await browser.http.post(
            "/deconnexion", data={"csrf_token": _csrf(home)}, follow_redirects=False
        )
        assert out.status_code == 303
        location = urlsplit(out.headers["location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == (
            f"{oidc_provider.issuer}/session/end"
        )
        query = parse_qs(location.query)
        assert query["id_token_hint"][0].count(".") == 2
        assert query["post_logout_redirect_uri"] == [f"{oidc_provider.dashboard_url}/au-revoir"]
        # The provider accepts the hint (its confirmation page), and the session here is over.
        assert (await browser.http.get(out.headers["location"])).status_code == 200
        again = await browser.http.get("/", follow_redirects=False)
        assert "Se connecter" in again.text
