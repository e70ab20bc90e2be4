from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.config import ServiceSettings

DEFAULT_PORT = 8710


class IngestSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_")

    port: int = Field(DEFAULT_PORT, description="port the service listens on")
