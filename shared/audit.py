"""The audit trail's writer (R241-14): every service appends entries here, inside the same
transaction as the action they record, so an action and its entry commit together or not at
all. The table lives in its own schema, ``audit``; entries are never updated or deleted.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.db import NAMING_CONVENTION, utc_now
from shared.observability import request_id_var


class AuditAction(StrEnum):
    # The five operations R241-14 names.
    collecte = "collecte"
    consultation = "consultation"
    extraction = "extraction"  # « communication »
    modification = "modification"  # includes qualification (attaching to a procedure)
    effacement = "effacement"
    # Changes to who may do what, and other events a DPO must be able to trace.
    directory_change = "directory_change"
    habilitation_granted = "habilitation_granted"
    habilitation_withdrawn = "habilitation_withdrawn"
    station_registered = "station_registered"
    station_revoked = "station_revoked"
    access_refused = "access_refused"
    fixity_failure = "fixity_failure"  # a sealed object found damaged or missing
    fixity_restored = "fixity_restored"  # one flagged damaged that checks again
    registry_divergence = "registry_divergence"  # a row found to differ from the log
    protection_mismatch = "protection_mismatch"  # the store's lock or hold not as the log says
    report_finalised = "report_finalised"
    audit_purge = "audit_purge"


class Outcome(StrEnum):
    success = "success"
    refused = "refused"
    failed = "failed"


audit_metadata = MetaData(schema="audit", naming_convention=NAMING_CONVENTION)

entries = Table(
    "entries",
    audit_metadata,
    Column("id", BigInteger, Identity(), primary_key=True),
    Column("entry_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("service", String(32), nullable=False),
    Column("action", String(48), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("organisation_id", UUID(as_uuid=True), nullable=True),
    Column("actor_subject", Text, nullable=False),
    Column("actor_role", String(32), nullable=True),
    Column("motif", Text, nullable=True),
    Column("destinataires", ARRAY(Text), nullable=False, server_default="{}"),
    Column("recording_ids", ARRAY(UUID(as_uuid=True)), nullable=False, server_default="{}"),
    Column("procedure_ref", Text, nullable=True),
    Column("request_id", String(64), nullable=True),
    # What changed, or what was refused and why: small JSON, never content or secrets.
    Column("details", JSONB, nullable=False, server_default="{}"),
    Index("ix_audit_entries_organisation_id_occurred_at", "organisation_id", "occurred_at"),
    # A recording's history, a habilitation's entries, the entry that collected an object
    # (the registry's checks, services/vault/audit/registry.py; migration 0009).
    Index("ix_audit_entries_recording_ids", "recording_ids", postgresql_using="gin"),
    Index(
        "ix_audit_entries_habilitation",
        text("(details->>'habilitation_id')"),
        postgresql_where=text("action IN ('habilitation_granted', 'habilitation_withdrawn')"),
    ),
    Index(
        "ix_audit_entries_object_key",
        text("(details->>'object_key')"),
        postgresql_where=text("action = 'collecte'"),
    ),
)


# The log's positions: written by the vault's sequencer, read by anyone (docs/audit.md).
leaves = Table(
    "leaves",
    audit_metadata,
    Column("seq", BigInteger, primary_key=True),
    Column("entry_id", UUID(as_uuid=True), nullable=False, unique=True),
    Column("entry_pk", BigInteger, nullable=False),
    Column("txid", Text, nullable=False),
    Column("leaf_hash", LargeBinary, nullable=False),
    Column("sequenced_at", DateTime(timezone=True), nullable=False),
)


@dataclass
class AuditEntry:
    action: AuditAction
    service: str
    actor_subject: str
    organisation_id: uuid.UUID | None
    actor_role: str | None = None
    outcome: Outcome = Outcome.success
    motif: str | None = None
    destinataires: Sequence[str] = ()
    recording_ids: Sequence[uuid.UUID] = ()
    procedure_ref: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    occurred_at: datetime = field(default_factory=utc_now)
    entry_id: uuid.UUID = field(default_factory=uuid.uuid4)


# Built once: the append is on every request's path, and building it per call costs ~30%.
_INSERT = entries.insert()


async def append(session: AsyncSession | AsyncConnection, entry: AuditEntry) -> uuid.UUID:
    """Add ``entry`` to the trail inside the caller's transaction."""
    await session.execute(
        _INSERT,
        {
            "entry_id": entry.entry_id,
            "occurred_at": entry.occurred_at,
            "service": entry.service,
            "action": entry.action.value,
            "outcome": entry.outcome.value,
            "organisation_id": entry.organisation_id,
            "actor_subject": entry.actor_subject,
            "actor_role": entry.actor_role,
            "motif": entry.motif,
            "destinataires": list(entry.destinataires),
            "recording_ids": list(entry.recording_ids),
            "procedure_ref": entry.procedure_ref,
            "request_id": request_id_var.get(),
            "details": entry.details,
        },
    )
    return entry.entry_id


# The fields a leaf hash covers, in the canonical encoding below (docs/audit.md).
CANONICAL_FIELDS = (
    "entry_id",
    "occurred_at",
    "service",
    "action",
    "outcome",
    "organisation_id",
    "actor_subject",
    "actor_role",
    "motif",
    "destinataires",
    "recording_ids",
    "procedure_ref",
    "request_id",
    "details",
)


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def canonical_bytes(row: Mapping[Any, Any]) -> bytes:
    """The bytes of an entry that its Merkle leaf hashes: JSON, sorted keys, no spaces, UTF-8.

    Anyone holding an exported entry can recompute its leaf hash with this function alone."""
    document = {name: _plain(row[name]) for name in CANONICAL_FIELDS}
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class FeedEvent:
    """One event of the log, for a consumer such as reporting. ``seq`` is its position: dense,
    increasing and never reused, so a consumer that stores the last ``seq`` it processed, in
    the same transaction as what it derived, resumes exactly there after a crash."""

    seq: int
    entry_id: uuid.UUID
    occurred_at: datetime
    action: str
    outcome: str
    organisation_id: uuid.UUID | None
    actor_subject: str
    actor_role: str | None
    recording_ids: list[uuid.UUID]
    procedure_ref: str | None
    details: dict[str, Any]


async def read_feed(session: AsyncSession, *, after_seq: int, limit: int) -> list[FeedEvent]:
    """The sequenced entries after position ``after_seq`` (-1 for the start), in log order."""
    statement = (
        select(leaves.c.seq, entries)
        .join(entries, entries.c.entry_id == leaves.c.entry_id)
        .where(leaves.c.seq > after_seq)
        .order_by(leaves.c.seq)
        .limit(limit)
    )
    rows = (await session.execute(statement)).mappings()
    return [
        FeedEvent(
            seq=row["seq"],
            entry_id=row["entry_id"],
            occurred_at=row["occurred_at"],
            action=row["action"],
            outcome=row["outcome"],
            organisation_id=row["organisation_id"],
            actor_subject=row["actor_subject"],
            actor_role=row["actor_role"],
            recording_ids=list(row["recording_ids"]),
            procedure_ref=row["procedure_ref"],
            details=dict(row["details"]),
        )
        for row in rows
    ]
