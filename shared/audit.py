"""The audit trail's writer (R241-14): every service appends entries here, inside the same
transaction as the action they record, so an action and its entry commit together or not at
all. The table lives in its own schema, ``audit``; entries are never updated or deleted.

Each entry carries its authenticator: the writing service's Ed25519 signature over the entry's
canonical bytes, made here, inside the writing transaction, with the key the service handed
to its sessions (``writer_info``). The vault's sequencer logs only entries whose authenticator
verifies with a known writer's public key (``WriterKeys``): a row inserted by anyone else, the
database's superuser included, is set aside and reported, never signed into the log.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    DateTime,
    Identity,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    cast,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.db import NAMING_CONVENTION, utc_now
from shared.notes import ED25519, NoteError, VerifierKey, parse_keys
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
    # Anonymised copies for training (R241-12; services/vault/derivatives/): each names the
    # original recording, never the wearer.
    derivation_requested = "derivation_requested"  # the demande
    derivation_finished = "derivation_finished"  # the job's end: made, failed or cancelled
    derivation_reviewed = "derivation_reviewed"  # approved or rejected, with its reason
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
    # The writer's key hash (4 bytes) and Ed25519 signature over ENTRY_CONTEXT and the canonical
    # bytes; null only for entries written before migration 0010.
    Column("authenticator", LargeBinary, nullable=True),
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


def naming(recording_id: uuid.UUID) -> ColumnElement[bool]:
    """The entries that name this recording (its history). Written ``recording_ids @> {id}``:
    the GIN index answers it, where ``id = ANY(recording_ids)`` reads every entry compared."""
    return entries.c.recording_ids.contains(cast([recording_id], ARRAY(UUID(as_uuid=True))))


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

# What an entry's authenticator signs, before its canonical bytes: a signature made for an
# entry can never pass for anything else.
ENTRY_CONTEXT = b"temoin-audit-entry/v1\n"
WRITER_INFO_KEY = "temoin.audit_writer"
AUTHENTICATOR_SIZE = 4 + 64


class AuditWriter:
    """A service's entry key (``INGEST_AUDIT_ENTRY_KEY``, ``VAULT_...``, ``REPORTING_...``): it
    authenticates every entry the service appends. Its name is the service's, which entries
    carry in their ``service`` field; the vault knows its public key (``WriterKeys``)."""

    def __init__(self, name: str, key: SigningKey) -> None:
        self.name = name
        self.key = key
        self.verifier = VerifierKey(name, ED25519, bytes(key.verify_key))
        self._hash = self.verifier.key_hash

    def authenticate(self, canonical: bytes) -> bytes:
        """The authenticator of an entry: key hash (4 bytes) || Ed25519 signature."""
        return self._hash + self.key.sign(ENTRY_CONTEXT + canonical).signature


def writer_info(writer: AuditWriter) -> dict[str, Any]:
    """What a sessionmaker's ``info`` holds so that its sessions append as ``writer``."""
    return {WRITER_INFO_KEY: writer}


def _writer_of(session: AsyncSession | AsyncConnection) -> AuditWriter:
    writer = session.info.get(WRITER_INFO_KEY)
    if not isinstance(writer, AuditWriter):
        raise RuntimeError(
            "this session has no audit writer: make it with the service's sessionmaker "
            "(shared.web.open_resources) or pass writer="
        )
    return writer


def entry_row(entry: AuditEntry, request_id: str | None) -> dict[str, Any]:
    """The columns of ``entry`` as the log stores them, without its authenticator: what the
    writer signs (in canonical form) and what the leaf hashes."""
    return {
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
        "request_id": request_id,
        "details": entry.details,
    }


async def append(
    session: AsyncSession | AsyncConnection,
    entry: AuditEntry,
    *,
    writer: AuditWriter | None = None,
) -> uuid.UUID:
    """Add ``entry`` to the trail inside the caller's transaction, authenticated by the
    service's entry key (the session's, unless ``writer`` is given)."""
    writer = writer or _writer_of(session)
    if entry.service != writer.name:
        raise ValueError(f"the {writer.name} service cannot write entries of {entry.service}")
    if entry.occurred_at.tzinfo is None:
        raise ValueError("an audit entry's time needs its time zone")
    row = entry_row(entry, request_id_var.get())
    row["authenticator"] = writer.authenticate(canonical_bytes(row))
    await session.execute(_INSERT, row)
    return entry.entry_id


class Refusal(StrEnum):
    """Why an entry is not the work of a known writer."""

    missing = "missing"  # no authenticator at all (inserted by hand)
    unknown_writer = "unknown_writer"  # no key of the service the entry names has this hash
    invalid = "invalid"  # the signature does not verify: the entry or its authenticator differ


class WriterKeys:
    """The writers' public keys, as the vault and ``temoin audit verify`` know them
    (``VAULT_AUDIT_WRITER_KEYS``: verifier keys named after the services)."""

    def __init__(self, keys: Sequence[VerifierKey]) -> None:
        self.keys = tuple(keys)
        self._by_hash = {
            (key.name, key.key_hash): VerifyKey(key.public_key)
            for key in keys
            if key.key_type == ED25519
        }

    @classmethod
    def parse(cls, text: str) -> WriterKeys:
        keys = parse_keys(text)
        if any(key.key_type != ED25519 for key in keys):
            raise NoteError("writer keys are Ed25519 keys of type 0x01")
        return cls(keys)

    def refusal(self, row: Mapping[Any, Any], canonical: bytes) -> Refusal | None:
        """Why the entry ``row`` (with its ``authenticator``) is not authenticated, or None."""
        authenticator = row["authenticator"]
        if not authenticator:
            return Refusal.missing
        authenticator = bytes(authenticator)
        key = self._by_hash.get((row["service"], authenticator[:4]))
        if key is None or len(authenticator) != AUTHENTICATOR_SIZE:
            return Refusal.unknown_writer
        try:
            key.verify(ENTRY_CONTEXT + canonical, authenticator[4:])
        except BadSignatureError:
            return Refusal.invalid
        return None


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
