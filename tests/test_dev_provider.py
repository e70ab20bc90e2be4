"""The development OpenID provider (temoin/dev_provider.py): the dashboard's sign-in flow,
authorization code + PKCE S256, driven over HTTP as a relying party drives it, and the access
token it issues taken by a real vault."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from temoin.dev_issuer import DevIssuer
from temoin.dev_provider import (
    CLIENT_ID,
    PEOPLE_SQL,
    DevClient,
    Identity,
    ProviderConfig,
    create_app,
    identities_of,
    load_client,
)
from tests.fixtures.apps import serve_in_process
from tests.fixtures.directory import World
from tests.fixtures.servers import Servers

SECRET = "s" * 43
BASE = "http://127.0.0.1:8700"
REDIRECT = "http://127.0.0.1:8740/auth/callback"


@dataclass
class Flow:
    """One sign-in as the dashboard starts it: its state, nonce and PKCE verifier."""

    state: str
    nonce: str
    verifier: str

    @classmethod
    def new(cls) -> Flow:
        return cls(secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(48))

    @property
    def challenge(self) -> str:
        digest = hashlib.sha256(self.verifier.encode()).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def params(self, **extra: str) -> dict[str, str]:
        return {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT,
            "scope": "openid profile",
            "state": self.state,
            "nonce": self.nonce,
            "code_challenge": self.challenge,
            "code_challenge_method": "S256",
            **extra,
        }


class _Form(HTMLParser):
    """The sign-in page's form: its hidden fields and its choices (radio value -> label)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden: list[tuple[str, str]] = []
        self.choices: dict[str, str] = {}
        self._ids: dict[str, str] = {}
        self._label_for: str | None = None
        self.headings: list[str] = []
        self._in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "input" and a.get("type") == "hidden":
            self.hidden.append((a["name"], a["value"]))
        elif tag == "input" and a.get("type") == "radio":
            self._ids[a["id"]] = a["value"]
        elif tag == "label":
            self._label_for = a.get("for")
        elif tag == "h1":
            self._in_h1 = True

    def handle_data(self, data: str) -> None:
        if self._label_for is not None:
            self.choices[self._ids[self._label_for]] = data
        if self._in_h1:
            self.headings.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "label":
            self._label_for = None
        elif tag == "h1":
            self._in_h1 = False


def parse_form(html: str) -> _Form:
    form = _Form()
    form.feed(html)
    return form


def _in_transaction(connection: AsyncConnection) -> Any:
    """The directory as the provider reads it (its SQL), inside the test's transaction."""

    async def read() -> list[Identity]:
        result = await connection.execute(text(PEOPLE_SQL))
        return identities_of([dict(row) for row in result.mappings()])

    return read


@pytest.fixture
async def provider(
    servers: Servers, connection: AsyncConnection
) -> AsyncIterator[httpx.AsyncClient]:
    config = ProviderConfig(
        issuer=DevIssuer(servers.issuer.directory, issuer=servers.issuer.issuer),
        client=DevClient(CLIENT_ID, SECRET),
        directory=_in_transaction(connection),
    )
    async with serve_in_process(create_app(config)) as client:  # type: ignore[arg-type]
        client.base_url = httpx.URL(BASE)
        yield client


async def sign_in(
    provider: httpx.AsyncClient, flow: Flow, person: str | None = None, **extra: str
) -> tuple[httpx.Response, _Form]:
    """GET the sign-in page, choose ``person`` (a key, or a label's start), POST it."""
    page = await provider.get("/authorize", params=flow.params(**extra))
    assert page.status_code == 200, page.text
    form = parse_form(page.text)
    if person is not None and person not in form.choices:
        person = next(k for k, label in form.choices.items() if label.startswith(person))
    answer = await provider.post(
        "/authorize", data={**dict(form.hidden), "person": person or next(iter(form.choices))}
    )
    return answer, form


def code_of(answer: httpx.Response, flow: Flow) -> str:
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == [flow.state]
    return query["code"][0]


async def exchange(
    provider: httpx.AsyncClient, code: str, verifier: str, **extra: str
) -> httpx.Response:
    return await provider.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            **extra,
        },
        auth=(CLIENT_ID, SECRET),
    )


