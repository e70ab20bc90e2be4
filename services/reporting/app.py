from fastapi import FastAPI

from services.config import service_lifespan
from services.reporting import __doc__ as DESCRIPTION
from services.reporting.settings import ReportingSettings
from services.reporting.statistics.consumer import follow_feed
from services.reporting.statistics.endpoints import router as reports_router
from shared.web import ServiceState, create_service_app

SERVICE = "reporting"


def create_app(settings: ReportingSettings | None = None) -> FastAPI:
    settings = settings or ReportingSettings()

    async def feed(state: ServiceState) -> None:
        await follow_feed(state["sessionmaker"], settings.feed_interval_s)

    app = create_service_app(
        service=SERVICE,
        title="Témoin reporting",
        description=DESCRIPTION or "",
        version="0.1.0",
        lifespan=service_lifespan(settings, SERVICE, background=[feed]),
    )
    app.include_router(reports_router)
    app.state.settings = settings
    return app
