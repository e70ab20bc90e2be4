from fastapi import FastAPI

from services.config import service_lifespan
from services.reporting import __doc__ as DESCRIPTION
from services.reporting.settings import ReportingSettings
from shared.web import create_service_app

SERVICE = "reporting"


def create_app(settings: ReportingSettings | None = None) -> FastAPI:
    settings = settings or ReportingSettings()

    app = create_service_app(
        service=SERVICE,
        title="Témoin reporting",
        description=DESCRIPTION or "",
        version="0.1.0",
        lifespan=service_lifespan(settings, SERVICE),
    )
    app.state.settings = settings
    return app
