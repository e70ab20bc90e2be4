"""The dashboard's sessions as PostgreSQL keeps them (services/dashboard/kit/sessions.py): what
a reader of the table sees (no id, no token), what a writer of it can do (nothing with another
person's row), both lifetimes by the database's clock, the sweep, and the role the dashboard
acts as, which opens its sessions and nothing else. Several replicas behind a load balancer:
tests/test_dashboard_replicas_live.py."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.dashboard.kit.sessions import SessionStore
from shared.db import create_engine
from tests.fixtures.servers import Servers

SECRET = "a-test-session-secret-of-more-than-32-characters"
ACCESS_TOKEN = "eyJhbGciOiJFZERTQSJ9.an-access-token-for-the-vault.signature"
ID_TOKEN = "eyJhbGciOiJFZERTQSJ9.an-id-token-from-the-provider.signature"


def _contents() -> dict[str, Any]:
    return {
        "person": {"subject": "agent-0042", "name": "Anne Dupré", "roles": ["responsable"]},
        "tokens": {"access_token": ACCESS_TOKEN, "id_token": ID_TOKEN, "expires_at": 2**31},
        "csrf": "a-csrf-token-of-the-session",
    }


@pytest.fixture
async def dashboard_engine(servers: Servers) -> AsyncIterator[AsyncEngine]:
    """As the dashboard connects: its own role (migration 0016)."""
    engine = create_engine(
        servers.database_url, application_name="temoin-tests", role="temoin_dashboard"
    )
    yield engine
    await engine.dispose()


def _store(engine: AsyncEngine, secret: str = SECRET, **lifetimes: float) -> SessionStore:
    return SessionStore(
        engine,
        secret=secret,
        idle_s=lifetimes.get("idle_s", 60),
        max_age_s=lifetimes.get("max_age_s", 300),
    )


async def _row(engine: AsyncEngine, session_id: str) -> dict[str, Any] | None:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT * FROM dashboard.sessions WHERE key = :key"),
                {"key": hashlib.sha256(session_id.encode()).digest()},
            )
        ).one_or_none()
    return dict(row._mapping) if row else None


async def _age(engine: AsyncEngine, session_id: str, column: str, seconds: int) -> None:
    """Time passing for one session: its ``column`` moved ``seconds`` into the past."""
    async with engine.begin() as connection:
        await connection.execute(
            text(
                f"UPDATE dashboard.sessions SET {column} = {column} - make_interval(secs => :s) "
                "WHERE key = :key"
            ),
            {"s": seconds, "key": hashlib.sha256(session_id.encode()).digest()},
        )


async def test_a_row_holds_neither_the_cookies_id_nor_a_token_in_clear(
    dashboard_engine: AsyncEngine, engine: AsyncEngine
) -> None:
    store = _store(dashboard_engine)
    session_id = await store.create(_contents())
    cookie = store.signed(session_id)
    everything = b""
    async with engine.connect() as connection:  # what a dump of the table holds
        for row in await connection.execute(text("SELECT * FROM dashboard.sessions")):
            everything += b"|".join(str(v).encode() if not isinstance(v, bytes) else v for v in row)
    row = await _row(engine, session_id)
    assert row is not None and row["key"] == hashlib.sha256(session_id.encode()).digest()
    for secret in (session_id, cookie, ACCESS_TOKEN, ID_TOKEN, "an-access-token", "Anne Dupré"):
        assert secret.encode() not in everything, secret
    assert b"eyJ" not in row["sealed"] and b"access_token" not in row["sealed"]
    assert await store.get(session_id) == _contents()  # the dashboard, with its secret, reads it

    # Without the secret (the table alone, or another deployment's secret), nothing opens;
    # the row is dropped.
    assert (
        await _store(dashboard_engine, secret="another-secret-" + "x" * 32).get(session_id) is None
    )
    assert await _row(engine, session_id) is None


async def test_a_row_copied_over_another_opens_no_session(
    dashboard_engine: AsyncEngine, engine: AsyncEngine
) -> None:
    """A writer of the table who copies a signed-in person's row over their own session's
    (whose cookie they hold) gets no session: the contents are sealed to their row."""
    store = _store(dashboard_engine)
    victim = await store.create(_contents())
    attacker = await store.create({"next": "/"})
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE dashboard.sessions SET sealed = "
                "(SELECT sealed FROM dashboard.sessions WHERE key = :victim) WHERE key = :attacker"
            ),
            {
                "victim": hashlib.sha256(victim.encode()).digest(),
                "attacker": hashlib.sha256(attacker.encode()).digest(),
            },
        )
    assert await store.get(attacker) is None
    assert await store.get(victim) == _contents()


async def test_sessions_end_when_idle_or_too_old_and_the_sweep_deletes_them(
    dashboard_engine: AsyncEngine, engine: AsyncEngine
) -> None:
    store = _store(dashboard_engine, idle_s=60, max_age_s=300)
    idle, old, kept = [await store.create({"n": n}) for n in range(3)]

    await _age(engine, idle, "seen_at", 59)
    assert await store.get(idle) == {"n": 0}  # used within its idle time: read, and renewed
    await _age(engine, idle, "seen_at", 59)
    assert await store.get(idle) == {"n": 0}
    await _age(engine, idle, "seen_at", 61)
    assert await store.get(idle) is None  # unused 61 s
    assert await _row(engine, idle) is None

    await _age(engine, old, "created_at", 301)  # used just now, but signed in too long ago
    assert await store.get(old) is None

    another = await store.create({"n": 3})
    await _age(engine, another, "seen_at", 120)
    assert await _row(engine, another) is not None
    assert await store.sweep() >= 1
    assert await _row(engine, another) is None
    assert await store.get(kept) == {"n": 2}


async def test_save_drop_and_an_ended_session_stays_ended(dashboard_engine: AsyncEngine) -> None:
    store = _store(dashboard_engine)
    session_id = await store.create({"step": 1})
    await store.save(session_id, {"step": 2})
    assert await store.get(session_id) == {"step": 2}
    await store.drop(session_id)  # signed out, on any replica
    await store.save(session_id, {"step": 3})  # a late write from another replica's request
    assert await store.get(session_id) is None


async def test_the_dashboards_role_opens_its_sessions_and_nothing_else(
    dashboard_engine: AsyncEngine, servers: Servers
) -> None:
    async with dashboard_engine.connect() as connection:
        await connection.execute(text("SELECT count(*) FROM dashboard.sessions"))
    for table in ("vault.recordings", "vault.organisations", "audit.entries", "ingest.receipts"):
        async with dashboard_engine.connect() as connection:
            with pytest.raises(ProgrammingError, match="permission denied"):
                await connection.execute(text(f"SELECT 1 FROM {table} LIMIT 1"))
    services = create_engine(
        servers.database_url, application_name="temoin-tests", role="temoin_service"
    )
    try:
        async with services.connect() as connection:
            with pytest.raises(ProgrammingError, match="permission denied"):
                await connection.execute(text("SELECT 1 FROM dashboard.sessions LIMIT 1"))
    finally:
        await services.dispose()


async def test_the_sessions_database_away_is_a_french_503_and_not_ready(
    dashboard_engine: AsyncEngine,
) -> None:
    """A person with a session, the database away (stopped, failing over): a French page that
    says to retry, 503 with Retry-After, not the 500 of a bug; /readyz names the database."""
    from services.dashboard.app import create_app
    from services.dashboard.kit.sessions import COOKIE
    from services.dashboard.settings import DashboardSettings
    from temoin.embedded import free_port
    from tests.fixtures.oidc import close_dashboard

    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    app = create_app(DashboardSettings(database_url=nowhere, session_secret=SECRET))
    cookie = _store(dashboard_engine).signed("an-id-whose-row-cannot-be-read")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://dashboard.test", cookies={COOKIE: cookie}
    ) as http:
        page = await http.get("/enregistrements")
        ready = await http.get("/readyz")  # the cookie too: the probe reads no session
        missing = await http.get("/static/absent.css")
    await close_dashboard(app)
    assert page.status_code == 503, page.text
    assert page.headers["retry-after"] == "5"
    assert "Réessayez dans un instant" in page.text and "Traceback" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"] != "ok"
    assert missing.status_code == 404 and "Page introuvable" in missing.text
