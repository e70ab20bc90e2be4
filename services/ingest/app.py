import httpx
from fastapi import FastAPI

from services.config import service_lifespan
from services.ingest import __doc__ as DESCRIPTION
from services.ingest.settings import IngestSettings
from services.ingest.stations.endpoints import router as stations_router
from services.ingest.uploads.endpoints import router as uploads_router
from services.ingest.uploads.tus import TusResumableHeader
from services.ingest.uploads.tus import router as tus_router
from shared.web import create_service_app

SERVICE = "ingest"


def create_app(
    settings: IngestSettings | None = None,
    *,
    vault_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """``vault_transport``: how to reach the vault (tests pass the vault app itself)."""
    settings = settings or IngestSettings()
    # Long uploads: no overall deadline, but no silent stall longer than a minute either.
    vault = httpx.AsyncClient(
        base_url=settings.vault_url,
        transport=vault_transport,
        timeout=httpx.Timeout(60.0, pool=10.0),
    )

    app = create_service_app(
        service=SERVICE,
        title="Témoin ingest",
        description=DESCRIPTION or "",
        version="0.1.0",
        lifespan=service_lifespan(settings, SERVICE, on_shutdown=[vault.aclose]),
    )
    app.include_router(stations_router)
    app.include_router(uploads_router)
    app.include_router(tus_router)
    app.add_middleware(TusResumableHeader)
    app.state.vault = vault
    app.state.settings = settings
    return app
