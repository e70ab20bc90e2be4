"""Settings common to every service, read from the environment only.

Each service subclasses ``ServiceSettings`` with its own prefix (``INGEST_``, ``VAULT_``,
``REPORTING_``); the settings they share (database, object store, mode) have no prefix.

A field whose default only makes sense on a developer's machine is declared with
``dev_default(...)``: in production mode the service refuses to start while it still holds
that default.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, Literal, Self

from fastapi import FastAPI
from nacl.signing import SigningKey
from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.memory import bound_allocator
from shared.audit import AuditWriter
from shared.auth import ClaimNames, TokenVerifier
from shared.signatures import b64decode, b64encode
from shared.storage import StorageConfig
from shared.web import ServiceState, open_resources

DEV_S3_ACCESS_KEY = "temoin"
DEV_S3_SECRET_KEY = "temoin-dev-secret-change-me"
DEV_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DEV_S3_ENDPOINT = "http://127.0.0.1:8333"
# The built-in development issuer (temoin/dev_issuer.py): keys under ./var/dev-issuer. Its
# identifier is the URL of the development OpenID provider `temoin run` starts
# (temoin/dev_provider.py), as an OpenID issuer's must be.
DEV_ISSUER_PORT = 8700
DEV_AUTH_ISSUER = f"http://127.0.0.1:{DEV_ISSUER_PORT}"
DEV_ISSUER_DIR = Path("var") / "dev-issuer"
DEV_AUTH_JWKS_URL = (DEV_ISSUER_DIR / "jwks.json").resolve().as_uri()
# Each service's development entry key (shared/audit.py), fixed so that a development log stays
# verifiable across restarts; production refuses them.
DEV_AUDIT_ENTRY_KEYS = {
    service: b64encode(hashlib.sha256(f"temoin-dev-audit-entry-key/{service}".encode()).digest())
    for service in ("ingest", "vault", "reporting")
}


def dev_writer_keys() -> str:
    """The development entry keys' public halves, as VAULT_AUDIT_WRITER_KEYS lists them."""
    return ",".join(
        str(AuditWriter(service, SigningKey(b64decode(seed))).verifier)
        for service, seed in DEV_AUDIT_ENTRY_KEYS.items()
    )


def dev_default(default: Any, *, env: str | None = None, description: str = "") -> Any:
    """A default refused in production mode (a development secret, a local address)."""
    return Field(
        default,
        validation_alias=env,
        description=description,
        json_schema_extra={"refused_in_production": True},
    )


def shared_setting(default: Any, *, env: str, description: str = "") -> Any:
    return Field(default, validation_alias=env, description=description)


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_ignore_empty=True,
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
    )

    env: Literal["development", "production"] = shared_setting(
        "development", env="TEMOIN_ENV", description="development or production"
    )
    database_url: str = dev_default(
        DEV_DATABASE_URL, env="DATABASE_URL", description="PostgreSQL URL (postgresql://...)"
    )
    s3_endpoint: str = dev_default(
        DEV_S3_ENDPOINT, env="S3_ENDPOINT", description="S3 endpoint URL (MinIO in production)"
    )
    s3_access_key: str = dev_default(DEV_S3_ACCESS_KEY, env="S3_ACCESS_KEY")
    s3_secret_key: str = dev_default(DEV_S3_SECRET_KEY, env="S3_SECRET_KEY")
    s3_bucket: str = shared_setting(
        "temoin-recordings", env="S3_BUCKET", description="bucket with object lock"
    )
    s3_region: str = shared_setting("us-east-1", env="S3_REGION")
    s3_retries: int = Field(
        5,
        ge=0,
        validation_alias="S3_RETRIES",
        description="retries of a request the store failed or refused (backoff 0.2 s doubling)",
    )
    database_role: str = shared_setting(
        "temoin_service",
        env="DATABASE_ROLE",
        description="role the service acts as (SET ROLE): append-only on the audit trail",
    )
    log_level: str = shared_setting("INFO", env="LOG_LEVEL")
    # A request holds a connection only for its short transactions, never while a body streams
    # (docs/architecture.md, "Uploads hold no connection while bytes stream"): the pool bounds
    # concurrent transactions, not concurrent uploads.
    database_pool_size: int = Field(
        10, ge=1, validation_alias="DATABASE_POOL_SIZE",
        description="PostgreSQL connections each process keeps open",
    )  # fmt: skip
    database_max_overflow: int = Field(
        10, ge=0, validation_alias="DATABASE_MAX_OVERFLOW",
        description="connections a process may open beyond the pool at a peak",
    )  # fmt: skip
    database_pool_timeout_s: float = Field(
        30.0, gt=0, validation_alias="DATABASE_POOL_TIMEOUT_S",
        description="how long a request waits for a free connection before its 503",
    )  # fmt: skip

    service_token: str = dev_default(
        "temoin-dev-service-token-change-me",
        env="SERVICE_TOKEN",
        description="credential of service-to-service calls (ingest to vault), 32+ bytes",
    )
    auth_issuer: str = dev_default(
        DEV_AUTH_ISSUER, env="AUTH_ISSUER", description="OIDC issuer of people's tokens (iss)"
    )
    auth_jwks_url: str = dev_default(
        DEV_AUTH_JWKS_URL,
        env="AUTH_JWKS_URL",
        description="the issuer's JWKS (https in production)",
    )
    auth_audience: str = shared_setting("temoin", env="AUTH_AUDIENCE", description="aud claim")
    auth_org_claim: str = shared_setting(
        "org", env="AUTH_ORG_CLAIM", description="claim holding the organisation id"
    )
    auth_roles_claim: str = shared_setting(
        "roles", env="AUTH_ROLES_CLAIM", description='claim holding roles ("realm_access.roles")'
    )
    auth_departement_claim: str = shared_setting(
        "departement", env="AUTH_DEPARTEMENT_CLAIM", description="claim of a préfecture"
    )

    host: str = Field("127.0.0.1", description="address the service binds to")
    port: int = Field(8000, description="port the service listens on")
    # Each service declares it again with its own development default (audit_entry_key_field).
    audit_entry_key: str = Field(
        description="Ed25519 seed (base64, 32 bytes) authenticating the service's audit entries"
    )

    @field_validator("audit_entry_key")
    @classmethod
    def _audit_entry_key(cls, value: str) -> str:
        return key_of_32_bytes(value, env_name(cls, "audit_entry_key"))

    @field_validator("service_token")
    @classmethod
    def _service_token_long_enough(cls, value: str) -> str:
        if len(value.encode()) < 32:
            raise ValueError("SERVICE_TOKEN must be at least 32 bytes")
        return value

    @model_validator(mode="after")
    def _refuse_development_defaults_in_production(self) -> Self:
        if self.env != "production":
            return self
        still_default = [
            env_name(type(self), name)
            for name, info in type(self).model_fields.items()
            if _refused_in_production(info.json_schema_extra)
            and getattr(self, name) == info.default
        ]
        if still_default:
            raise ValueError(
                "production mode refuses development defaults; set "
                + ", ".join(sorted(still_default))
            )
        if not self.auth_jwks_url.startswith("https://"):
            raise ValueError("production mode needs AUTH_JWKS_URL over https")
        return self

    def token_verifier(self) -> TokenVerifier:
        return TokenVerifier(
            issuer=self.auth_issuer,
            audience=self.auth_audience,
            jwks_url=self.auth_jwks_url,
            claims=ClaimNames(
                organisation=self.auth_org_claim,
                roles=self.auth_roles_claim,
                departement=self.auth_departement_claim,
            ),
        )

    def audit_writer(self, service: str) -> AuditWriter:
        """The key that authenticates the audit entries this service appends."""
        return AuditWriter(service, SigningKey(b64decode(self.audit_entry_key)))

    def storage(self) -> StorageConfig:
        return StorageConfig(
            endpoint=self.s3_endpoint,
            access_key=self.s3_access_key,
            secret_key=self.s3_secret_key,
            bucket=self.s3_bucket,
            region=self.s3_region,
            retries=self.s3_retries,
        )


