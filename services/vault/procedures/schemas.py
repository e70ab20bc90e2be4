from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from services.vault.procedures.models import ProcedureType
from shared.schemas import JsonBody


class ProcedureIn(JsonBody):
    type: ProcedureType
    reference: str = Field(min_length=1, max_length=200, description="e.g. the parquet's number")
    description: str | None = Field(None, max_length=2000)


class ProcedureOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    type: ProcedureType
    reference: str
    description: str | None
    opened_by: str
    created_at: datetime
    closed_at: datetime | None
    closed_by: str | None
    recording_ids: list[uuid.UUID] = Field(default_factory=list)


class AttachIn(JsonBody):
    recording_id: uuid.UUID
    qualification: str = Field(
        min_length=3, max_length=500, description="why the recording matters to the procedure"
    )


class DetachIn(JsonBody):
    motif: str = Field(
        min_length=3,
        max_length=500,
        description="why the recording no longer belongs to the procedure (logged)",
    )


class ExtractionIn(JsonBody):
    recording_id: uuid.UUID
    motif: str = Field(min_length=3, max_length=500)
    destinataires: list[str] = Field(
        min_length=1, description="who receives the copy (R241-14), e.g. 'OPJ X, commissariat Y'"
    )
    derivative_id: uuid.UUID | None = Field(
        None,
        description="for a `formation` procedure, and only there: the approved anonymised copy "
        "of the recording to extract (R241-12: the original never is)",
    )
