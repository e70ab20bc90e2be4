"""Every service: liveness, readiness against the real servers, metrics, request ids, and
problem+json for every kind of bad request."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Message, Receive, Scope, Send

from shared import audit
from shared.audit import AuditAction, AuditEntry, entries
from shared.errors import Conflict
from shared.web import RefuseUnstorableText, SessionDep
from temoin.embedded import free_port
from tests.fixtures.apps import ClientFactory, serve_in_process, settings_for
from tests.fixtures.servers import Servers

SERVICES = ["ingest", "vault", "reporting"]


@pytest.mark.parametrize("service", SERVICES)
async def test_health_and_readiness(client_for: ClientFactory, service: str) -> None:
    async with client_for(service) as client:
        alive = await client.get("/healthz")
        assert alive.status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        # The vault also reports whether its store keeps locked objects locked; development
        # checks it in the background after starting (tests/test_store_write_once.py).
        if service == "vault":
            assert checks.pop("store_write_once") in ("ok", "not checked yet")
        assert checks == {"database": "ok", "storage": "ok"}


@pytest.mark.parametrize("service", SERVICES)
async def test_openapi_and_metrics(client_for: ClientFactory, service: str) -> None:
    async with client_for(service) as client:
        await client.get("/healthz")
        schema = (await client.get("/openapi.json")).json()
        assert {"/healthz", "/readyz", "/metrics"} <= set(schema["paths"])
        metrics = (await client.get("/metrics")).text
        assert f'route="/healthz",service="{service}",status="200"' in metrics


async def test_request_id_is_echoed_or_generated(client_for: ClientFactory) -> None:
    async with client_for("vault") as client:
        given = await client.get("/healthz", headers={"X-Request-ID": "dock-42.retry-1"})
        assert given.headers["X-Request-ID"] == "dock-42.retry-1"
        # An unsafe id (log injection) is replaced, not echoed.
        unsafe = await client.get("/healthz", headers={"X-Request-ID": "a b\tc"})
        assert unsafe.headers["X-Request-ID"] != "a b\tc"
        assert len(unsafe.headers["X-Request-ID"]) == 32


@pytest.mark.parametrize(
    ("broken", "failing"),
    [("s3_endpoint", "storage"), ("database_url", "database")],
)
async def test_readiness_names_what_is_down(servers: Servers, broken: str, failing: str) -> None:
    dead = f"127.0.0.1:{free_port()}"
    override = (
        {"s3_endpoint": f"http://{dead}"}
        if broken == "s3_endpoint"
        else {"database_url": f"postgresql://postgres@{dead}/postgres"}
    )
    from services.vault.app import create_app

    app = create_app(settings_for("vault", servers, **override))  # type: ignore[arg-type]
    async with serve_in_process(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["checks"][failing] != "ok"
    assert failing in body["detail"]


class _Payload(BaseModel):
    serial: str = Field(min_length=3)
    count: int


def _app_with_probe_routes(servers: Servers) -> FastAPI:
    """A service app made of the shared pieces (no background task to share its pool), plus
    routes that exercise the shared error handlers and the session dependency."""
    from services.config import service_lifespan
    from shared.web import create_service_app

    settings = settings_for("vault", servers)
    app = create_service_app(
        service="probe",
        title="probe",
        description="",
        version="0",
        lifespan=service_lifespan(settings, "probe"),
    )

    @app.post("/probe")
    async def probe(payload: _Payload) -> dict[str, str]:
        return {"serial": payload.serial}

    @app.get("/probe/conflict")
    async def conflict() -> None:
        raise Conflict("this clip is already registered", recording_id="r-1")

    @app.post("/probe/write-then-fail")
    async def write_then_fail(session: SessionDep) -> None:
        await audit.append(
            session,
            AuditEntry(
                action=AuditAction.directory_change,
                service="probe",  # the probe app's audit writer
                actor_subject="probe",
                organisation_id=None,
            ),
        )
        raise Conflict("refused after writing")

    @app.get("/probe/bug")
    async def bug() -> None:
        raise RuntimeError("secret internal detail")

    return app


async def test_bad_requests_get_problem_json(servers: Servers) -> None:
    async with serve_in_process(_app_with_probe_routes(servers)) as client:
        missing = await client.get("/no/such/route")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"

        wrong_method = await client.delete("/healthz")
        assert wrong_method.status_code == 405
        assert wrong_method.json()["status"] == 405

        malformed = await client.post(
            "/probe", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 422
        assert malformed.headers["content-type"] == "application/problem+json"

        invalid = await client.post("/probe", json={"serial": "x", "count": "many"})
        assert invalid.status_code == 422
        fields = {error["field"] for error in invalid.json()["errors"]}
        assert fields == {"body.serial", "body.count"}

        conflict = await client.get("/probe/conflict")
        assert conflict.status_code == 409
        assert conflict.json() == {
            "type": "https://temoin.fr/problems/conflict",
            "title": "Conflict",
            "status": 409,
            "detail": "this clip is already registered",
            "instance": "/probe/conflict",
            "recording_id": "r-1",
        }


async def test_unexpected_error_hides_internals(servers: Servers) -> None:
    app = _app_with_probe_routes(servers)
    async with serve_in_process(app, raise_app_exceptions=False) as client:
        response = await client.get("/probe/bug")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret internal detail" not in response.text
    assert "Traceback" not in response.text


async def test_a_failed_request_leaves_nothing_written(
    servers: Servers, engine: AsyncEngine
) -> None:
    """Through the production session dependency and a real connection pool."""
    count = select(func.count()).select_from(entries).where(entries.c.actor_subject == "probe")
    app = _app_with_probe_routes(servers)
    async with serve_in_process(app) as client:
        response = await client.post("/probe/write-then-fail")
        assert response.status_code == 409
        async with engine.connect() as connection:
            assert (await connection.execute(count)).scalar_one() == 0
        # The request's connection went back to the pool clean, not idle in a transaction.
        pool = client._transport.app.state["engine"].pool  # type: ignore[attr-defined]
        assert pool.checkedout() == 0


async def test_the_text_guard_hands_a_json_body_on_whole_or_not_at_all() -> None:
    """RefuseUnstorableText reads a JSON body in its pieces and hands it on in one; a client
    that leaves mid-body gets its answer (400) without the route running."""
    handed: list[Message] = []

    async def route(scope: Scope, receive: Receive, send: Send) -> None:
        handed.append(await receive())
        await Response(status_code=204)(scope, receive, send)

    async def run(messages: list[Message]) -> list[Message]:
        pending = iter(messages)
        sent: list[Message] = []

        async def receive() -> Message:
            return next(pending)

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "method": "POST", "path": "/probe", "query_string": b"",
                 "headers": [(b"content-type", b"application/json")]}  # fmt: skip
        await RefuseUnstorableText(route)(scope, receive, send)
        return sent

    pieces: list[Message] = [
        {"type": "http.request", "body": b'{"name": ', "more_body": True},
        {"type": "http.request", "body": b'"Athis"}', "more_body": False},
    ]
    sent = await run(pieces)
    assert handed == [{"type": "http.request", "body": b'{"name": "Athis"}', "more_body": False}]
    assert sent[0]["status"] == 204
    handed.clear()
    sent = await run([pieces[0], {"type": "http.disconnect"}])
    assert (handed, sent[0]["status"]) == ([], 400)
