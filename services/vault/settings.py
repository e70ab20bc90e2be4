from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.config import ServiceSettings

DEFAULT_PORT = 8720


class VaultSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="VAULT_")

    port: int = Field(DEFAULT_PORT, description="port the service listens on")
