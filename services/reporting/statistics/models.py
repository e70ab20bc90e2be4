"""Aggregates per organisation and day, advanced event by event from the audit feed. A report
for any period sums at most a year of days: its cost does not grow with the registry."""

from __future__ import annotations

import uuid
from datetime import date, datetime

from sqlalchemy import BigInteger, Date, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.reporting.models import Base


class Checkpoint(Base):
    """The last feed position applied (in the same transaction as what it changed)."""

    __tablename__ = "checkpoints"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class DailyCount(Base):
    """How many of each event, per organisation and day: recordings, consultations,
    extractions, erasures, and recordings used for each procedure type (`used_judiciaire`...,
    by the day the recording was made)."""

    __tablename__ = "daily_counts"

    organisation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    metric: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class CameraDay(Base):
    """A camera recorded on that day (« nombre de caméras utilisées »)."""

    __tablename__ = "camera_days"

    organisation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    camera: Mapped[str] = mapped_column(Text, primary_key=True)


class DelayBucket(Base):
    """Recordings per day by delay from the end of recording to its arrival, in buckets of
    10% (`minutes` is the bucket's lower bound, 0 for under a minute): the median comes from
    these counts."""

    __tablename__ = "delay_buckets"

    organisation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    minutes: Mapped[int] = mapped_column(primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)


class ProcedureUse(Base):
    """A procedure for which recordings were extracted, by the day those recordings were made
    (R241-17: procedures « pour le besoin desquelles il a été procédé à la consultation et à
    l'extraction »)."""

    __tablename__ = "procedure_uses"

    organisation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    procedure_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    type: Mapped[str] = mapped_column(String(16))


class RecordingUse(Base):
    """A recording extracted for a procedure of a type, by the day it was made (the 2018
    letter's « enregistrements pour procédure judiciaire », etc.)."""

    __tablename__ = "recording_uses"

    organisation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    recording_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(16), primary_key=True)
    day: Mapped[date] = mapped_column(Date, index=True)


class HabilitationPeriod(Base):
    """An agent's habilitation, from its grant to its withdrawal (« agents habilités »)."""

    __tablename__ = "habilitations"

    habilitation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    organisation_id: Mapped[uuid.UUID] = mapped_column(index=True)
    agent_id: Mapped[uuid.UUID]
    granted_at: Mapped[datetime]
    withdrawn_at: Mapped[datetime | None]


class FinalisedReport(Base):
    """A report as sent: frozen, hashed, signed; later events do not change it."""

    __tablename__ = "finalised_reports"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    organisation_id: Mapped[uuid.UUID] = mapped_column(index=True)
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    body: Mapped[str] = mapped_column(Text)  # the report's canonical JSON
    sha256: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(String(64))
    finalised_by: Mapped[str] = mapped_column(Text)
    finalised_at: Mapped[datetime]
    # The letter as sent, byte for byte, its hash and signature (NULL for reports finalised
    # before letters were frozen: they are rendered again from `body`).
    pdf: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    pdf_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    pdf_signature: Mapped[str | None] = mapped_column(Text, default=None)
    version: Mapped[int] = mapped_column(default=1)

    __table_args__ = (
        UniqueConstraint(
            "organisation_id",
            "period_start",
            "period_end",
            "version",
            name="uq_finalised_reports_period_version",
        ),
    )


class RecordingDay(Base):
    """When each recording was made, so that its later uses count in its period."""

    __tablename__ = "recording_days"

    recording_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    organisation_id: Mapped[uuid.UUID]
    day: Mapped[date] = mapped_column(Date)


class Evaluation(Base):
    """« Évaluation de l'impact de l'emploi des caméras individuelles » (R241-17), written by
    the responsable for a period."""

    __tablename__ = "evaluations"

    organisation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    period_start: Mapped[date] = mapped_column(Date, primary_key=True)
    period_end: Mapped[date] = mapped_column(Date, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    written_by: Mapped[str] = mapped_column(Text)
    written_at: Mapped[datetime]
