from nacl.signing import SigningKey
from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from services.config import (
    ServiceSettings,
    audit_entry_key_field,
    dev_default,
    key_of_32_bytes,
)
from shared.signatures import b64decode

DEFAULT_PORT = 8730
DEV_SIGNING_KEY = "dGVtb2luLWRldi1yZXBvcnQtc2lnbmluZy1rZXktMzI="


class ReportingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REPORTING_")

    port: int = Field(DEFAULT_PORT, description="port the service listens on")
    audit_entry_key: str = audit_entry_key_field("reporting")
    signing_key_seed: str = dev_default(
        DEV_SIGNING_KEY,
        description="Ed25519 seed (base64, 32 bytes) that signs finalised reports",
    )
    feed_interval_s: float = Field(
        2.0, gt=0, description="how often new audit events are folded into the statistics"
    )

    @field_validator("signing_key_seed")
    @classmethod
    def _key(cls, value: str, info: ValidationInfo) -> str:
        return key_of_32_bytes(value, f"REPORTING_{str(info.field_name).upper()}")

    def signing_key(self) -> SigningKey:
        return SigningKey(b64decode(self.signing_key_seed))
