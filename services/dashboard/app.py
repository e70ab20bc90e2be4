from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.dashboard import __doc__ as DESCRIPTION
from services.dashboard.api.client import ApiProblem, create_backends
from services.dashboard.auth.endpoints import router as auth_router
from services.dashboard.auth.oidc import create_provider
from services.dashboard.auth.sessions import (
    CsrfRefused,
    RolesWithdrawn,
    SignInRequired,
    login_url,
)
from services.dashboard.copies.endpoints import router as copies_router
from services.dashboard.directory.endpoints import router as directory_router
from services.dashboard.home.endpoints import router as home_router
from services.dashboard.journal.endpoints import router as journal_router
from services.dashboard.kit.security import SecurityHeaders, content_security_policy
from services.dashboard.kit.sessions import SessionMiddleware, SessionStore
from services.dashboard.kit.templating import ROOT, Pages, create_environment
from services.dashboard.procedures.endpoints import router as procedures_router
from services.dashboard.recordings.endpoints import router as recordings_router
from services.dashboard.reports.endpoints import router as reports_router
from services.dashboard.settings import DashboardSettings, origin_of
from shared.db import create_engine, database_unavailable, ping
from shared.observability import RequestContextMiddleware, metrics_response
from shared.web import readiness_answer, run_checks

SERVICE = "dashboard"
SERVICE_NAME = "Témoin"
READINESS_TIMEOUT_S = 3.0  # the HTTP calls' own timeout; run_checks also bounds each probe
# How often a replica deletes the sessions past their lifetimes (each is refused when read
# anyway: this only keeps the table small).
SESSION_SWEEP_INTERVAL_S = 300.0
# Each request reads its session, and writes it when it changed: a few short transactions.
DATABASE_POOL_SIZE = 5
_logger = logging.getLogger("temoin.dashboard")


