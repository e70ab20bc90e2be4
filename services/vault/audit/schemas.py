from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from shared.schemas import JsonBody
from shared.signatures import b64encode

JSON_INT_MAX = 2**53 - 1

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
    authenticator: str | None = Field(
        None,
        description="base64: the writing service's key hash (4 bytes) and Ed25519 signature "
        "over the entry's canonical bytes (docs/audit.md); null before migration 0010",
    )


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
    signature: str = Field(description="base64 Ed25519 over the checkpoint's text")
    previous_size: int | None = Field(description="the head this one chains to (0: none)")
    previous_root: str | None = Field(description="hex SHA-256 root of that head")
    checkpoint: str | None = Field(
        description="the signed checkpoint (C2SP signed note); null for heads signed before "
        "checkpoints, whose signature covers the older message of docs/audit.md"
    )


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
    origin: str = Field(description="the log's origin: first line of its checkpoints")
    verifier_key: str = Field(description="signed-note verifier key: origin+hash+base64")


class CosignatureIn(JsonBody):
    """A witness's cosignature of one of the log's checkpoints (C2SP tlog-cosignature)."""

    # 2^53 - 1: the largest integer every JSON reader keeps exact; no log will reach it.
    tree_size: int = Field(ge=0, le=JSON_INT_MAX, description="the checkpoint's tree size")
    cosignature: str = Field(
        max_length=1000,
        description="the signature line: em dash, space, witness name, space, base64 of "
        "key hash (4 bytes), timestamp (8 bytes) and Ed25519 signature",
    )


class CosignatureOut(BaseModel):
    witness: str
    tree_size: int
    cosigned_at: datetime


class WitnessOut(BaseModel):
    name: str
    verifier_key: str
    tree_size: int | None = Field(description="the largest tree it last cosigned")
    cosigned_at: datetime | None = Field(description="when it last cosigned (its clock)")
    age_s: float | None = Field(description="seconds since then")


class WitnessStatus(BaseModel):
    """How fresh the log's witnessing is: each configured witness's latest cosignature."""

    latest_head: int | None = Field(description="size of the latest signed head")
    witnesses: list[WitnessOut]


CSV_COLUMNS = list(EntryOut.model_fields)


def entry_out(row: Any) -> EntryOut:
    values = {name: row[name] for name in CSV_COLUMNS if name != "authenticator"}
    authenticator = row.get("authenticator")
    values["authenticator"] = None if authenticator is None else b64encode(bytes(authenticator))
    return EntryOut.model_validate(values)


def head_out(head: TreeHead) -> TreeHeadOut:
    return TreeHeadOut(
        tree_size=head.tree_size,
        root_hash=head.root_hash.hex(),
        signed_at=head.signed_at,
        key_id=head.key_id,
        signature=b64encode(head.signature),
        previous_size=head.previous_size,
        previous_root=None if head.previous_root is None else head.previous_root.hex(),
        checkpoint=head.checkpoint,
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
