from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from services.vault.derivatives import models as _derivatives  # noqa: F401  (consultations name it)
from services.vault.models import Base
from shared.db import IdMixin, TimestampMixin


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
    # Erasure destroys the key at once; the object goes when its lock allows.
    object_deleted_at: Mapped[datetime | None] = mapped_column(default=None)
    # When the erasure job first found it past retention but held by a procedure (logged once).
    erasure_refused_at: Mapped[datetime | None] = mapped_column(default=None)
    legal_hold: Mapped[bool] = mapped_column(default=False)  # as set on the S3 object
    # The COMPLIANCE retention the vault set on the object (extended while a procedure holds
    # it, never shortened: services/vault/recordings/holds.py).
    locked_until: Mapped[datetime | None] = mapped_column(default=None)
    # When a difference between this row and the log was first noted (cleared once they agree).
    divergence_noted_at: Mapped[datetime | None] = mapped_column(default=None)
    checked_at: Mapped[datetime | None] = mapped_column(default=None)  # last fixity check
    # A scrub is reading it until then (services/vault/recordings/fixity.py).
    scrub_claimed_until: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        # The same clip from the same camera is one recording, however often it is uploaded.
        UniqueConstraint("camera_id", "sha256"),
        # The search's order (newest first, the id to break ties): a page is read from the
        # index, never by sorting the organisation's every recording; and a period's count is
        # an index-only scan (migration 0014, `make bench-dashboard`).
        Index("ix_vault_recordings_search", "organisation_id", text("started_at DESC"), "id"),
        # The search by place (`address ILIKE '%…%'`), by trigrams (pg_trgm).
        Index(
            "ix_vault_recordings_address_trgm",
            "address",
            postgresql_using="gin",
            postgresql_ops={"address": "gin_trgm_ops"},
        ),
        # Accueil (issue 17): what came in since a time, a station's last upload (a max read
        # from the end of the index), what is erased soon, what the scrub found damaged.
        Index("ix_vault_recordings_org_received", "organisation_id", "received_at"),
        Index("ix_vault_recordings_station_received", "station_id", "received_at"),
        Index(
            "ix_vault_recordings_org_sealed_retain",
            "organisation_id",
            "retain_until",
            postgresql_where=text("status = 'sealed'"),
        ),
        Index(
            "ix_vault_recordings_org_damaged",
            "organisation_id",
            postgresql_where=text("status = 'damaged'"),
        ),
    )


class UploadStatus(StrEnum):
    open = "open"  # receiving: offset < length
    # Every byte is in and checked, the session's state committed: the store assembles the
    # object and the recording is registered. A crash here is rolled forward, never lost.
    completing = "completing"
    complete = "complete"  # sealed and registered (or found already registered): `recording_id`
    rejected = "rejected"  # the whole clip did not match its declared SHA-256: start again
    terminated = "terminated"  # the station gave up on it (tus termination)
    expired = "expired"  # left unfinished past `expires_at`
    lost = "lost"  # its multipart upload vanished from the store (a crash at completion)


class UploadSession(IdMixin, TimestampMixin, Base):
    """A resumable upload in progress (tus, issue 6; docs/ingest.md). Its sealed parts are in
    an S3 multipart upload; everything needed to go on from the last acknowledged offset is
    in this row and changes in one transaction, so any vault process can resume it."""

    __tablename__ = "upload_sessions"

    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"))
    station_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("stations.id"), index=True)
    metadata_json: Mapped[dict[str, Any]] = mapped_column(JSONB)  # ClipMetadata, as declared
    content_type: Mapped[str] = mapped_column(Text)
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default=UploadStatus.open.value)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    # The recording it becomes: its id is fixed at creation (it is in the sealed header).
    recording_id: Mapped[uuid.UUID]
    chunk_size: Mapped[int]
    part_size: Mapped[int]  # plaintext bytes per S3 part, a whole number of chunks
    object_key: Mapped[str | None] = mapped_column(Text)
    multipart_id: Mapped[str | None] = mapped_column(Text)
    etags: Mapped[list[str]] = mapped_column(JSONB, default=list)  # of the parts sent so far
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    kek_id: Mapped[str] = mapped_column(String(64))
    retain_until: Mapped[datetime]
    locked_until: Mapped[datetime | None] = mapped_column(default=None)  # the object's lock
    # The bytes after the last whole part, sealed under the data key (less than a part).
    tail: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The clip's running SHA-256 up to `offset` (shared/hashing.py).
    hash_state: Mapped[bytes] = mapped_column(LargeBinary)
    # The PATCH streaming into the upload now, and until when unless it renews its claim
    # (resumable.py, "Claims"): no connection is held while the bytes stream.
    claim_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    claimed_until: Mapped[datetime | None] = mapped_column(default=None)

    __table_args__ = (
        # What the background passes look for (expiry, completions to roll forward).
        Index(
            "ix_vault_upload_sessions_live",
            "status",
            "expires_at",
            postgresql_where=text("status IN ('open', 'completing')"),
        ),
    )


class Consultation(IdMixin, TimestampMixin, Base):
    """A person's viewing of a recording (R241-14: author, date, motif), the subject of the
    signed media URL it opens."""

    __tablename__ = "consultations"

    organisation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("organisations.id"), index=True)
    recording_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("recordings.id"), index=True)
    subject: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    motif: Mapped[str] = mapped_column(Text)
    procedure_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("procedures.id"))
    expires_at: Mapped[datetime]
    closed_at: Mapped[datetime | None] = mapped_column(default=None)  # its media URL ends
    # The consultation of an anonymised copy of the recording rather than of the recording
    # (services/vault/derivatives/): its media URL serves that copy.
    derivative_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("derivatives.id"), default=None
    )
