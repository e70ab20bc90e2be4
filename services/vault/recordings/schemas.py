from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.openapi import body, problems
from shared.schemas import JsonBody


class RecordingOut(BaseModel):
    """A recording's registry entry: metadata only, never content."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    camera_id: uuid.UUID
    agent_id: uuid.UUID
    station_id: uuid.UUID
    started_at: datetime
    ended_at: datetime
    clock_offset_ms: int
    latitude: float | None
    longitude: float | None
    address: str | None
    pre_record_s: int
    intervention_ref: str | None
    size: int
    sha256: str
    content_type: str
    received_at: datetime
    retain_until: datetime
    status: str
    legal_hold: bool
    erased_at: datetime | None
    checked_at: datetime | None


class WearerPurpose(StrEnum):
    """Loi 2021-646 art. 45: the only purposes for which a wearer may view their recording."""

    recherche_auteurs = "recherche_auteurs"  # help find the authors of offences
    prevention_atteintes = "prevention_atteintes"  # prevent imminent breaches of public order
    secours = "secours"  # rescue people
    compte_rendu = "compte_rendu"  # report an intervention faithfully


class ConsultationIn(JsonBody):
    motif: str = Field(min_length=3, max_length=500, description="why (R241-14), logged")
    procedure_id: uuid.UUID | None = Field(None, description="the procedure it serves, if any")
    purpose: WearerPurpose | None = Field(None, description="required when the wearer views")


class ConsultationOut(BaseModel):
    id: uuid.UUID
    recording_id: uuid.UUID
    url: str = Field(
        description="signed media URL for a <video> element (HTTP Range), relative to the vault"
    )
    media_url: str = Field(
        description="the same URL, absolute: VAULT_PUBLIC_URL (else the address the request "
        "came to) followed by `url`"
    )
    expires_at: datetime


_CLIP = body(
    "video/*",
    "application/octet-stream",
    description="the clip, in the content type it was uploaded with",
)
_MEDIA_HEADERS = {
    "Accept-Ranges": {"schema": {"type": "string", "enum": ["bytes"]}},
    "Content-Length": {"schema": {"type": "integer", "minimum": 0}},
}
# The media URL answers the clip's bytes, never JSON: whole (200) or a range (206).
MEDIA_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {**_CLIP, "headers": _MEDIA_HEADERS},
    206: {
        **_CLIP,
        "description": "the requested byte range of the clip",
        "headers": {
            **_MEDIA_HEADERS,
            "Content-Range": {"schema": {"type": "string"}, "description": "bytes a-b/size"},
        },
    },
    **problems(403, 409, 410, 416),
}
