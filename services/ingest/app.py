from fastapi import FastAPI

from services.config import service_lifespan
from services.ingest import __doc__ as DESCRIPTION
from services.ingest.settings import IngestSettings
from services.ingest.stations.endpoints import router as stations_router
from shared.web import create_service_app

SERVICE = "ingest"


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()

    app = create_service_app(
        service=SERVICE,
        title="Témoin ingest",
        description=DESCRIPTION or "",
        version="0.1.0",
        lifespan=service_lifespan(settings, SERVICE),
    )
    app.include_router(stations_router)
    app.state.settings = settings
    return app
