"""Procedures API: open one, attach recordings to it (legal hold), close it, and extract a
recording for it as a signed BagIt package (R241-12, R241-13, R241-14)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status
from fastapi.responses import StreamingResponse

from services.vault.directory.schemas import Page
from services.vault.procedures import schemas
from services.vault.procedures.extraction import ExtractionService, stream_package
from services.vault.procedures.models import Procedure
from services.vault.procedures.service import ProcedureService
from services.vault.settings import VaultSettings
from shared.access import OrgAccess, organisation_access
from shared.auth import Role
from shared.inputs import Offset
from shared.openapi import body, problems
from shared.web import SessionDep, StoreDep

router = APIRouter(prefix="/v1", tags=["procedures"])

# Those who may see recordings (R241-12) qualify them for a procedure and extract them; the
# DPO reads the procedures.
ACTORS = (Role.maire, Role.responsable, Role.habilite)
Act = Annotated[OrgAccess, Depends(organisation_access(*ACTORS))]
Read = Annotated[OrgAccess, Depends(organisation_access(*ACTORS, Role.dpo))]
PROCEDURES = "/organisations/{org_id}/procedures"


async def _settings(request: Request) -> VaultSettings:
    settings: VaultSettings = request.app.state.settings
    return settings


Settings = Annotated[VaultSettings, Depends(_settings)]


async def _out(service: ProcedureService, procedure: Procedure) -> schemas.ProcedureOut:
    out = schemas.ProcedureOut.model_validate(procedure)
    out.recording_ids = await service.recording_ids(procedure.id)
    return out


@router.post(
    PROCEDURES,
    response_model=schemas.ProcedureOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems(409),
)
async def open_procedure(
    data: schemas.ProcedureIn, access: Act, session: SessionDep, store: StoreDep, settings: Settings
) -> schemas.ProcedureOut:
    service = ProcedureService(session, store, access, settings)
    return await _out(service, await service.open(data))


@router.get(PROCEDURES, response_model=Page[schemas.ProcedureOut])
async def list_procedures(
    access: Read,
    session: SessionDep,
    store: StoreDep,
    settings: Settings,
    open_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Offset = 0,
) -> Page[schemas.ProcedureOut]:
    service = ProcedureService(session, store, access, settings)
    items, total = await service.search(open_only=open_only, limit=limit, offset=offset)
    # One query for the whole page's recordings, not one per procedure.
    held = await service.recording_ids_of([p.id for p in items])
    out = []
    for procedure in items:
        one = schemas.ProcedureOut.model_validate(procedure)
        one.recording_ids = held[procedure.id]
        out.append(one)
    return Page(items=out, total=total, limit=limit, offset=offset)


@router.get(f"{PROCEDURES}/{{procedure_id}}", response_model=schemas.ProcedureOut)
async def get_procedure(
    procedure_id: uuid.UUID, access: Read, session: SessionDep, store: StoreDep, settings: Settings
) -> schemas.ProcedureOut:
    service = ProcedureService(session, store, access, settings)
    return await _out(service, await service.procedure(procedure_id))


@router.post(
    f"{PROCEDURES}/{{procedure_id}}/recordings",
    response_model=schemas.ProcedureOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems(409, 410),
)
async def attach_recording(
    procedure_id: uuid.UUID,
    data: schemas.AttachIn,
    access: Act,
    session: SessionDep,
    store: StoreDep,
    settings: Settings,
) -> schemas.ProcedureOut:
    """Qualify a recording for the procedure: held (S3 legal hold, no erasure) while open."""
    service = ProcedureService(session, store, access, settings)
    return await _out(service, await service.attach(procedure_id, data))


@router.post(
    f"{PROCEDURES}/{{procedure_id}}/recordings/{{recording_id}}/detach",
    response_model=schemas.ProcedureOut,
    responses=problems(409),
)
async def detach_recording(
    procedure_id: uuid.UUID,
    recording_id: uuid.UUID,
    data: schemas.DetachIn,
    access: Act,
    session: SessionDep,
    store: StoreDep,
    settings: Settings,
) -> schemas.ProcedureOut:
    """Detach a recording, with its motif (logged): its hold is lifted unless another open
    procedure holds it, and it follows its retention again (past it, the next erasure run
    erases it). 404 when it is not attached, 409 when the procedure is closed."""
    service = ProcedureService(session, store, access, settings)
    return await _out(service, await service.detach(procedure_id, recording_id, data))


@router.post(
    f"{PROCEDURES}/{{procedure_id}}/close",
    response_model=schemas.ProcedureOut,
    responses=problems(409),
)
async def close_procedure(
    procedure_id: uuid.UUID, access: Act, session: SessionDep, store: StoreDep, settings: Settings
) -> schemas.ProcedureOut:
    """Close it: recordings no other open procedure holds follow their retention again."""
    service = ProcedureService(session, store, access, settings)
    return await _out(service, await service.close(procedure_id))


@router.post(
    f"{PROCEDURES}/{{procedure_id}}/extractions",
    response_class=StreamingResponse,
    responses={200: body("application/zip", description="the BagIt package"), **problems(409, 410)},
)
async def extract(
    procedure_id: uuid.UUID,
    data: schemas.ExtractionIn,
    access: Act,
    session: SessionDep,
    store: StoreDep,
    settings: Settings,
) -> StreamingResponse:
    """A signed BagIt package (zip) of the recording, streamed (docs/extraction.md). The
    extraction, with its motif and destinataires, is logged before the first byte."""
    package = await ExtractionService(session, store, settings, access).prepare(procedure_id, data)
    return StreamingResponse(
        stream_package(package),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{package.name}.zip"',
            "Cache-Control": "private, no-store",
        },
    )
