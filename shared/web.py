"""What every Témoin service app has: lifespan resources, health and readiness, metrics,
request ids, problem+json errors, and the refusal of text PostgreSQL cannot store. Services
call ``create_service_app`` with their own settings' values; nothing here reads settings.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from types import UnionType
from typing import Annotated, Any, Literal, TypedDict, Union, get_args, get_origin
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.audit import AuditWriter, writer_info
from shared.auth import TokenVerifier
from shared.db import (
    DatabaseUnavailable,
    create_engine,
    create_sessionmaker,
    database_unavailable,
    ping,
    session_scope,
)
from shared.errors import (
    RETRY_AFTER_S,
    UnprocessableEntity,
    install_error_handlers,
    problem_response,
    unexpected_error,
)
from shared.inputs import UNSTORABLE, storable, unstorable_at
from shared.observability import RequestContextMiddleware, metrics_response, outages
from shared.openapi import body, document_contract, raises
from shared.storage import ObjectStore, StorageConfig, StorageError

READINESS_TIMEOUT_S = 3.0
# The JSON bodies the APIs take are a few KiB (an organisation with all its communes included).
JSON_BODY_LIMIT = 1 << 20


# A service's own condition for readiness, read without I/O (its background work keeps it up to
# date): what /readyz shows under its name, and whether the service is ready.
ReadinessCheck = Callable[[], tuple[str, bool]]


class ServiceState(TypedDict):
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    store: ObjectStore
    verifier: TokenVerifier


@asynccontextmanager
async def open_resources(
    *,
    database_url: str,
    storage: StorageConfig,
    application_name: str,
    verifier: TokenVerifier,
    audit_writer: AuditWriter,
    database_role: str | None = None,
    pool: dict[str, Any] | None = None,
) -> AsyncIterator[ServiceState]:
    """``audit_writer``: the service's entry key, which authenticates every audit entry its
    sessions append (shared/audit.py). ``pool``: create_engine's pool options."""
    engine = create_engine(
        database_url, application_name=application_name, role=database_role, **(pool or {})
    )
    try:
        yield ServiceState(
            engine=engine,
            sessionmaker=create_sessionmaker(engine, info=writer_info(audit_writer)),
            store=ObjectStore(storage),
            verifier=verifier,
        )
    finally:
        await engine.dispose()


@raises(503)
async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    # A context manager, not a nested generator: an exception raised by the handler reaches
    # session_scope at once, so the rollback happens now rather than when the GC gets to it.
    async with session_scope(request.state.sessionmaker) as session:
        yield session


@raises(503)
async def get_store(request: Request) -> ObjectStore:
    store: ObjectStore = request.state.store
    return store


# scope="function": the session commits when the handler returns, before the response is sent,
# so a client never sees a success whose data is not yet durable.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
StoreDep = Annotated[ObjectStore, Depends(get_store)]


async def _check(name: str, probe: Callable[[], Any]) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe(), READINESS_TIMEOUT_S)
    except TimeoutError:
        return name, "timeout"
    except Exception as exc:  # readiness reports any failure, it must not raise
        return name, f"error: {type(exc).__name__}"
    return name, "ok"


def outage_of(exc: BaseException) -> str | None:
    """The dependency whose outage ``exc`` is ("database", "object store"), or None for an
    error that is not an outage (a bug, a refusal)."""
    if isinstance(exc, StorageError):
        return "object store"
    if database_unavailable(exc):
        return "database"
    return None


def job_failed(logger: logging.Logger, job: str, exc: BaseException) -> None:
    """A background pass that failed: an outage is noted once (OutageLog), anything else is
    logged with its traceback. Either way the job tries again at its next pass."""
    dependency = outage_of(exc)
    if dependency is not None:
        outages.noticed(dependency, exc)
    else:
        logger.error("%s failed; trying again at the next pass", job, exc_info=exc)


