"""The audit trail for the DPO and the responsable (R241-14), and its proofs for anyone who
keeps signed tree heads as a witness."""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from services.vault.audit.repository import AuditRepository
from services.vault.audit.schemas import (
    CSV_COLUMNS,
    ConsistencyProof,
    EntryOut,
    EntryPage,
    InclusionProof,
    PublicKey,
    TreeHeadOut,
    entry_out,
    head_out,
    proof_out,
)
from services.vault.audit.service import AuditLog, TreeHead
from services.vault.settings import VaultSettings
from shared.access import OrgAccess, organisation_access, require
from shared.auth import Principal, Role
from shared.errors import NotFound, UnprocessableEntity
from shared.inputs import INT64_MAX, Instant, Offset
from shared.openapi import problems
from shared.signatures import key_id, public_key_of
from shared.web import SessionDep

router = APIRouter(prefix="/v1", tags=["audit"])

Auditor = Annotated[OrgAccess, Depends(organisation_access(Role.dpo, Role.responsable))]
# Tree heads and proofs carry hashes only: anyone who may keep a witness copy may read them.
Witness = Annotated[
    Principal, Depends(require(Role.dpo, Role.responsable, Role.maire, Role.prefecture))
]
Signer = Annotated[Principal, Depends(require(Role.dpo, Role.responsable))]

ORG_AUDIT = "/organisations/{org_id}/audit"
TreeSize = Annotated[int, Field(ge=1, le=INT64_MAX)]  # entries are numbered by a bigint


async def _signing_log(request: Request, session: SessionDep) -> AuditLog:
    settings: VaultSettings = request.app.state.settings
    return AuditLog(session, settings.audit_key())


Log = Annotated[AuditLog, Depends(_signing_log)]


def _csv(items: list[EntryOut]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for item in items:
        row = item.model_dump(mode="json")
        writer.writerow([";".join(map(str, v)) if isinstance(v, list) else v for v in row.values()])
    yield buffer.getvalue()


@router.get(
    f"{ORG_AUDIT}/entries",
    response_model=EntryPage,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def search_entries(
    access: Auditor,
    session: SessionDep,
    recording_id: uuid.UUID | None = None,
    actor: str | None = Query(None, max_length=255, description="author's subject"),
    action: str | None = Query(None, max_length=48),
    since: Instant | None = None,
    until: Instant | None = None,
    limit: int = Query(100, ge=1, le=10_000),
    offset: Offset = 0,
    format: Literal["json", "csv"] = "json",
) -> Any:
    """The organisation's audit entries, oldest first; `format=csv` for a spreadsheet. With
    `recording_id`, a recording's whole history: collecte, consultations, extractions,
    erasure."""
    if since is not None and until is not None and until <= since:
        raise UnprocessableEntity("until must be after since", field="query.until")
    rows, total = await AuditRepository(session).search(
        organisation_id=access.organisation_id,
        recording_id=recording_id,
        actor=actor,
        action=action,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    items = [entry_out(row) for row in rows]
    if format == "csv":
        return StreamingResponse(
            _csv(items),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
        )
    return EntryPage(items=items, total=total, limit=limit, offset=offset)


@router.get(f"{ORG_AUDIT}/entries/{{entry_id}}/proof", response_model=InclusionProof)
async def inclusion_proof(
    entry_id: uuid.UUID,
    access: Auditor,
    log: Log,
    tree_size: Annotated[
        TreeSize | None, Query(description="a signed head; default the latest")
    ] = None,
) -> InclusionProof:
    """Proof that the entry is in the log under a signed tree head (RFC 9162 2.1.3)."""
    leaf, head, path = await log.inclusion_proof(entry_id, tree_size)
    if leaf["organisation_id"] != access.organisation_id:
        raise NotFound("no sequenced entry with that id")
    return proof_out(leaf, head, path)


@router.get("/audit/heads", response_model=list[TreeHeadOut])
async def list_heads(
    principal: Witness,
    log: Log,
    after_size: Annotated[int, Query(ge=-1, le=INT64_MAX)] = -1,
    limit: int = Query(100, ge=1, le=1000),
) -> list[TreeHeadOut]:
    """Signed tree heads, smallest first: export them and keep them as a witness."""
    rows = await log.repository.heads(after_size=after_size, limit=limit)
    return [head_out(TreeHead.from_row(row)) for row in rows]


@router.post("/audit/heads", response_model=TreeHeadOut)
async def sign_head_now(principal: Signer, log: Log) -> TreeHeadOut:
    """Sequence what is pending and sign the tree now (it is also done on a schedule)."""
    await log.sequence_all()
    return head_out(await log.sign_head())


@router.get("/audit/consistency", response_model=ConsistencyProof, responses=problems(404))
async def consistency_proof(
    principal: Witness,
    log: Log,
    first: TreeSize,
    second: TreeSize,
) -> ConsistencyProof:
    """Proof that the tree at `second` extends the tree at `first` (RFC 9162 2.1.4)."""
    if second < first:
        raise UnprocessableEntity("second must be at least first", field="query.second")
    old, new, proof = await log.consistency_proof(first, second)
    return ConsistencyProof(
        first=head_out(old), second=head_out(new), proof=[h.hex() for h in proof]
    )


@router.get("/audit/public-key", response_model=PublicKey)
async def public_key(request: Request) -> PublicKey:
    """The key that signs tree heads (public: witnesses check heads with it)."""
    settings: VaultSettings = request.app.state.settings
    key = public_key_of(settings.audit_key())
    return PublicKey(public_key=key, key_id=key_id(key))
