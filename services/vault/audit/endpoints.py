"""The audit trail for the DPO and the responsable (R241-14), and its proofs for anyone who
keeps signed tree heads as a witness."""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import Field
from sqlalchemy import RowMapping, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.vault.audit.repository import AuditRepository, EntrySelection
from services.vault.audit.schemas import (
    CSV_COLUMNS,
    ConsistencyProof,
    CosignatureIn,
    CosignatureOut,
    EntryPage,
    InclusionProof,
    PublicKey,
    TreeHeadOut,
    WitnessOut,
    WitnessStatus,
    entry_out,
    head_out,
    proof_out,
)
from services.vault.audit.service import AuditLog, LogKeys, TreeHead
from shared.access import OrgAccess, organisation_access, require
from shared.auth import Principal, Role
from shared.db import utc_now
from shared.errors import NotFound, UnprocessableEntity
from shared.inputs import INT64_MAX, Instant, Offset
from shared.openapi import body, problems
from shared.signatures import key_id
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
    keys: LogKeys = request.app.state.audit_keys
    return AuditLog(session, keys)


Log = Annotated[AuditLog, Depends(_signing_log)]


CSV_BATCH = 500  # entries read per query while exporting: what the export holds in memory


def _csv_line(row: RowMapping, buffer: io.StringIO, writer: Any) -> None:
    item = entry_out(row).model_dump(mode="json")
    writer.writerow(
        [
            ";".join(map(str, value))
            if isinstance(value, list)
            else json.dumps(value, sort_keys=True, ensure_ascii=False)
            if isinstance(value, dict)
            else value
            for value in item.values()
        ]
    )


async def _csv(
    sessionmaker: async_sessionmaker[AsyncSession], selection: EntrySelection
) -> AsyncIterator[str]:
    """The whole selection as CSV, read batch by batch after the previous batch's last entry.

    The request's session is closed once the handler returns, so the export reads through a
    session of its own, in one REPEATABLE READ snapshot: entries written while it runs neither
    appear half-way nor shift a batch."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    async with sessionmaker() as session:
        await session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY"))
        repository = AuditRepository(session)
        after: tuple[datetime, int] | None = None
        while True:
            rows = await repository.search_after(selection, after, CSV_BATCH)
            for row in rows:
                _csv_line(row, buffer, writer)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            if len(rows) < CSV_BATCH:
                break
            after = (rows[-1]["occurred_at"], rows[-1]["id"])


@router.get(
    f"{ORG_AUDIT}/entries",
    response_model=EntryPage,
    responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
)
async def search_entries(
    request: Request,
    access: Auditor,
    session: SessionDep,
    recording_id: uuid.UUID | None = None,
    actor: str | None = Query(None, max_length=255, description="author's subject"),
    action: str | None = Query(None, max_length=48),
    since: Instant | None = None,
    until: Instant | None = None,
    limit: int = Query(100, ge=1, le=10_000, description="page size (JSON only)"),
    offset: Offset = 0,
    format: Literal["json", "csv"] = "json",
) -> Any:
    """The organisation's audit entries, oldest first; `format=csv` for a spreadsheet of the
    whole selection (streamed; `limit` and `offset` page the JSON answer only). With
    `recording_id`, a recording's whole history: collecte, consultations, extractions,
    erasure."""
    if since is not None and until is not None and until <= since:
        raise UnprocessableEntity("until must be after since", field="query.until")
    selection = EntrySelection(
        organisation_id=access.organisation_id,
        recording_id=recording_id,
        actor=actor,
        action=action,
        since=since,
        until=until,
    )
    if format == "csv":
        return StreamingResponse(
            _csv(request.state.sessionmaker, selection),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="audit.csv"'},
        )
    rows, total = await AuditRepository(session).search(selection, limit=limit, offset=offset)
    return EntryPage(
        items=[entry_out(row) for row in rows], total=total, limit=limit, offset=offset
    )


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


@router.post("/audit/heads", response_model=TreeHeadOut, responses=problems(409))
async def sign_head_now(principal: Signer, log: Log) -> TreeHeadOut:
    """Sequence what is pending and sign the tree now (it is also done on a schedule). 409:
    the log no longer extends the last head signed (tampered with); nothing is signed."""
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
    """The key that signs tree heads (public: witnesses check checkpoints with it)."""
    keys: LogKeys = request.app.state.audit_keys
    return PublicKey(
        public_key=keys.public_key,
        key_id=key_id(keys.public_key),
        origin=keys.origin,
        verifier_key=str(keys.log_key),
    )


@router.get(
    "/audit/checkpoint",
    response_class=Response,
    responses={
        200: body("text/plain", description="a C2SP checkpoint (signed note)"),
        **problems(404),
    },
)
async def checkpoint(
    principal: Witness,
    log: Log,
    tree_size: Annotated[
        int | None, Query(ge=0, le=INT64_MAX, description="default: the latest head")
    ] = None,
) -> Response:
    """The log's signed checkpoint (C2SP tlog-checkpoint), with the latest cosignature of
    each witness who cosigned it: what `temoin witness cosign` checks and cosigns."""
    note = await log.checkpoint(tree_size)
    return Response(note, media_type="text/plain; charset=utf-8")


@router.post(
    "/audit/cosignatures",
    response_model=CosignatureOut,
    status_code=201,
    responses=problems(404),
)
async def add_cosignature(principal: Witness, log: Log, cosigned: CosignatureIn) -> CosignatureOut:
    """A witness's cosignature of a checkpoint (C2SP tlog-cosignature, cosignature/v1): kept
    when it comes from a witness of VAULT_AUDIT_WITNESSES and verifies, else 422."""
    witness, timestamp = await log.add_cosignature(cosigned.tree_size, cosigned.cosignature)
    return CosignatureOut(
        witness=witness.name,
        tree_size=cosigned.tree_size,
        cosigned_at=datetime.fromtimestamp(timestamp, UTC),
    )


@router.get("/audit/witnesses", response_model=WitnessStatus)
async def witnesses(principal: Witness, log: Log) -> WitnessStatus:
    """How fresh the log's witnessing is: each witness's latest cosigned tree and its age
    (also the Prometheus gauge temoin_audit_cosigned_timestamp_seconds)."""
    latest = await log.repository.latest_head()
    now = utc_now()
    items = []
    for status in await log.witnesses():
        row = status["row"]
        items.append(
            WitnessOut(
                name=status["key"].name,
                verifier_key=str(status["key"]),
                tree_size=None if row is None else row["tree_size"],
                cosigned_at=None if row is None else row["cosigned_at"],
                age_s=None if row is None else (now - row["cosigned_at"]).total_seconds(),
            )
        )
    return WitnessStatus(
        latest_head=None if latest is None else latest["tree_size"], witnesses=items
    )
