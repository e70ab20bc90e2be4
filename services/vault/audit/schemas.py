from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from shared.signatures import b64encode

if TYPE_CHECKING:
    from services.vault.audit.service import TreeHead


class EntryOut(BaseModel):
    """An audit entry (R241-14): who, when, what, why, for whom, on which recordings."""

    entry_id: uuid.UUID
    seq: int | None = Field(description="position in the log; null until sequenced (~1 s)")
    occurred_at: datetime
    service: str
    action: str
    outcome: str
    organisation_id: uuid.UUID | None
    actor_subject: str
    actor_role: str | None
    motif: str | None
    destinataires: list[str]
    recording_ids: list[uuid.UUID]
    procedure_ref: str | None
    request_id: str | None
    details: dict[str, Any]


class EntryPage(BaseModel):
    items: list[EntryOut]
    total: int
    limit: int
    offset: int


class TreeHeadOut(BaseModel):
    """A signed tree head: keep these as a witness; later ones must extend them."""

    tree_size: int
    root_hash: str = Field(description="hex SHA-256")
    signed_at: str
    key_id: str
    signature: str = Field(description="base64 Ed25519 over the message in docs/audit.md")


class InclusionProof(BaseModel):
    entry: EntryOut
    leaf_index: int
    leaf_hash: str
    tree_size: int
    audit_path: list[str] = Field(description="hex hashes, RFC 9162 2.1.3")
    head: TreeHeadOut


class ConsistencyProof(BaseModel):
    first: TreeHeadOut
    second: TreeHeadOut
    proof: list[str] = Field(description="hex hashes, RFC 9162 2.1.4")


class PublicKey(BaseModel):
    algorithm: str = "Ed25519"
    public_key: str = Field(description="base64, 32 bytes")
    key_id: str


CSV_COLUMNS = list(EntryOut.model_fields)


def entry_out(row: Any) -> EntryOut:
    return EntryOut.model_validate({name: row[name] for name in CSV_COLUMNS})


def head_out(head: TreeHead) -> TreeHeadOut:
    return TreeHeadOut(
        tree_size=head.tree_size,
        root_hash=head.root_hash.hex(),
        signed_at=head.signed_at,
        key_id=head.key_id,
        signature=b64encode(head.signature),
    )


def proof_out(leaf: Any, head: TreeHead, path: list[bytes]) -> InclusionProof:
    """An inclusion proof as the API and extraction packages give it (shared/witness.py
    checks it)."""
    return InclusionProof(
        entry=entry_out(leaf),
        leaf_index=leaf["seq"],
        leaf_hash=bytes(leaf["leaf_hash"]).hex(),
        tree_size=head.tree_size,
        audit_path=[h.hex() for h in path],
        head=head_out(head),
    )