def _health_router() -> APIRouter:
    router = APIRouter(tags=["operations"], include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @router.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        """Ready when the provider's discovery, the vault and the sessions' database answer."""
        settings: DashboardSettings = request.app.state.settings
        backends = request.app.state.backends
        sessions: SessionStore = request.app.state.sessions

        async def discovery() -> None:
            async with httpx.AsyncClient(timeout=READINESS_TIMEOUT_S) as client:
                response = await client.get(settings.oidc_discovery_url)
                response.raise_for_status()
                if "authorization_endpoint" not in response.json():
                    raise ValueError("not a discovery document")

        async def vault() -> None:
            (await backends.vault.get("/healthz", timeout=READINESS_TIMEOUT_S)).raise_for_status()

        async def database() -> None:
            await ping(sessions.engine)

        return readiness_answer(
            await run_checks({"oidc_provider": discovery, "vault": vault, "database": database})
        )

    @router.get("/metrics")
    async def metrics() -> Response:
        return metrics_response()

    return router


def create_app(
    settings: DashboardSettings | None = None,
    *,
    vault_transport: httpx.AsyncBaseTransport | None = None,
    reporting_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The transports let tests put in-process vault and reporting apps behind the dashboard."""
    settings = settings or DashboardSettings()
    backends = create_backends(
        settings.vault_url,
        settings.reporting_url,
        vault_transport=vault_transport,
        reporting_transport=reporting_transport,
    )

    # Created here, connected at first use: the tests' in-process apps (no lifespan) use it too.
    sessions = SessionStore(
        create_engine(
            settings.database_url,
            application_name="temoin-dashboard",
            pool_size=DATABASE_POOL_SIZE,
            role=settings.database_role,
        ),
        secret=settings.session_secret,
        idle_s=settings.session_idle_s,
        max_age_s=settings.session_max_age_s,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeping = asyncio.create_task(_sweep_sessions(sessions))
        try:
            yield
        finally:
            sweeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeping
            await backends.aclose()
            await sessions.engine.dispose()

    app = FastAPI(
        title="Témoin dashboard",
        description=DESCRIPTION or "",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    pages = Pages(create_environment(), SERVICE_NAME)
    app.state.settings = settings
    app.state.backends = backends
    app.state.pages = pages
    app.state.provider = create_provider(settings)
    app.state.service = SERVICE

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SignInRequired)
        return RedirectResponse(login_url(exc.next_path), status_code=303)

    async def csrf_refused(request: Request, exc: Exception) -> Response:
        return pages.render(
            request,
            "erreur.html",
            status_code=403,
            title="Formulaire refusé",
            message="Ce formulaire a expiré ou ne vient pas de cette page. "
            "Revenez en arrière, rechargez la page et recommencez.",
        )

    async def roles_withdrawn(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RolesWithdrawn)
        return pages.render(
            request, "erreur.html", status_code=403, title="Accès retiré", message=exc.message
        )

    async def api_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiProblem)
        if exc.status == 401:
            request.session.clear()
            request.scope["session_end"] = True
            return RedirectResponse(login_url(request.url.path), status_code=303)
        return pages.render(
            request,
            "erreur.html",
            status_code=exc.status,
            title="Demande refusée" if exc.status in (403, 409) else "Erreur",
            message=exc.message,
            detail=exc.detail,
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        titles = {404: "Page introuvable", 405: "Action non permise"}
        return pages.render(
            request,
            "erreur.html",
            status_code=exc.status_code,
            title=titles.get(exc.status_code, "Erreur"),
            message="Cette adresse ne correspond à aucune page du tableau de bord."
            if exc.status_code == 404
            else "Cette action n'est pas possible ici.",
        )

    policy = content_security_policy(
        media_origin=settings.media_origin,
        provider_origin=origin_of(settings.oidc_discovery_url),
    )

    async def unexpected(request: Request, exc: Exception) -> Response:
        if database_unavailable(exc):  # the sessions' database, away for a moment
            _logger.warning("database unavailable: %s", exc)
            page = pages.render(
                request,
                "erreur.html",
                status_code=503,
                title="Service momentanément indisponible",
                message="Le tableau de bord ne peut pas lire votre session pour le moment. "
                "Réessayez dans un instant.",
            )
            page.headers["Retry-After"] = "5"
        else:
            _logger.exception("unhandled error", exc_info=exc)
            page = pages.render(
                request,
                "erreur.html",
                status_code=500,
                title="Erreur inattendue",
                message="Une erreur inattendue est survenue ; elle a été enregistrée. Réessayez.",
            )
        # Starlette answers this outside every middleware: the headers are set here.
        page.headers.update(SecurityHeaders.HEADERS | {"Content-Security-Policy": policy})
        return page

    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(CsrfRefused, csrf_refused)
    app.add_exception_handler(RolesWithdrawn, roles_withdrawn)
    app.add_exception_handler(ApiProblem, api_problem)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)

    app.include_router(_health_router())
    app.include_router(auth_router)
    app.include_router(home_router)
    app.include_router(recordings_router)
    app.include_router(directory_router)
    app.include_router(procedures_router)
    app.include_router(reports_router)
    app.include_router(journal_router)
    app.include_router(copies_router)
    app.mount("/static", StaticFiles(directory=ROOT / "static"), name="static")

    app.state.sessions = sessions
    app.add_middleware(
        SessionMiddleware,
        store=app.state.sessions,
        sessionless=("/static/", "/healthz", "/readyz", "/metrics"),
        secure=settings.secure_cookie,
    )
    app.add_middleware(RequestContextMiddleware, service=SERVICE)
    app.add_middleware(SecurityHeaders, policy=policy)
    return app


async def _sweep_sessions(sessions: SessionStore) -> None:
    while True:
        await asyncio.sleep(SESSION_SWEEP_INTERVAL_S)
        try:
            swept = await sessions.sweep()
        except Exception as error:  # the database away: the next sweep catches up
            _logger.warning("session sweep failed: %s", error)
        else:
            if swept:
                _logger.info("swept %d expired sessions", swept)
