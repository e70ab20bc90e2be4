from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.config import DEV_DATABASE_URL, dev_default, shared_setting

DEFAULT_PORT = 8740
# ProConnect's rule, kept for every provider: state and nonce of at least 32 characters.
MINIMUM_STATE_LENGTH = 32


def dev_session_secret(path: Path | None = None) -> str:
    """The development session secret: generated once under var/ (TEMOIN_VAR_DIR), so that
    the sessions of a restarted dashboard still open; production must set
    DASHBOARD_SESSION_SECRET, the same for every replica."""
    # The development data directory, as temoin/stackfile.py names it.
    path = path or Path(os.environ.get("TEMOIN_VAR_DIR") or "var") / "dashboard" / "session-secret"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.write_text(secret)
    path.chmod(0o600)
    return secret


class DashboardSettings(BaseSettings):
    """No object store, and of the database only its own sessions' table: the dashboard reads
    everything else through the APIs."""

    model_config = SettingsConfigDict(
        env_prefix="DASHBOARD_",
        env_ignore_empty=True,
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
    )

    env: Literal["development", "production"] = shared_setting(
        "development", env="TEMOIN_ENV", description="development or production"
    )
    log_level: str = shared_setting("INFO", env="LOG_LEVEL")
    database_url: str = dev_default(
        DEV_DATABASE_URL,
        env="DATABASE_URL",
        description="PostgreSQL URL (postgresql://...): the sessions, shared by every replica",
    )
    database_role: str = Field(
        "temoin_dashboard",
        description="role the dashboard acts as (SET ROLE): its sessions' table and nothing else",
    )
    host: str = Field("127.0.0.1", description="address the service binds to")
    port: int = Field(DEFAULT_PORT, description="port the service listens on")
    public_url: str = dev_default(
        f"http://127.0.0.1:{DEFAULT_PORT}",
        description="the dashboard's address as browsers reach it (redirect URI, Secure cookie)",
    )
    vault_url: str = dev_default("http://127.0.0.1:8720", description="the vault's API")
    reporting_url: str = dev_default(
        "http://127.0.0.1:8730", description="the reporting service's API"
    )
    vault_public_url: str | None = Field(
        None,
        description="the vault's address as browsers reach it (media of consultations), "
        "when it differs from vault_url",
    )
    oidc_discovery_url: str = dev_default(
        "http://127.0.0.1:8700/.well-known/openid-configuration",
        description="the OpenID provider's discovery document",
    )
    oidc_client_id: str = dev_default("temoin-dashboard", description="client id at the provider")
    oidc_client_secret: str = dev_default(
        "temoin-dashboard-dev-secret", description="client secret at the provider"
    )
    oidc_scopes: str = Field("openid profile", description="scopes asked for, space-separated")
    oidc_acr_values: str | None = Field(
        None, description="acr_values sent to the provider (ProConnect: a 2FA level)"
    )
    oidc_required_acr: str | None = Field(
        None, description="acr values accepted on return, comma-separated; none: not checked"
    )
    oidc_api_resource: str | None = Field(
        None,
        description="resource indicator (RFC 8707) of the Témoin APIs, for a provider whose "
        "userinfo token cannot also be the APIs' token: the APIs' token is then asked for with "
        "the refresh token and this resource",
    )
    session_secret: str = Field(
        default_factory=dev_session_secret,
        min_length=32,
        json_schema_extra={"refused_in_production": True},
        description="signs the session cookie and seals the sessions kept in the database "
        "(32+ characters, the same for every replica); development: under var/",
    )
    session_max_age_s: int = Field(
        8 * 3600, gt=0, description="absolute lifetime of a session, whatever its activity"
    )
    session_idle_s: int = Field(30 * 60, gt=0, description="a session unused this long ends")
    stale_station_days: int = Field(
        3, ge=1, le=365, description="Accueil: a station with no upload for this many days"
    )
    erasure_notice_days: int = Field(
        7, ge=1, le=365, description="Accueil: recordings erased within this many days"
    )

    @model_validator(mode="after")
    def _production(self) -> Self:
        if self.env != "production":
            return self
        still_default = [
            info.validation_alias
            if isinstance(info.validation_alias, str)
            else f"DASHBOARD_{name.upper()}"
            for name, info in type(self).model_fields.items()
            if isinstance(info.json_schema_extra, dict)
            and info.json_schema_extra.get("refused_in_production")
            and getattr(self, name) == info.default
        ]
        if "session_secret" not in self.model_fields_set:
            still_default.append("DASHBOARD_SESSION_SECRET")
        if still_default:
            raise ValueError(
                "production mode refuses development defaults; set " + ", ".join(still_default)
            )
        if urlsplit(self.public_url).scheme != "https":
            raise ValueError("production mode needs DASHBOARD_PUBLIC_URL over https")
        if urlsplit(self.oidc_discovery_url).scheme != "https":
            raise ValueError("production mode needs DASHBOARD_OIDC_DISCOVERY_URL over https")
        return self

    @property
    def secure_cookie(self) -> bool:
        return urlsplit(self.public_url).scheme == "https"

    @property
    def required_acr(self) -> frozenset[str]:
        return frozenset(v.strip() for v in (self.oidc_required_acr or "").split(",") if v.strip())

    @property
    def media_origin(self) -> str:
        """Where the browser fetches a consultation's video from (CSP media-src)."""
        return origin_of(self.vault_public_url or self.vault_url)


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