def audit_entry_key_field(service: str) -> Any:
    return dev_default(
        DEV_AUDIT_ENTRY_KEYS[service],
        description=f"Ed25519 seed (base64, 32 bytes) authenticating {service}'s audit entries",
    )


def key_of_32_bytes(value: str, name: str) -> str:
    """A 32-byte key given as base64: checked when the service starts, not at first use."""
    try:
        raw = b64decode(value)
    except ValueError as exc:
        raise ValueError(f"{name} must be base64") from exc
    if len(raw) != 32:
        raise ValueError(f"{name} must be 32 bytes (base64 of 32 random bytes)")
    return value


def _refused_in_production(extra: Any) -> bool:
    return isinstance(extra, dict) and bool(extra.get("refused_in_production"))


def env_name(settings_cls: type[ServiceSettings], field_name: str) -> str:
    """The environment variable that sets a field."""
    info = settings_cls.model_fields[field_name]
    if isinstance(info.validation_alias, str):
        return info.validation_alias
    prefix = settings_cls.model_config.get("env_prefix", "")
    return f"{prefix}{field_name}".upper()


def production_required(settings_cls: type[ServiceSettings]) -> list[str]:
    """Variables a production deployment must set: no default, or a development default."""
    return sorted(
        env_name(settings_cls, name)
        for name, info in settings_cls.model_fields.items()
        if info.is_required() or _refused_in_production(info.json_schema_extra)
    )


BackgroundTask = Callable[[ServiceState], Coroutine[Any, Any, None]]
StartupHook = Callable[[ServiceState], Coroutine[Any, Any, None]]


def service_resources(
    settings: ServiceSettings, service: str, application_name: str | None = None
) -> AbstractAsyncContextManager[ServiceState]:
    """What a process of ``service`` holds: its engine, sessionmaker and store client."""
    return open_resources(
        database_url=settings.database_url,
        storage=settings.storage(),
        application_name=application_name or f"temoin-{service}",
        database_role=settings.database_role,
        pool={
            "pool_size": settings.database_pool_size,
            "max_overflow": settings.database_max_overflow,
            "pool_timeout_s": settings.database_pool_timeout_s,
        },
        verifier=settings.token_verifier(),
        audit_writer=settings.audit_writer(service),
    )


def service_lifespan(
    settings: ServiceSettings,
    service: str,
    background: Sequence[BackgroundTask] = (),
    on_shutdown: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
    on_startup: Sequence[StartupHook] = (),
) -> Callable[[FastAPI], AbstractAsyncContextManager[ServiceState]]:
    """The lifespan every service app uses: engine, sessionmaker and object store, the
    service's startup hooks (one that raises stops the service from starting: uvicorn exits
    non-zero), its background tasks (cancelled at shutdown), and what else it must close."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[ServiceState]:
        bound_allocator()
        async with service_resources(settings, service) as state:
            for hook in on_startup:
                await hook(state)
            tasks = [asyncio.create_task(job(state)) for job in background]
            try:
                yield state
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                for close in on_shutdown:
                    await close()

    return lifespan
