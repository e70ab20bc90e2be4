"""Administration API of the directory, for the maire and the responsable (read access for
the DPO and, where useful to find recordings, habilité agents)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from services.vault.directory import schemas
from services.vault.directory.models import (
    Agent,
    Camera,
    CameraAssignment,
    Habilitation,
    Station,
)
from services.vault.directory.repository import DirectoryRepository
from services.vault.directory.service import DirectoryService
from shared.access import OrgAccess, PrincipalDep, organisation_access
from shared.auth import Role
from shared.inputs import Instant, Offset
from shared.openapi import problems
from shared.web import SessionDep

router = APIRouter(prefix="/v1", tags=["directory"])

MANAGERS = (Role.maire, Role.responsable)
READERS = (Role.maire, Role.responsable, Role.dpo)
FINDERS = (*READERS, Role.habilite)  # those who search recordings need agents and cameras

Manage = Annotated[OrgAccess, Depends(organisation_access(*MANAGERS))]
Read = Annotated[OrgAccess, Depends(organisation_access(*READERS))]
Find = Annotated[OrgAccess, Depends(organisation_access(*FINDERS))]
Member = Annotated[OrgAccess, Depends(organisation_access(*FINDERS, Role.agent))]
# R241-12: habilitations are granted and withdrawn by the responsable du service.
Designate = Annotated[OrgAccess, Depends(organisation_access(Role.responsable))]
Limit = Annotated[int, Query(ge=1, le=500)]

ORG = "/organisations/{org_id}"


@router.get("/me", response_model=schemas.Me, tags=["auth"])
async def me(principal: PrincipalDep) -> schemas.Me:
    """The caller as Témoin sees them: the roles in force after the directory's checks."""
    return schemas.Me(
        subject=principal.subject,
        organisation_id=principal.organisation_id,
        departement=principal.departement,
        agent_id=principal.agent_id,
        roles=sorted(role.value for role in principal.roles),
        withheld={role.value: reason for role, reason in sorted(principal.withheld.items())},
    )


@router.put(
    ORG,
    response_model=schemas.OrganisationOut,
    responses={
        201: {"model": schemas.OrganisationOut, "description": "created"},
        **problems(409),
    },
)
async def save_organisation(
    data: schemas.OrganisationIn, access: Manage, session: SessionDep, response: Response
) -> schemas.OrganisationOut:
    """Create the caller's organisation (first call, by the maire) or update it."""
    organisation, created = await DirectoryService(session, access).save_organisation(data)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return schemas.OrganisationOut.model_validate(organisation)


@router.get(ORG, response_model=schemas.OrganisationOut)
async def get_organisation(access: Member, session: SessionDep) -> schemas.OrganisationOut:
    organisation = await DirectoryService(session, access).organisation()
    return schemas.OrganisationOut.model_validate(organisation)


# --- agents ---------------------------------------------------------------------------------


@router.get(f"{ORG}/agents", response_model=schemas.Page[schemas.AgentOut])
async def list_agents(
    access: Find, session: SessionDep, limit: Limit = 100, offset: Offset = 0
) -> schemas.Page[schemas.AgentOut]:
    items, total = await DirectoryRepository(session).page(
        Agent, access.organisation_id, limit=limit, offset=offset, order_by=[Agent.matricule]
    )
    return schemas.Page.of(schemas.AgentOut, items, total, limit, offset)


@router.post(
    f"{ORG}/agents",
    response_model=schemas.AgentOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems(409),
)
async def create_agent(
    data: schemas.AgentIn, access: Manage, session: SessionDep
) -> schemas.AgentOut:
    agent = await DirectoryService(session, access).create_agent(data)
    return schemas.AgentOut.model_validate(agent)


@router.get(f"{ORG}/agents/{{agent_id}}", response_model=schemas.AgentOut)
async def get_agent(agent_id: uuid.UUID, access: Find, session: SessionDep) -> schemas.AgentOut:
    return schemas.AgentOut.model_validate(await DirectoryService(session, access).agent(agent_id))


