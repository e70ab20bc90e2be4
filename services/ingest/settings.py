from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.config import ServiceSettings, dev_default

DEFAULT_PORT = 8710


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_")

    port: int = Field(DEFAULT_PORT, description="port the service listens on")
    token_secret: str = dev_default(
        "temoin-dev-station-token-secret-change-me",
        description="HMAC secret of the stations' upload tokens (32+ random bytes)",
    )
    station_token_ttl_s: int = Field(900, ge=60, le=86400, description="upload token lifetime")
    assertion_max_age_s: int = Field(
        120, ge=10, le=3600, description="how far a station's clock may be from ours"
    )
