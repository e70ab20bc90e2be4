from fastapi import FastAPI

from services.config import service_lifespan
from services.vault import __doc__ as DESCRIPTION
from services.vault.directory.endpoints import router as directory_router
from services.vault.settings import VaultSettings
from shared.web import create_service_app

SERVICE = "vault"


def create_app(settings: VaultSettings | None = None) -> FastAPI:
    settings = settings or VaultSettings()

    app = create_service_app(
        service=SERVICE,
        title="Témoin vault",
        description=DESCRIPTION or "",
        version="0.1.0",
        lifespan=service_lifespan(settings, SERVICE),
    )
    app.include_router(directory_router)
    app.state.settings = settings
    return app
