from nacl.signing import SigningKey
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.config import ServiceSettings, dev_default
from shared.signatures import b64decode

# A fixed key so that development logs stay verifiable across restarts; refused in production.
DEV_AUDIT_SIGNING_KEY = "dGVtb2luLWRldi1hdWRpdC1sb2cta2V5LTMyYnl0ZXM="

DEFAULT_PORT = 8720


class VaultSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VAULT_")

    port: int = Field(DEFAULT_PORT, description="port the service listens on")
    audit_signing_key: str = dev_default(
        DEV_AUDIT_SIGNING_KEY,
        description="Ed25519 seed (base64, 32 bytes) that signs the audit log's tree heads",
    )
    audit_head_interval_s: float = Field(
        300.0, gt=0, description="how often a new tree head is signed (when the log grew)"
    )
    audit_sequence_interval_s: float = Field(
        1.0, gt=0, description="how often new audit entries are sequenced into the log"
    )

    def audit_key(self) -> SigningKey:
        return SigningKey(b64decode(self.audit_signing_key))
