from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.vault.derivatives.models import DerivativeStatus
from shared.schemas import JsonBody


class ParametersIn(JsonBody):
    """How faces are hidden; the vault's defaults (docs/anonymisation.md) when left out."""

    threshold: float | None = Field(None, gt=0, lt=1, description="the detector's score")
    margin: float | None = Field(None, ge=0, le=2, description="added around each face box")
    method: Literal["pixelate", "blur"] | None = None
    smoothing_frames: int | None = Field(None, ge=0, le=60)
    detect_every: int | None = Field(None, ge=1, le=30, description="detection stride")
    detect_scale: float | None = Field(
        None, gt=0, le=1, description="scale at which the detector sees the frame"
    )


class DerivativeIn(JsonBody):
    recording_id: uuid.UUID
    motif: str = Field(min_length=3, max_length=500, description="why the copy is wanted")
    parameters: ParametersIn | None = None


class ReviewIn(JsonBody):
    decision: Literal["approuve", "rejete"]
    reason: str = Field(min_length=3, max_length=1000, description="what the reviewer saw (logged)")


class DerivativeConsultationIn(JsonBody):
    motif: str = Field(min_length=3, max_length=500)


class DerivativeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    recording_id: uuid.UUID
    procedure_id: uuid.UUID
    status: DerivativeStatus
    reason: str | None
    requested_by: str
    motif: str
    parameters: dict[str, Any]
    frames_done: int
    frames_total: int | None
    created_at: datetime
    finished_at: datetime | None
    sha256: str | None
    size: int
    result: dict[str, Any] | None
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_reason: str | None


class AcceptedOut(BaseModel):
    id: uuid.UUID
    status: DerivativeStatus
