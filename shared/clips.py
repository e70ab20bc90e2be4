"""The metadata a docking station sends with each clip (R241-10), as ingest and the vault read
it: the time range, the camera (and through it, or explicitly, the wearing agent), the place.

It travels in the ``Temoin-Metadata`` header as base64url of UTF-8 JSON (addresses have
accents; headers are ASCII), beside the raw clip as the request body.
"""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.errors import UnprocessableEntity, UnsupportedMediaType
from shared.inputs import Instant, refuse_unstorable
from shared.schemas import JsonBody

METADATA_HEADER = "Temoin-Metadata"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# The largest clip taken, on both protocols (tus advertises it as Tus-Max-Size): far beyond
# any body-camera clip; the vault's parts allow 48 GiB+.
MAX_CLIP_SIZE = 64 << 30

DEFAULT_CONTENT_TYPE = "application/octet-stream"
# RFC 9110 8.3.1: type "/" subtype *( OWS ";" OWS parameter ), a parameter's value a token or
# a quoted string.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAMETER = rf"[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|\"[ !#-\[\]-~]*\")"
_MEDIA_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})((?:{_PARAMETER})*)")


def clip_content_type(value: str) -> str:
    """The media type a dock declares for a clip, normalised: the vault serves the clip back
    with it, from its own origin, so only video types and application/octet-stream (with
    parameters) are taken, never one a browser would run (text/html). ValueError otherwise."""
    match = _MEDIA_TYPE.fullmatch(value.strip()) if len(value) <= 255 else None
    if match is None:
        raise ValueError("not a media type (type/subtype; parameter=value)")
    kind, subtype, parameters = match.group(1).lower(), match.group(2).lower(), match.group(3)
    if kind != "video" and f"{kind}/{subtype}" != DEFAULT_CONTENT_TYPE:
        raise ValueError(f"a clip is video/* or {DEFAULT_CONTENT_TYPE}, not {kind}/{subtype}")
    return f"{kind}/{subtype}{parameters}"


def declared_content_type(value: str | None, *, field: str) -> str:
    """A dock's declared content type (415 naming the field unless a clip's)."""
    if value is None:
        return DEFAULT_CONTENT_TYPE
    try:
        return clip_content_type(value)
    except ValueError as exc:
        raise UnsupportedMediaType(
            f"{field}: {exc}", errors=[{"field": field, "message": str(exc)}]
        ) from exc


ClipContentType = Annotated[str, AfterValidator(clip_content_type)]


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
    started_at: Instant
    ended_at: Instant
    clock_offset_ms: int = Field(
        ge=-86_400_000, le=86_400_000, description="camera clock minus station clock"
    )
    place: Place
    pre_record_s: int = Field(0, ge=0, le=300)
    size: int = Field(gt=0, le=MAX_CLIP_SIZE, description="bytes of the clip")
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
        except (ValueError, RecursionError) as exc:  # binascii.Error, UnicodeError included
            raise UnprocessableEntity(
                f"{METADATA_HEADER} is not base64url JSON", field="header"
            ) from exc
        return cls.parse(data)

    @classmethod
    def parse(cls, data: Any) -> ClipMetadata:
        """Validate decoded JSON; every problem is a 422 naming the field."""
        refuse_unstorable(data, "metadata")
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
    # Defaults: an older vault does not send them.
    retain_until: datetime | None = Field(None, description="when retention ends (R241-13)")
    erasure_due: bool = Field(
        False,
        description="the clip arrived past its retention: the next erasure pass erases it "
        "unless a procedure holds it",
    )


def erasure_notice(retain_until: datetime) -> str:
    """What the dock shows for a clip that arrived past its retention (R241-13): it is kept,
    since the camera must be freed, but only until the next erasure pass unless qualified."""
    day = retain_until.strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"Durée de conservation échue le {day} : cet enregistrement sera effacé au prochain "
        "passage de l'effacement automatique (R241-13), sauf s'il est rattaché à une "
        "procédure. / Retention ended on "
        f"{day}: this recording will be erased at the next erasure pass (R241-13) unless it "
        "is qualified for a procedure (POST /v1/organisations/{org_id}/procedures/"
        "{procedure_id}/recordings)."
    )


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