async def _outage(request: Request, exc: Exception) -> JSONResponse:
    """The database or the store unavailable: 503 with Retry-After, logged once per outage,
    never a 500 with a traceback per request."""
    dependency = outage_of(exc)
    if dependency is None:
        return await unexpected_error(request, exc)
    outages.noticed(dependency, exc)
    return problem_response(
        503,
        "Service unavailable",
        f"the {dependency} is unavailable for a moment: retry later",
        slug="unavailable",
        instance=request.url.path,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def run_checks(probes: Mapping[str, Callable[[], Any]]) -> dict[str, str]:
    """Each dependency probed at once, bounded in time: name -> ok, timeout or the error."""
    return dict(await asyncio.gather(*(_check(name, probe) for name, probe in probes.items())))


def readiness_answer(
    checks: dict[str, str], ready: Mapping[str, bool] | None = None
) -> JSONResponse:
    """200 when every check passes, else the 503 problem naming the failing ones. ``ready``
    says which checks passed when a value other than "ok" can mean ready (the vault's own)."""
    passed = ready if ready is not None else {name: value == "ok" for name, value in checks.items()}
    failing = [name for name in checks if not passed.get(name, False)]
    if not failing:
        return JSONResponse({"status": "ready", "checks": checks})
    return problem_response(
        503,
        "Not ready",
        f"not ready: {', '.join(failing)}",
        slug="not-ready",
        instance="/readyz",
        extensions={"checks": checks},
    )


class Readiness(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str] = Field(
        description="each dependency: ok, timeout or the error; and the service's own checks "
        "(the vault's store_write_once: ok, not checked, or failed and why)"
    )


def _health_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @router.get(
        "/readyz",
        summary="Readiness: the database and the object store answer (and the service's own "
        "checks pass)",
        response_model=Readiness,
        responses={
            200: {"description": "every dependency answers"},
            503: {"description": "a dependency does not answer: `checks` says which"},
        },
    )
    async def readyz(request: Request) -> JSONResponse:
        state = request.state
        checks = await run_checks(
            {"database": lambda: ping(state.engine), "storage": lambda: state.store.ping()}
        )
        own: dict[str, ReadinessCheck] = getattr(request.app.state, "readiness", {})
        ready = {name: value == "ok" for name, value in checks.items()}
        for name, check in own.items():
            checks[name], ready[name] = check()
        return readiness_answer(checks, ready)

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: body("text/plain", description="the text exposition format")},
    )
    async def metrics() -> Response:
        return metrics_response()

    return router


