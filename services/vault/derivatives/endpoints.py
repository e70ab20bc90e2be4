"""Anonymised copies for training (R241-12): ask for one within a `formation` procedure, follow
its making, cancel it, view it (a logged consultation) and approve or reject it. Its
extraction is the procedure's (POST .../procedures/{id}/extractions with `derivative_id`)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, status

from services.vault.derivatives import schemas
from services.vault.derivatives.models import DerivativeStatus
from services.vault.derivatives.service import DerivativeService
from services.vault.directory.schemas import Page
from services.vault.recordings.schemas import ConsultationOut
from services.vault.settings import VaultSettings
from shared.access import OrgAccess, organisation_access
from shared.auth import Role
from shared.inputs import Offset
from shared.openapi import problems
from shared.web import SessionDep, StoreDep

router = APIRouter(prefix="/v1", tags=["derivatives"])

# R241-12: the responsable and the agents habilités ask for, view and review training
# copies; the maire and the DPO follow them.
ACTORS = (Role.responsable, Role.habilite)
Act = Annotated[OrgAccess, Depends(organisation_access(*ACTORS))]
Read = Annotated[OrgAccess, Depends(organisation_access(*ACTORS, Role.maire, Role.dpo))]
DERIVATIVES = "/organisations/{org_id}/derivatives"


async def _settings(request: Request) -> VaultSettings:
    settings: VaultSettings = request.app.state.settings
    return settings


Settings = Annotated[VaultSettings, Depends(_settings)]


@router.post(
    "/organisations/{org_id}/procedures/{procedure_id}/derivatives",
    response_model=schemas.AcceptedOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(409, 410),
)
async def request_derivative(
    procedure_id: uuid.UUID,
    data: schemas.DerivativeIn,
    access: Act,
    session: SessionDep,
    store: StoreDep,
    settings: Settings,
) -> schemas.AcceptedOut:
    """Ask for an anonymised copy of a recording attached to this open `formation`
    procedure (logged). The copy is made in the background: follow it with GET
    .../derivatives/{id}. 409 while another copy of the recording is being made."""
    derivative = await DerivativeService(session, store, settings, access).request(
        procedure_id, data
    )
    return schemas.AcceptedOut(id=derivative.id, status=DerivativeStatus(derivative.status))


@router.get(DERIVATIVES, response_model=Page[schemas.DerivativeOut])
async def list_derivatives(
    access: Read,
    session: SessionDep,
    store: StoreDep,
    settings: Settings,
    recording_id: uuid.UUID | None = None,
    procedure_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> Page[schemas.DerivativeOut]:
    """The organisation's anonymised copies, newest first."""
    items, total = await DerivativeService(session, store, settings, access).search(
        recording_id=recording_id, procedure_id=procedure_id, limit=limit, offset=offset
    )
    return Page.of(schemas.DerivativeOut, items, total, limit, offset)


@router.get(f"{DERIVATIVES}/{{derivative_id}}", response_model=schemas.DerivativeOut)
async def get_derivative(
    derivative_id: uuid.UUID, access: Read, session: SessionDep, store: StoreDep, settings: Settings
) -> schemas.DerivativeOut:
    """Its status (`en_attente`, `en_cours`, `a_verifier`, `approuve`, `rejete`, `echec` with
    its reason, `annule`, `efface`) and progress (frames done / total)."""
    derivative = await DerivativeService(session, store, settings, access).derivative(derivative_id)
    return schemas.DerivativeOut.model_validate(derivative)


@router.post(
    f"{DERIVATIVES}/{{derivative_id}}/cancel",
    response_model=schemas.DerivativeOut,
    responses=problems(409),
)
async def cancel_derivative(
    derivative_id: uuid.UUID, access: Act, session: SessionDep, store: StoreDep, settings: Settings
) -> schemas.DerivativeOut:
    """Stop a copy being made (a running job stops at its next heartbeat): nothing is kept."""
    derivative = await DerivativeService(session, store, settings, access).cancel(derivative_id)
    return schemas.DerivativeOut.model_validate(derivative)


@router.post(
    f"{DERIVATIVES}/{{derivative_id}}/consultations",
    response_model=ConsultationOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems(409, 410),
)
async def consult_derivative(
    derivative_id: uuid.UUID,
    data: schemas.DerivativeConsultationIn,
    request: Request,
    access: Act,
    session: SessionDep,
    store: StoreDep,
    settings: Settings,
) -> ConsultationOut:
    """View the copy: a consultation (logged with its motif, R241-14) and its media URL."""
    url, consultation = await DerivativeService(session, store, settings, access).consult(
        derivative_id, data
    )
    base = settings.public_url or str(request.base_url).rstrip("/")
    return ConsultationOut(
        id=consultation.id,
        recording_id=consultation.recording_id,
        url=url,
        media_url=base + url,
        expires_at=consultation.expires_at,
    )


@router.post(
    f"{DERIVATIVES}/{{derivative_id}}/review",
    response_model=schemas.DerivativeOut,
    responses=problems(409),
)
async def review_derivative(
    derivative_id: uuid.UUID,
    data: schemas.ReviewIn,
    access: Act,
    session: SessionDep,
    store: StoreDep,
    settings: Settings,
) -> schemas.DerivativeOut:
    """Approve or reject a copy « à vérifier », with a reason (logged), having viewed it
    (409 otherwise). Only an approved copy can be extracted for `formation`."""
    derivative = await DerivativeService(session, store, settings, access).review(
        derivative_id, data
    )
    return schemas.DerivativeOut.model_validate(derivative)
