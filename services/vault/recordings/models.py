from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from services.vault.models import Base
from shared.db import IdMixin


class RecordingStatus(StrEnum):
    sealed = "sealed"  # stored, readable by those allowed
    damaged = "damaged"  # failed a fixity check: never served as valid
    erased = "erased"  # tombstone: object deleted, data key destroyed


class Recording(IdMixin, Base):
    __tablename__ = "recordings"

    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"), index=True)
    camera_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("cameras.id"))
    agent_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("agents.id"), index=True)
    station_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("stations.id"))
    # R241-10: the day and time range, the wearer, the place.
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime]
    clock_offset_ms: Mapped[int] = mapped_column(BigInteger)  # camera clock minus station clock
    latitude: Mapped[float | None]
    longitude: Mapped[float | None]
    address: Mapped[str | None] = mapped_column(Text)
    pre_record_s: Mapped[int]
    intervention_ref: Mapped[str | None] = mapped_column(Text)
    # The clip as the dock sent it.
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime]
    # The sealed object and its key (docs/sealed-format.md).
    object_key: Mapped[str] = mapped_column(Text, unique=True)
    object_version: Mapped[str | None] = mapped_column(Text)
    chunk_size: Mapped[int]
    sealed_size: Mapped[int] = mapped_column(BigInteger)
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)  # destroyed at erasure
    kek_id: Mapped[str] = mapped_column(String(64))
    # R241-13: erased after the organisation's retention unless a procedure holds it.
    retain_until: Mapped[datetime] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(16), default=RecordingStatus.sealed.value)
    erased_at: Mapped[datetime | None]

    __table_args__ = (
        # The same clip from the same camera is one recording, however often it is uploaded.
        UniqueConstraint("camera_id", "sha256"),
    )
