from fastapi import FastAPI

from services.config import service_lifespan
from services.vault import __doc__ as DESCRIPTION
from services.vault.audit.endpoints import router as audit_router
from services.vault.audit.jobs import maintain_log
from services.vault.derivatives.endpoints import router as copies_router
from services.vault.derivatives.jobs import anonymisation_job
from services.vault.directory.endpoints import router as directory_router
from services.vault.procedures.endpoints import router as procedures_router
from services.vault.recordings.endpoints import media_router
from services.vault.recordings.endpoints import router as recordings_router
from services.vault.recordings.internal import uploads_router as internal_uploads_router
from services.vault.recordings.jobs import erase_expired, scrub_objects, uploads_job
from services.vault.settings import VaultSettings
from services.vault.storage.worm import StoreWriteOnce
from shared.web import ServiceState, create_service_app

SERVICE = "vault"


def create_app(settings: VaultSettings | None = None) -> FastAPI:
    settings = settings or VaultSettings()
    audit_keys = settings.log_keys()

    async def log_maintenance(state: ServiceState) -> None:
        await maintain_log(
            state["sessionmaker"],
            audit_keys,
            sequence_every_s=settings.audit_sequence_interval_s,
            sign_every_s=settings.audit_head_interval_s,
        )

    async def uploads(state: ServiceState) -> None:
        await uploads_job(state["sessionmaker"], state["store"], settings)

    async def erasure(state: ServiceState) -> None:
        await erase_expired(state["sessionmaker"], state["store"], settings)

    async def scrub(state: ServiceState) -> None:
        await scrub_objects(state["sessionmaker"], state["store"], settings)

    async def anonymisation(state: ServiceState) -> None:
        await anonymisation_job(state["sessionmaker"], state["store"], settings)

    store_check = StoreWriteOnce(
        production=settings.env == "production",
        interval_s=settings.store_check_interval_s,
        lock_s=settings.store_check_lock_s,
    )

    app = create_service_app(
        service=SERVICE,
        title="Témoin vault",
        description=DESCRIPTION or "",
        version="0.1.0",
        lifespan=service_lifespan(
            settings,
            SERVICE,
            on_startup=[store_check.at_startup],
            background=[log_maintenance, uploads, erasure, scrub, store_check.job, anonymisation],
        ),
        readiness={"store_write_once": store_check.readiness},
    )
    app.include_router(media_router)  # first: on every seek's path
    app.include_router(directory_router)
    app.include_router(audit_router)
    app.include_router(recordings_router)
    app.include_router(procedures_router)
    app.include_router(copies_router)
    app.include_router(internal_uploads_router)
    app.state.settings = settings
    app.state.store_check = store_check
    app.state.audit_keys = audit_keys
    return app