def verify_id_token(token: str, servers: Servers, audience: str = CLIENT_ID) -> dict[str, Any]:
    jwks = jwt.PyJWKSet.from_json(servers.issuer.jwks_path.read_text())
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    key = next(k for k in jwks.keys if k.key_id == header["kid"])
    claims: dict[str, Any] = jwt.decode(
        token, key.key, algorithms=["EdDSA"], audience=audience, issuer=servers.issuer.issuer
    )
    return claims


async def test_discovery_document(provider: httpx.AsyncClient, servers: Servers) -> None:
    from authlib.oidc.discovery import OpenIDProviderMetadata
    from authlib.oidc.rpinitiated import OpenIDProviderMetadata as RPInitiatedMetadata

    class WithoutRS256(OpenIDProviderMetadata):  # type: ignore[misc]
        # The one deviation from OpenID Discovery, on purpose: it says RS256 MUST be listed;
        # this provider signs with the development issuer's Ed25519 key only (EdDSA), as
        # `temoin token` does.
        def validate_id_token_signing_alg_values_supported(self) -> None:
            assert self["id_token_signing_alg_values_supported"] == ["EdDSA"]

    document = (await provider.get("/.well-known/openid-configuration")).json()
    WithoutRS256(document).validate(metadata_classes=[RPInitiatedMetadata])
    issuer = servers.issuer.issuer
    assert document["issuer"] == issuer
    assert issuer.startswith("http://127.0.0.1:")  # an OIDC issuer is a URL
    for name, path in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("userinfo_endpoint", "/userinfo"),
        ("jwks_uri", "/jwks"),
        ("end_session_endpoint", "/logout"),
    ]:
        assert document[name] == issuer + path
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["id_token_signing_alg_values_supported"] == ["EdDSA"]
    assert document["acr_values_supported"] == ["eidas1"]
    jwks = (await provider.get("/jwks")).json()
    assert [(k["kty"], k["crv"], k["alg"]) for k in jwks["keys"]] == [("OKP", "Ed25519", "EdDSA")]


