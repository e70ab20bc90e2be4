from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field


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
