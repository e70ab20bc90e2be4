from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.config import (
    ServiceSettings,
    audit_entry_key_field,
    dev_default,
    key_of_32_bytes,
)

DEFAULT_PORT = 8710


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_")

    port: int = Field(DEFAULT_PORT, description="port the service listens on")
    audit_entry_key: str = audit_entry_key_field("ingest")
    token_secret: str = dev_default(
        "temoin-dev-station-token-secret-change-me",
        description="HMAC secret of the stations' upload tokens (32+ random bytes)",
    )
    vault_url: str = Field("http://127.0.0.1:8720", description="where ingest hands clips over")
    receipt_key: str = dev_default(
        "dGVtb2luLWRldi1yZWNlaXB0LXNpZ25pbmcta2V5MzI=",
        description="Ed25519 seed (base64, 32 bytes) signing upload receipts",
    )
    clock_tolerance_s: int = Field(
        300, ge=0, le=86400, description="how far in the future a clip's end may be"
    )
    station_token_ttl_s: int = Field(900, ge=60, le=86400, description="upload token lifetime")
    assertion_max_age_s: int = Field(
        120, ge=10, le=3600, description="how far a station's clock may be from ours"
    )

    @field_validator("receipt_key")
    @classmethod
    def _receipt_key(cls, value: str) -> str:
        return key_of_32_bytes(value, "INGEST_RECEIPT_KEY")

    @field_validator("token_secret")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        # RFC 7518 3.2: an HS256 key must be at least as long as the hash (32 bytes).
        if len(value.encode()) < 32:
            raise ValueError("INGEST_TOKEN_SECRET must be at least 32 bytes")
        return value
