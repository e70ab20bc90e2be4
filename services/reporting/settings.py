from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.config import ServiceSettings

DEFAULT_PORT = 8730


class ReportingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REPORTING_")

    port: int = Field(DEFAULT_PORT, description="port the service listens on")