@router.patch(
    f"{ORG}/agents/{{agent_id}}", response_model=schemas.AgentOut, responses=problems(409)
)
async def update_agent(
    agent_id: uuid.UUID, data: schemas.AgentPatch, access: Manage, session: SessionDep
) -> schemas.AgentOut:
    agent = await DirectoryService(session, access).update_agent(agent_id, data)
    return schemas.AgentOut.model_validate(agent)


# --- habilitations --------------------------------------------------------------------------


def _habilitation_out(habilitation: Habilitation) -> schemas.HabilitationOut:
    return schemas.HabilitationOut.model_validate(
        {
            **{c: getattr(habilitation, c) for c in schemas.HabilitationOut.model_fields
               if c != "active"},
            "active": habilitation.withdrawn_at is None,
        }
    )  # fmt: skip


@router.get(f"{ORG}/habilitations", response_model=schemas.Page[schemas.HabilitationOut])
async def list_habilitations(
    access: Read,
    session: SessionDep,
    agent_id: uuid.UUID | None = None,
    active: bool | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> schemas.Page[schemas.HabilitationOut]:
    filters = []
    if agent_id is not None:
        filters.append(Habilitation.agent_id == agent_id)
    if active is not None:
        filters.append(
            Habilitation.withdrawn_at.is_(None)
            if active
            else Habilitation.withdrawn_at.is_not(None)
        )
    items, total = await DirectoryRepository(session).page(
        Habilitation,
        access.organisation_id,
        limit=limit,
        offset=offset,
        filters=filters,
        order_by=[Habilitation.granted_at.desc()],
    )
    return schemas.Page(
        items=[_habilitation_out(h) for h in items], total=total, limit=limit, offset=offset
    )


@router.post(
    f"{ORG}/agents/{{agent_id}}/habilitations",
    response_model=schemas.HabilitationOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems(409),
)
async def grant_habilitation(
    agent_id: uuid.UUID, data: schemas.HabilitationIn, access: Designate, session: SessionDep
) -> schemas.HabilitationOut:
    """Designate and authorise an agent (R241-12): dated, signed by the responsable."""
    habilitation = await DirectoryService(session, access).grant_habilitation(agent_id, data)
    return _habilitation_out(habilitation)


@router.post(
    f"{ORG}/habilitations/{{habilitation_id}}/withdraw",
    response_model=schemas.HabilitationOut,
    responses=problems(409),
)
async def withdraw_habilitation(
    habilitation_id: uuid.UUID, data: schemas.Withdrawal, access: Designate, session: SessionDep
) -> schemas.HabilitationOut:
    habilitation = await DirectoryService(session, access).withdraw_habilitation(
        habilitation_id, data
    )
    return _habilitation_out(habilitation)


# --- cameras and assignments ----------------------------------------------------------------


@router.get(f"{ORG}/cameras", response_model=schemas.Page[schemas.CameraOut])
async def list_cameras(
    access: Find, session: SessionDep, limit: Limit = 100, offset: Offset = 0
) -> schemas.Page[schemas.CameraOut]:
    items, total = await DirectoryRepository(session).page(
        Camera, access.organisation_id, limit=limit, offset=offset, order_by=[Camera.serial]
    )
    return schemas.Page.of(schemas.CameraOut, items, total, limit, offset)


@router.post(
    f"{ORG}/cameras",
    response_model=schemas.CameraOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems(409),
)
async def create_camera(
    data: schemas.CameraIn, access: Manage, session: SessionDep
) -> schemas.CameraOut:
    camera = await DirectoryService(session, access).create_camera(data)
    return schemas.CameraOut.model_validate(camera)


@router.get(f"{ORG}/cameras/{{camera_id}}", response_model=schemas.CameraOut)
async def get_camera(camera_id: uuid.UUID, access: Find, session: SessionDep) -> schemas.CameraOut:
    camera = await DirectoryService(session, access).camera(camera_id)
    return schemas.CameraOut.model_validate(camera)


@router.patch(
    f"{ORG}/cameras/{{camera_id}}", response_model=schemas.CameraOut, responses=problems(409)
)
async def update_camera(
    camera_id: uuid.UUID, data: schemas.CameraPatch, access: Manage, session: SessionDep
) -> schemas.CameraOut:
    camera = await DirectoryService(session, access).update_camera(camera_id, data)
    return schemas.CameraOut.model_validate(camera)


@router.get(
    f"{ORG}/cameras/{{camera_id}}/assignments",
    response_model=schemas.Page[schemas.AssignmentOut],
)
async def list_assignments(
    camera_id: uuid.UUID,
    access: Find,
    session: SessionDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> schemas.Page[schemas.AssignmentOut]:
    await DirectoryService(session, access).camera(camera_id)
    items, total = await DirectoryRepository(session).page(
        CameraAssignment,
        access.organisation_id,
        limit=limit,
        offset=offset,
        filters=[CameraAssignment.camera_id == camera_id],
        order_by=[CameraAssignment.starts_at],
    )
    return schemas.Page.of(schemas.AssignmentOut, items, total, limit, offset)


@router.post(
    f"{ORG}/cameras/{{camera_id}}/assignments",
    response_model=schemas.AssignmentOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems(409),
)
async def assign_camera(
    camera_id: uuid.UUID, data: schemas.AssignmentIn, access: Manage, session: SessionDep
) -> schemas.AssignmentOut:
    """Record that an agent wears the camera from ``starts_at`` (until ``ends_at``)."""
    assignment = await DirectoryService(session, access).assign_camera(camera_id, data)
    return schemas.AssignmentOut.model_validate(assignment)


@router.post(
    f"{ORG}/assignments/{{assignment_id}}/end",
    response_model=schemas.AssignmentOut,
    responses=problems(409),
)
async def end_assignment(
    assignment_id: uuid.UUID, data: schemas.AssignmentEnd, access: Manage, session: SessionDep
) -> schemas.AssignmentOut:
    assignment = await DirectoryService(session, access).end_assignment(assignment_id, data)
    return schemas.AssignmentOut.model_validate(assignment)


# --- docking stations -----------------------------------------------------------------------


@router.get(f"{ORG}/stations", response_model=schemas.Page[schemas.StationOut])
async def list_stations(
    access: Read,
    session: SessionDep,
    limit: Limit = 100,
    offset: Offset = 0,
    silent_since: Annotated[
        Instant | None,
        Query(
            description="only the active stations that have uploaded nothing since this "
            "instant (those that never uploaded included): the ones to check on"
        ),
    ] = None,
) -> schemas.Page[schemas.StationOut]:
    """The docking stations by name, each with `last_upload_at`."""
    rows, total = await DirectoryRepository(session).stations(
        access.organisation_id, limit=limit, offset=offset, silent_since=silent_since
    )
    items = [_station_out(station, last) for station, last in rows]
    return schemas.Page[schemas.StationOut](items=items, total=total, limit=limit, offset=offset)


def _station_out(station: Station, last_upload_at: datetime | None) -> schemas.StationOut:
    return schemas.StationOut.model_validate(station).model_copy(
        update={"last_upload_at": last_upload_at}
    )


@router.post(
    f"{ORG}/stations",
    response_model=schemas.StationOut,
    status_code=status.HTTP_201_CREATED,
    responses=problems(409),
)
async def register_station(
    data: schemas.StationIn, access: Manage, session: SessionDep
) -> schemas.StationOut:
    """Register a docking station by its Ed25519 public key (`temoin station register`)."""
    station = await DirectoryService(session, access).register_station(data)
    return schemas.StationOut.model_validate(station)


@router.get(f"{ORG}/stations/{{station_id}}", response_model=schemas.StationOut)
async def get_station(
    station_id: uuid.UUID, access: Read, session: SessionDep
) -> schemas.StationOut:
    station = await DirectoryService(session, access).station(station_id)
    return _station_out(station, await DirectoryRepository(session).last_upload(station.id))


@router.post(
    f"{ORG}/stations/{{station_id}}/revoke",
    response_model=schemas.StationOut,
    responses=problems(409),
)
async def revoke_station(
    station_id: uuid.UUID, data: schemas.Withdrawal, access: Manage, session: SessionDep
) -> schemas.StationOut:
    """Revoke a station: its assertions and any token it holds are refused from now on."""
    station = await DirectoryService(session, access).revoke_station(station_id, data)
    return _station_out(station, await DirectoryRepository(session).last_upload(station.id))