async def test_sign_in_as_a_person_of_the_directory_then_call_the_vault(
    world: World, provider: httpx.AsyncClient, servers: Servers
) -> None:
    own = world.own
    tag = own.id.hex[:8]
    flow = Flow.new()
    page = await provider.get("/authorize", params=flow.params())
    assert page.headers["content-type"].startswith("text/html")
    assert '<html lang="fr">' in page.text and "<script" not in page.text
    form = parse_form(page.text)
    assert form.headings == ["Se connecter à Témoin"]
    # Everyone who can sign in: the maire, the DPO, the agents with a subject, the préfecture,
    # and a newcomer.
    assert form.choices[f"maire:{own.id}"].startswith("Maire (")
    assert form.choices[f"dpo:{own.id}"].startswith("Délégué à la protection des données")
    assert form.choices[f"agent:{own.agents['habilite']}"] == f"Habilite Test {tag}"
    assert f"agent:{own.agents['responsable']}" in form.choices
    assert f"prefecture:{own.departement}" in form.choices
    assert "nouveau-maire" in form.choices
    roles_of = re.search(rf'p\d+-hint">rôles : ([^<]*) – identifiant habilite-{tag}<', page.text)
    assert roles_of is not None and roles_of.group(1) == "agent habilité, agent (porteur de caméra)"

    answer = await provider.post(
        "/authorize", data={**dict(form.hidden), "person": f"agent:{own.agents['habilite']}"}
    )
    code = code_of(answer, flow)
    issued = await exchange(provider, code, flow.verifier)
    assert issued.status_code == 200, issued.text
    tokens = issued.json()
    assert tokens["token_type"] == "Bearer"

    claims = verify_id_token(tokens["id_token"], servers)
    assert claims["sub"] == f"habilite-{tag}"
    assert claims["nonce"] == flow.nonce
    assert claims["org"] == str(own.id)
    assert "acr" not in claims  # not asked for

    # The access token is `temoin token`'s kind: the vault takes it as it is.
    me = await world.vault.get(
        "/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["subject"] == f"habilite-{tag}"
    assert body["organisation_id"] == str(own.id)
    assert sorted(body["roles"]) == ["agent", "habilite"]
    assert body["withheld"] == {}
    access = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert access["aud"] == "temoin" and access["iss"] == servers.issuer.issuer


async def test_the_prefecture_and_a_new_maire(
    world: World, provider: httpx.AsyncClient, servers: Servers
) -> None:
    flow = Flow.new()
    answer, _ = await sign_in(provider, flow, f"prefecture:{world.own.departement}")
    tokens = (await exchange(provider, code_of(answer, flow), flow.verifier)).json()
    me = await world.vault.get(
        "/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["departement"] == world.own.departement
    assert me.json()["roles"] == ["prefecture"]

    flow = Flow.new()
    answer, _ = await sign_in(provider, flow, "nouveau-maire")
    tokens = (await exchange(provider, code_of(answer, flow), flow.verifier)).json()
    claims = verify_id_token(tokens["id_token"], servers)
    org = uuid.UUID(claims["org"])
    assert claims["roles"] == ["maire"] and claims["sub"] == f"maire-{org.hex[:8]}"
    # A new maire creates the organisation with that token.
    created = await world.vault.put(
        f"/v1/organisations/{org}",
        headers={"Authorization": f"Bearer {tokens['access_token']}"},
        json={
            "name": "Police municipale de Gentilly",
            "departement": "94",
            "communes": [{"insee_code": "94037", "name": "Gentilly"}],
        },
    )
    assert created.is_success, created.text


async def test_a_wrong_code_verifier_is_refused(provider: httpx.AsyncClient) -> None:
    flow = Flow.new()
    answer, _ = await sign_in(provider, flow)
    refused = await exchange(provider, code_of(answer, flow), Flow.new().verifier)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_grant"


async def test_a_code_serves_once(provider: httpx.AsyncClient) -> None:
    flow = Flow.new()
    answer, _ = await sign_in(provider, flow)
    code = code_of(answer, flow)
    assert (await exchange(provider, code, flow.verifier)).status_code == 200
    again = await exchange(provider, code, flow.verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


async def test_a_code_expires(provider: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    flow = Flow.new()
    answer, _ = await sign_in(provider, flow)
    code = code_of(answer, flow)
    later = time.time() + 61
    monkeypatch.setattr("temoin.dev_provider.time.time", lambda: later)
    assert (await exchange(provider, code, flow.verifier)).json()["error"] == "invalid_grant"


async def test_the_client_must_authenticate(provider: httpx.AsyncClient) -> None:
    flow = Flow.new()
    answer, _ = await sign_in(provider, flow)
    refused = await provider.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": code_of(answer, flow),
            "redirect_uri": REDIRECT,
            "code_verifier": flow.verifier,
        },
        auth=(CLIENT_ID, "wrong-secret"),
    )
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "http://evil.example/auth/callback",
        "https://127.0.0.1:8740/auth/callback",
        "http://127.0.0.1:8740/elsewhere",
        "http://127.0.0.1:8740/auth/callback?next=http://evil.example",
        "http://127.0.0.1.evil.example:8740/auth/callback",
    ],
)
async def test_a_redirect_uri_not_allowed_is_refused_without_redirecting(
    provider: httpx.AsyncClient, redirect_uri: str
) -> None:
    page = await provider.get("/authorize", params=Flow.new().params(redirect_uri=redirect_uri))
    assert page.status_code == 400
    assert "location" not in page.headers
    assert "invalid_request" in page.text


async def test_pkce_s256_is_required(provider: httpx.AsyncClient) -> None:
    flow = Flow.new()
    for params in [
        {k: v for k, v in flow.params().items() if not k.startswith("code_challenge")},
        flow.params(code_challenge_method="plain", code_challenge=flow.verifier),
    ]:
        refused = await provider.get("/authorize", params=params)
        assert refused.status_code == 302  # a known client and an allowed URI: told by redirect
        query = parse_qs(urlsplit(refused.headers["location"]).query)
        assert query["error"] == ["invalid_request"] and query["state"] == [flow.state]


