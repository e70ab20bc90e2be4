"""What every Témoin service app has: lifespan resources, health and readiness, metrics,
request ids and problem+json errors. Services call ``create_service_app`` with their own
settings' values; nothing here reads settings.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any, Literal, TypedDict

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.auth import TokenVerifier
from shared.db import create_engine, create_sessionmaker, ping, session_scope
from shared.errors import install_error_handlers, problem_response
from shared.observability import RequestContextMiddleware, metrics_response
from shared.openapi import body, document_contract, raises
from shared.storage import ObjectStore, StorageConfig

READINESS_TIMEOUT_S = 3.0


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
    database_role: str | None = None,
) -> AsyncIterator[ServiceState]:
    engine = create_engine(database_url, application_name=application_name, role=database_role)
    try:
        yield ServiceState(
            engine=engine,
            sessionmaker=create_sessionmaker(engine),
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


class Readiness(BaseModel):
    status: Literal["ready"]
    checks: dict[str, str] = Field(description="each dependency: ok, timeout or the error")


def _health_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @router.get(
        "/readyz",
        summary="Readiness: the database and the object store answer",
        response_model=Readiness,
        responses={
            200: {"description": "every dependency answers"},
            503: {"description": "a dependency does not answer: `checks` says which"},
        },
    )
    async def readyz(request: Request) -> JSONResponse:
        state = request.state
        results = await asyncio.gather(
            _check("database", lambda: ping(state.engine)),
            _check("storage", lambda: state.store.ping()),
        )
        checks = dict(results)
        if all(value == "ok" for value in checks.values()):
            return JSONResponse({"status": "ready", "checks": checks})
        failing = ", ".join(name for name, value in checks.items() if value != "ok")
        return problem_response(
            503,
            "Not ready",
            f"not reachable: {failing}",
            slug="not-ready",
            instance="/readyz",
            extensions={"checks": checks},
        )

    @router.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=Response,
        responses={200: body("text/plain", description="the text exposition format")},
    )
    async def metrics() -> Response:
        return metrics_response()

    return router


def create_service_app(
    *,
    service: str,
    title: str,
    description: str,
    version: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[Any]],
) -> FastAPI:
    app = FastAPI(title=title, description=description, version=version, lifespan=lifespan)
    install_error_handlers(app)
    document_contract(app)
    app.add_middleware(RequestContextMiddleware, service=service)
    app.include_router(_health_router())
    app.state.service = service
    return app