class RefuseUnstorableText:
    """Refuses, before any route runs, text PostgreSQL cannot store (shared/inputs.py) in the
    path, the query, a header or a JSON body: 422 naming the field (``path.org_id``,
    ``query.place``, ``header.x-request-id``, ``body.communes.0.name``).

    Only JSON bodies are read here (at most ``json_limit`` bytes, 413 beyond), then handed
    on: uploads and the media route stream through untouched."""

    def __init__(self, app: ASGIApp, *, json_limit: int = JSON_BODY_LIMIT) -> None:
        self.app = app
        self.json_limit = json_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        field = _unstorable_in_path(scope) or _unstorable_in_query(scope)
        field = field or _unstorable_in_headers(scope)
        if field is None and _takes_json(scope):
            body = await _json_body(scope, receive, self.json_limit)
            if isinstance(body, JSONResponse):
                await body(scope, receive, send)
                return
            field = _unstorable_in_json(body)
            receive = _replay(body, receive)
        if field is not None:
            errors = [{"field": field, "message": UNSTORABLE}]
            response = _problem(
                scope, 422, "Invalid input", f"{field}: {UNSTORABLE}", errors=errors
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _problem(scope: Scope, status: int, title: str, detail: str, **extensions: Any) -> JSONResponse:
    slug = title.lower().replace(" ", "-")
    instance = scope["path"] if storable(scope["path"]) else None
    return problem_response(
        status, title, detail, slug=slug, instance=instance, extensions=extensions
    )


def _unstorable_in_path(scope: Scope) -> str | None:
    if storable(scope["path"]):
        return None
    # Only now are the routes' templates read, to name the parameter.
    segments = scope["path"].split("/")
    openapi = getattr(scope.get("app"), "openapi", None)
    for template in openapi()["paths"] if openapi is not None else ():
        parts = template.split("/")
        if len(parts) == len(segments) and all(
            part == segment or part.startswith("{")
            for part, segment in zip(parts, segments, strict=True)
        ):
            for part, segment in zip(parts, segments, strict=True):
                if part.startswith("{") and not storable(segment):
                    return f"path.{part.strip('{}')}"
    return "path"


def _unstorable_in_query(scope: Scope) -> str | None:
    query: bytes = scope.get("query_string", b"")
    if not query:
        return None
    # Decoded as Starlette decodes it, so that the check sees what the routes will see.
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if not storable(name):
            return "query"
        if not storable(value):
            return f"query.{name}"
    return None


def _unstorable_in_headers(scope: Scope) -> str | None:
    # Header values are bytes, read as latin-1: NUL is the only character they can hold that
    # PostgreSQL refuses.
    name: bytes
    value: bytes
    for name, value in scope["headers"]:
        if b"\x00" in value or b"\x00" in name:
            return "header." + name.replace(b"\x00", b"").decode("latin-1")
    return None


def _header(scope: Scope, wanted: bytes) -> bytes | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return bytes(value)
    return None


def _takes_json(scope: Scope) -> bool:
    """Whether the body is JSON a route will read: FastAPI reads a body as JSON only when its
    Content-Type says so (strict_content_type, its default)."""
    content_type = _header(scope, b"content-type")
    if content_type is None:
        return False
    media_type = content_type.split(b";", 1)[0].strip().lower()
    return media_type == b"application/json" or media_type.endswith(b"+json")


async def _json_body(scope: Scope, receive: Receive, limit: int) -> bytes | JSONResponse:
    """The whole body, or the answer when there is none to hand on."""
    too_large = _problem(
        scope, 413, "Payload too large", f"a JSON body is limited to {limit} bytes"
    )
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return too_large
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left: nobody reads the answer
            return _problem(scope, 400, "Bad request", "the request was cut short")
        body += message.get("body", b"")
        if len(body) > limit:
            return too_large
        if not message.get("more_body", False):
            return bytes(body)


def _unstorable_in_json(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None  # not JSON: the route refuses it as such
    return unstorable_at(value, "body")


def _replay(body: bytes, receive: Receive) -> Receive:
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _takes_many(annotation: Any) -> bool:
    """Whether a parameter's type is a list of values (``list[str] | None`` included)."""
    if get_origin(annotation) in (Union, UnionType):
        return any(_takes_many(arg) for arg in get_args(annotation))
    return get_origin(annotation) in (list, tuple, set, frozenset, Sequence)


def _one_value_names(dependant: Dependant) -> frozenset[str]:
    """The query parameters of a route (and of its dependencies) that take one value."""
    names = {
        field.alias
        for field in dependant.query_params
        if not _takes_many(field.field_info.annotation)
    }
    for sub in dependant.dependencies:
        names |= _one_value_names(sub)
    return frozenset(names)


async def refuse_repeated_query(request: Request) -> None:
    """A query parameter that takes one value, given several times (``?action=a&action=b``),
    is refused (422 naming it), not quietly reduced to its last value."""
    route = request.scope.get("route")
    if not request.query_params or not isinstance(route, APIRoute):
        return
    for name in _one_value_names(route.dependant):
        if len(request.query_params.getlist(name)) > 1:
            raise UnprocessableEntity(f"query.{name} takes one value", field=f"query.{name}")


def create_service_app(
    *,
    service: str,
    title: str,
    description: str,
    version: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
    readiness: dict[str, ReadinessCheck] | None = None,
) -> FastAPI:
    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=lifespan,
        dependencies=[Depends(refuse_repeated_query)],
    )
    install_error_handlers(app)
    for outage in (StorageError, DatabaseUnavailable, DBAPIError, PoolTimeout):
        app.add_exception_handler(outage, _outage)
    document_contract(app)
    app.add_middleware(RefuseUnstorableText)
    app.add_middleware(RequestContextMiddleware, service=service)  # outermost: logs every answer
    app.include_router(_health_router())
    app.state.service = service
    app.state.readiness = dict(readiness or {})
    return app