async def test_prompt_none_asks_for_a_sign_in(provider: httpx.AsyncClient) -> None:
    flow = Flow.new()
    refused = await provider.get("/authorize", params=flow.params(prompt="none"))
    assert refused.status_code == 302
    query = parse_qs(urlsplit(refused.headers["location"]).query)
    assert query["error"] == ["login_required"] and query["state"] == [flow.state]


async def test_acr_when_asked(provider: httpx.AsyncClient, servers: Servers) -> None:
    flow = Flow.new()
    answer, _ = await sign_in(provider, flow, acr_values="eidas1")
    tokens = (await exchange(provider, code_of(answer, flow), flow.verifier)).json()
    assert verify_id_token(tokens["id_token"], servers)["acr"] == "eidas1"


async def test_a_nonce_serves_once(provider: httpx.AsyncClient) -> None:
    flow = Flow.new()
    answer, _ = await sign_in(provider, flow)
    code_of(answer, flow)
    replay = await provider.get("/authorize", params=flow.params())
    assert replay.status_code == 302
    assert parse_qs(urlsplit(replay.headers["location"]).query)["error"] == ["invalid_request"]


async def test_userinfo_as_json(provider: httpx.AsyncClient) -> None:
    flow = Flow.new()
    answer, _ = await sign_in(provider, flow, "nouveau-maire")
    tokens = (await exchange(provider, code_of(answer, flow), flow.verifier)).json()
    info = await provider.get(
        "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert info.status_code == 200
    assert info.headers["content-type"] == "application/json"
    assert info.json()["roles"] == ["maire"] and "org" in info.json()
    unknown = await provider.get("/userinfo", headers={"Authorization": "Bearer nope"})
    assert unknown.status_code == 401


async def test_userinfo_as_a_signed_jwt(servers: Servers, connection: AsyncConnection) -> None:
    config = ProviderConfig(
        issuer=DevIssuer(servers.issuer.directory, issuer=servers.issuer.issuer),
        client=DevClient(CLIENT_ID, SECRET, userinfo_jwt=True),
        directory=_in_transaction(connection),
    )
    async with serve_in_process(create_app(config)) as provider:  # type: ignore[arg-type]
        provider.base_url = httpx.URL(BASE)
        flow = Flow.new()
        answer, _ = await sign_in(provider, flow, "nouveau-maire")
        tokens = (await exchange(provider, code_of(answer, flow), flow.verifier)).json()
        info = await provider.get(
            "/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
    assert info.status_code == 200
    assert info.headers["content-type"] == "application/jwt"
    claims = verify_id_token(info.text, servers)
    assert claims["roles"] == ["maire"]


async def test_end_session_redirects_with_an_id_token_hint(
    provider: httpx.AsyncClient,
) -> None:
    flow = Flow.new()
    answer, _ = await sign_in(provider, flow, "nouveau-maire")
    tokens = (await exchange(provider, code_of(answer, flow), flow.verifier)).json()
    after = "http://127.0.0.1:8740/"
    out = await provider.get(
        "/logout",
        params={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": after,
            "state": "au-revoir",
        },
    )
    assert out.status_code == 302
    assert out.headers["location"] == after + "?state=au-revoir"
    # Elsewhere than the loopback, or with no proof of who signs out: no redirect.
    for params in [
        {"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": "http://evil.example/"},
        {"client_id": CLIENT_ID, "post_logout_redirect_uri": after},
    ]:
        page = await provider.get("/logout", params=params)
        assert page.status_code == 200 and "déconnecté" in page.text
    forged = await provider.get(
        "/logout", params={"id_token_hint": tokens["id_token"][:-4] + "AAAA"}
    )
    assert forged.status_code == 400


def test_the_client_secret_is_generated_once_and_private(tmp_path: Any) -> None:
    first = load_client(tmp_path)
    assert len(first.client_secret) >= 32
    assert (tmp_path / "clients.json").stat().st_mode & 0o777 == 0o600
    assert load_client(tmp_path).client_secret == first.client_secret
