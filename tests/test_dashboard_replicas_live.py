"""Two dashboard processes behind HAProxy, round robin without stickiness (issue 19): the
sign-in's redirect to the provider issued by one replica, its callback answered by the other
(the OIDC state and nonce are found there), the pages then served by both, and a sign-out on
one ending the session on the other. The table the sessions live in holds no cookie's id."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dashboard.kit.sessions import COOKIE
from services.dashboard.settings import DashboardSettings
from temoin.embedded import free_port
from tests.fixtures.live import LiveService, service_env
from tests.fixtures.oidc import OidcProvider, dashboard_settings, person_claims
from tests.fixtures.replicas import ReplicaStack
from tests.fixtures.servers import Servers
from tests.test_dashboard_pages import _csrf

pytestmark = pytest.mark.scale

REPLICAS = ("dashboard0", "dashboard1")


def _environment(settings: DashboardSettings) -> dict[str, str]:
    """The DASHBOARD_ variables that give a `temoin serve dashboard` process these settings."""
    env = {}
    for name, field in DashboardSettings.model_fields.items():
        value = getattr(settings, name)
        if field.validation_alias is None and value is not None:
            env[f"DASHBOARD_{name.upper()}"] = str(value)
    return env


@pytest.fixture(scope="module")
def dashboards(
    servers: Servers, oidc_provider: OidcProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReplicaStack]:
    """A vault trusting the provider, and two dashboards behind HAProxy at the address the
    provider's client registration names (the dashboards' public URL)."""
    directory = tmp_path_factory.mktemp("dashboards")
    vault_port = free_port()
    vault = LiveService(
        "vault",
        f"http://127.0.0.1:{vault_port}",
        service_env("vault", servers.env(), vault_port)
        | {"AUTH_ISSUER": oidc_provider.issuer, "AUTH_JWKS_URL": oidc_provider.jwks_url},
        directory / "vault.log",
    )
    replicas = []
    for index in range(2):
        port = free_port()
        settings = dashboard_settings(
            oidc_provider,
            servers.database_url,
            host="127.0.0.1",
            port=port,
            vault_url=vault.url,
            reporting_url=f"http://127.0.0.1:{free_port()}",  # not called by these pages
        )
        replicas.append(
            LiveService(
                "dashboard",
                f"http://127.0.0.1:{port}",
                servers.env() | _environment(settings),  # DATABASE_URL: the test session's
                directory / f"dashboard{index}.log",
            )
        )
    balancer_port = urlsplit(oidc_provider.dashboard_url).port
    assert balancer_port is not None
    stack = ReplicaStack(directory, {"dashboard": replicas}, {"dashboard": balancer_port})
    try:
        vault.start()  # the dashboards are ready once it answers
        with stack.running(timeout=60):
            yield stack
    finally:
        vault.stop()


def _served_by(stack: ReplicaStack, method: str, path: str) -> list[str]:
    return [s.server for s in stack.served() if s.method == method and s.path == path]


async def test_a_session_begun_on_one_replica_is_served_and_ended_by_the_other(
    dashboards: ReplicaStack, oidc_provider: OidcProvider, engine: AsyncEngine
) -> None:
    org = uuid.uuid4()
    subject = f"maire-{org.hex[:8]}"
    oidc_provider.sign_in_as(subject, **person_claims(org, "maire", name="Anne Dupré"))
    async with httpx.AsyncClient(base_url=oidc_provider.dashboard_url, timeout=30) as browser:
        # One replica sends the person to the provider, keeping state and nonce in the session.
        to_provider = await browser.get("/connexion")
        assert to_provider.status_code == 302, to_provider.text
        before_sign_in = browser.cookies[COOKIE]
        location = to_provider.headers["location"]
        while not location.startswith(f"{oidc_provider.dashboard_url}/auth/callback"):
            hop = await browser.get(location)  # the provider's own pages, signing in at once
            assert hop.is_redirect, hop.text
            location = str(hop.next_request.url) if hop.next_request else ""
        # The other replica answers the callback: it finds the state there, in the database.
        signed_in = await browser.get(location)
        assert signed_in.status_code == 303, signed_in.text
        assert signed_in.headers["location"] == "/"
        (sent,) = _served_by(dashboards, "GET", "/connexion")
        (answered,) = _served_by(dashboards, "GET", "/auth/callback")
        assert sent != answered, "the callback reached the replica that sent the person away"
        cookie = browser.cookies[COOKIE]
        assert cookie != before_sign_in  # a new id at sign-in (fixation), whichever replica

        # Every replica serves the signed-in person, the one that signed them in or not.
        for _ in range(4):
            home = await browser.get("/")
            assert home.status_code == 200, home.text
            assert "Anne Dupré" in home.text and "Créer l'organisation" in home.text
        assert set(_served_by(dashboards, "GET", "/")) == set(REPLICAS)

        # The table holds the session under the SHA-256 of its id, and neither the id nor the
        # signed cookie anywhere.
        session_id = cookie.rsplit(".", 1)[0]
        async with engine.connect() as connection:
            rows = (await connection.execute(text("SELECT * FROM dashboard.sessions"))).all()
        dump = b"".join(v if isinstance(v, bytes) else str(v).encode() for r in rows for v in r)
        assert hashlib.sha256(session_id.encode()).digest() in {r.key for r in rows}
        assert session_id.encode() not in dump and cookie.encode() not in dump
        assert b"eyJ" not in dump  # no JWT: no access token, no ID token

        # Signed out through one replica: the other no longer knows the session either.
        confirm = await browser.get("/deconnexion")
        signed_out = await browser.post("/deconnexion", data={"csrf_token": _csrf(confirm)})
        assert signed_out.status_code == 303, signed_out.text
        assert "Max-Age=0" in signed_out.headers["set-cookie"]
    # The cookie kept from before (a copy an attacker made, say), on each replica in turn.
    async with httpx.AsyncClient(
        base_url=oidc_provider.dashboard_url, headers={"Cookie": f"{COOKIE}={cookie}"}
    ) as replay:
        for _ in REPLICAS:
            again = await replay.get("/enregistrements")
            assert again.status_code == 303, again.text
            assert again.headers["location"] == "/connexion?suite=/enregistrements"
    assert set(_served_by(dashboards, "GET", "/enregistrements")) == set(REPLICAS)
