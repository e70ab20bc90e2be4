from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.schemas import JsonBody


class AssertionIn(JsonBody):
    """Signed by the station's Ed25519 key over
    ``temoin-station-assertion-v1\\n{station_id}\\n{timestamp}\\n{nonce}``."""

    model_config = ConfigDict(extra="forbid")

    station_id: uuid.UUID
    timestamp: str = Field(max_length=40, description="RFC 3339 UTC, e.g. 2026-11-25T10:00:00Z")
    nonce: str = Field(pattern=r"^[A-Za-z0-9_-]{16,64}$")
    signature: str = Field(max_length=200, description="base64 Ed25519 signature")


class StationToken(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"
    expires_in: int


class StationMe(BaseModel):
    station_id: uuid.UUID
    organisation_id: uuid.UUID
    name: str
