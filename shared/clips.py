"""The metadata a docking station sends with each clip (R241-10), as ingest and the vault read
it: the time range, the camera (and through it, or explicitly, the wearing agent), the place.

It travels in the ``Temoin-Metadata`` header as base64url of UTF-8 JSON (addresses have
accents; headers are ASCII), beside the raw clip as the request body.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import UnprocessableEntity
from shared.schemas import JsonBody

METADATA_HEADER = "Temoin-Metadata"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Place(JsonBody):
    model_config = ConfigDict(extra="forbid")

    latitude: Annotated[float, Field(ge=-90, le=90)] | None = None
    longitude: Annotated[float, Field(ge=-180, le=180)] | None = None
    address: Annotated[str, Field(min_length=3, max_length=500)] | None = None

    @model_validator(mode="after")
    def _somewhere(self) -> Self:
        if (self.latitude is None) != (self.longitude is None):
            raise ValueError("give both latitude and longitude, or neither")
        if self.latitude is None and self.address is None:
            raise ValueError("give GPS coordinates, a declared address, or both")
        return self


class ClipMetadata(JsonBody):
    """One clip, as the station describes it."""

    model_config = ConfigDict(extra="forbid")

    camera_serial: str = Field(min_length=1, max_length=64)
    agent_matricule: str | None = Field(
        None, max_length=32, description="the wearer; when absent, the camera's assignment"
    )
    started_at: AwareDatetime
    ended_at: AwareDatetime
    clock_offset_ms: int = Field(
        ge=-86_400_000, le=86_400_000, description="camera clock minus station clock"
    )
    place: Place
    pre_record_s: int = Field(0, ge=0, le=300)
    size: int = Field(gt=0, description="bytes of the clip")
    sha256: str = Field(description="hex SHA-256 of the clip")
    intervention_ref: str | None = Field(None, max_length=100)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.ended_at <= self.started_at:
            raise ValueError("ended_at must be after started_at")
        if not _SHA256.match(self.sha256):
            raise ValueError("sha256 must be 64 lower-case hex digits")
        return self

    def encode(self) -> str:
        return base64.urlsafe_b64encode(self.model_dump_json().encode()).decode("ascii")

    @classmethod
    def decode(cls, header: str | None) -> ClipMetadata:
        """Parse the header; every problem is a 422 naming the field."""
        if not header:
            raise UnprocessableEntity(f"the {METADATA_HEADER} header is missing", field="header")
        try:
            data: Any = json.loads(base64.urlsafe_b64decode(header.encode("ascii") + b"=="))
        except (binascii.Error, ValueError, UnicodeError) as exc:
            raise UnprocessableEntity(
                f"{METADATA_HEADER} is not base64url JSON", field="header"
            ) from exc
        return cls.parse(data)

    @classmethod
    def parse(cls, data: Any) -> ClipMetadata:
        """Validate decoded JSON; every problem is a 422 naming the field."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            errors = [
                {
                    "field": ".".join(["metadata", *map(str, err["loc"])]),
                    "message": err["msg"],
                }
                for err in exc.errors()
            ]
            names = ", ".join(e["field"] for e in errors)
            raise UnprocessableEntity(
                f"invalid metadata: {names}", field=errors[0]["field"], errors=errors
            ) from exc


class StoredClip(BaseModel):
    """What the vault answers once a clip is sealed and registered; ingest signs it."""

    recording_id: uuid.UUID
    organisation_id: uuid.UUID
    station_id: uuid.UUID
    camera_serial: str
    sha256: str
    size: int
    received_at: datetime
    created: bool = Field(description="false when this clip was already registered")


class UploadSessionState(BaseModel):
    """A resumable upload as the vault keeps it (its internal API; ingest speaks tus)."""

    id: uuid.UUID
    station_id: uuid.UUID
    status: str = Field(description="open, complete, rejected, terminated, expired or lost")
    offset: int = Field(description="bytes acknowledged so far")
    length: int
    expires_at: datetime
    metadata: ClipMetadata
    content_type: str
    stored: StoredClip | None = Field(description="the registered recording, once complete")
