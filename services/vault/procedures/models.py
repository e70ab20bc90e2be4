from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.vault.models import Base
from shared.db import IdMixin, TimestampMixin


class ProcedureType(StrEnum):
    judiciaire = "judiciaire"
    administrative = "administrative"
    disciplinaire = "disciplinaire"
    formation = "formation"  # training: extraction needs anonymisation (not available yet)


class Procedure(IdMixin, TimestampMixin, Base):
    __tablename__ = "procedures"

    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"), index=True)
    type: Mapped[str] = mapped_column(String(16))
    reference: Mapped[str] = mapped_column(Text)  # the court's, the administration's...
    description: Mapped[str | None] = mapped_column(Text)
    opened_by: Mapped[str] = mapped_column(Text)  # the subject who opened it
    closed_at: Mapped[datetime | None]
    closed_by: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("organisation_id", "type", "reference"),)

    @property
    def is_open(self) -> bool:
        return self.closed_at is None


class ProcedureRecording(TimestampMixin, Base):
    """A recording qualified for a procedure: held (S3 legal hold, no erasure) while the
    procedure is open."""

    __tablename__ = "procedure_recordings"

    procedure_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("procedures.id"), primary_key=True)
    recording_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("recordings.id"), primary_key=True, index=True
    )
    qualification: Mapped[str] = mapped_column(Text)  # why it matters to the procedure
    attached_by: Mapped[str] = mapped_column(Text)
