from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, ExcludeConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from services.vault.models import Base
from shared.db import IdMixin, TimestampMixin

# R241-13: recordings are erased after one month unless a procedure holds them.
LEGAL_RETENTION_DAYS = 30


class CameraStatus(StrEnum):
    active = "active"
    out_of_service = "out_of_service"
    retired = "retired"


class StationStatus(StrEnum):
    active = "active"
    revoked = "revoked"


class Organisation(IdMixin, TimestampMixin, Base):
    """A service de police municipale (or an intercommunal one serving several communes)."""

    __tablename__ = "organisations"

    name: Mapped[str] = mapped_column(Text)
    departement: Mapped[str] = mapped_column(String(3), index=True)
    retention_days: Mapped[int] = mapped_column(default=LEGAL_RETENTION_DAYS)
    # loi 2021-646 art. 45: whether wearers may view their own recordings (for the four purposes).
    wearer_access: Mapped[bool] = mapped_column(Boolean, default=False)
    # R241-8: the number of cameras the préfet's authorisation allows, when known.
    authorised_cameras: Mapped[int | None] = mapped_column(default=None)

    communes: Mapped[list[Commune]] = relationship(
        lazy="raise", cascade="all, delete-orphan", order_by="Commune.insee_code"
    )

    __table_args__ = (
        CheckConstraint(
            f"retention_days BETWEEN 1 AND {LEGAL_RETENTION_DAYS}", name="retention_days"
        ),
    )


class Commune(Base):
    __tablename__ = "communes"

    insee_code: Mapped[str] = mapped_column(String(5), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    organisation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organisations.id", ondelete="CASCADE"), index=True
    )


class Agent(IdMixin, TimestampMixin, Base):
    __tablename__ = "agents"

    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"), index=True)
    matricule: Mapped[str] = mapped_column(String(32))
    first_name: Mapped[str] = mapped_column(Text)
    last_name: Mapped[str] = mapped_column(Text)
    # The identity provider's subject (`sub`) of this person, which links tokens to the agent.
    subject: Mapped[str | None] = mapped_column(Text, default=None)
    # Roles held in the service: "agent" (wears a camera) and/or "responsable".
    roles: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)

    __table_args__ = (
        UniqueConstraint("organisation_id", "matricule"),
        UniqueConstraint("organisation_id", "subject"),
    )


class Habilitation(IdMixin, Base):
    """R241-12: an agent individually designated and authorised by the responsable."""

    __tablename__ = "habilitations"

    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"), index=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id"), index=True)
    granted_by: Mapped[str] = mapped_column(Text)
    granted_at: Mapped[datetime]
    note: Mapped[str | None] = mapped_column(Text, default=None)
    withdrawn_at: Mapped[datetime | None] = mapped_column(default=None)
    withdrawn_by: Mapped[str | None] = mapped_column(Text, default=None)
    withdrawal_reason: Mapped[str | None] = mapped_column(Text, default=None)

    __table_args__ = (
        # At most one active designation per agent.
        Index(
            "uq_habilitations_active_agent",
            "agent_id",
            unique=True,
            postgresql_where=text("withdrawn_at IS NULL"),
        ),
    )


class Camera(IdMixin, TimestampMixin, Base):
    __tablename__ = "cameras"

    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"), index=True)
    serial: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=CameraStatus.active.value)

    __table_args__ = (UniqueConstraint("organisation_id", "serial"),)


class Station(IdMixin, TimestampMixin, Base):
    """A docking station, known by its Ed25519 public key."""

    __tablename__ = "stations"

    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"), index=True)
    name: Mapped[str] = mapped_column(Text)
    public_key: Mapped[str] = mapped_column(String(44), unique=True)  # base64, 32 bytes
    status: Mapped[str] = mapped_column(String(16), default=StationStatus.active.value)
    registered_by: Mapped[str] = mapped_column(Text)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_by: Mapped[str | None] = mapped_column(Text, default=None)
    revocation_reason: Mapped[str | None] = mapped_column(Text, default=None)


class CameraAssignment(IdMixin, Base):
    """Who wore a camera over [starts_at, ends_at): finds the wearer of any recording (R241-10)."""

    __tablename__ = "camera_assignments"

    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"), index=True)
    camera_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cameras.id"), index=True)
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id"), index=True)
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime | None] = mapped_column(default=None)
    assigned_by: Mapped[str] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("ends_at IS NULL OR ends_at > starts_at", name="ends_after_start"),
        # A camera is worn by one agent at a time: the database refuses overlapping periods.
        ExcludeConstraint(
            ("camera_id", "="),
            (text("tstzrange(starts_at, ends_at, '[)')"), "&&"),
            name="ex_camera_assignments_overlap",
            using="gist",
        ),
    )
