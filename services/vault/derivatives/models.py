"""An anonymised copy of a recording, for training (R241-12: extraction « pour formation »
only of an anonymised copy). One row is both the job that makes it and, once made, the sealed
derivative itself (its own object, its own data key, under object lock)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.vault.models import Base
from shared.db import IdMixin, TimestampMixin


class DerivativeStatus(StrEnum):
    en_attente = "en_attente"  # asked for, no worker has claimed it yet
    en_cours = "en_cours"  # a worker is making it (heartbeat_at says it is alive)
    a_verifier = "a_verifier"  # made and sealed: « à vérifier » by a person
    approuve = "approuve"  # reviewed: may be extracted for `formation`
    rejete = "rejete"  # reviewed: not good enough (reason kept)
    echec = "echec"  # the job failed (reason kept): nothing registered
    annule = "annule"  # cancelled before it was made
    efface = "efface"  # erased with its original (R241-13)


# A job still to finish: one at a time per recording (a partial unique index).
ACTIVE = (DerivativeStatus.en_attente.value, DerivativeStatus.en_cours.value)
# A derivative whose sealed object exists and is registered.
SEALED = (
    DerivativeStatus.a_verifier.value,
    DerivativeStatus.approuve.value,
    DerivativeStatus.rejete.value,
)

DERIVATIVES_PREFIX = "derivatives/"  # every sealed derivative's key starts so


class Derivative(IdMixin, TimestampMixin, Base):
    __tablename__ = "derivatives"

    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"), index=True)
    recording_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("recordings.id"), index=True)
    procedure_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("procedures.id"))
    requested_by: Mapped[str] = mapped_column(Text)
    requested_role: Mapped[str] = mapped_column(String(16))
    motif: Mapped[str] = mapped_column(Text)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), default=DerivativeStatus.en_attente.value)
    reason: Mapped[str | None] = mapped_column(Text, default=None)  # of a failure
    # The job: which attempt holds it, alive until heartbeat_at + the stale delay.
    attempt: Mapped[int] = mapped_column(default=0)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    frames_done: Mapped[int] = mapped_column(BigInteger, default=0)
    frames_total: Mapped[int | None] = mapped_column(BigInteger, default=None)
    # The attempt's multipart upload, saved before its first part: a crash leaves it to abort.
    multipart_id: Mapped[str | None] = mapped_column(Text, default=None)
    # The sealed object (docs/sealed-format.md; its header names this row's id).
    object_key: Mapped[str | None] = mapped_column(Text, unique=True, default=None)
    object_version: Mapped[str | None] = mapped_column(Text, default=None)
    chunk_size: Mapped[int] = mapped_column(default=0)
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    sealed_size: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    content_type: Mapped[str] = mapped_column(Text, default="video/mp4")
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    kek_id: Mapped[str | None] = mapped_column(String(64), default=None)
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    # The engine's Result: frames, size, fps, faces per frame, tools and model versions.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB, default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    reviewed_by: Mapped[str | None] = mapped_column(Text, default=None)
    reviewed_at: Mapped[datetime | None] = mapped_column(default=None)
    review_reason: Mapped[str | None] = mapped_column(Text, default=None)
    erased_at: Mapped[datetime | None] = mapped_column(default=None)
    object_deleted_at: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        Index(
            "ux_vault_derivatives_active",
            "recording_id",
            unique=True,
            postgresql_where=text("status IN ('en_attente', 'en_cours')"),
        ),
        Index(
            "ix_vault_derivatives_active_jobs",
            "status",
            "heartbeat_at",
            postgresql_where=text("status IN ('en_attente', 'en_cours')"),
        ),
    )
