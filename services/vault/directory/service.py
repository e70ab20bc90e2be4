"""The directory's rules. Every change is appended to the audit trail in the same transaction."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.directory import schemas
from services.vault.directory.models import (
    Agent,
    Camera,
    CameraAssignment,
    CameraStatus,
    Commune,
    Habilitation,
    Organisation,
    Station,
    StationStatus,
)
from services.vault.directory.repository import DirectoryRepository
from shared import audit
from shared.access import OrgAccess
from shared.audit import AuditAction, AuditEntry
from shared.db import flush_or_conflict, utc_now
from shared.errors import Conflict, NotFound, UnprocessableEntity

SERVICE = "vault"


class DirectoryService:
    def __init__(self, session: AsyncSession, access: OrgAccess) -> None:
        self.session = session
        self.access = access
        self.org_id = access.organisation_id
        self.repository = DirectoryRepository(session)

    async def _log(self, action: AuditAction, **details: Any) -> None:
        await audit.append(
            self.session,
            AuditEntry(
                action=action,
                service=SERVICE,
                actor_subject=self.access.subject,
                actor_role=self.access.role.value,
                organisation_id=self.org_id,
                details=details,
            ),
        )

    # --- organisation -------------------------------------------------------------------

    async def organisation(self) -> Organisation:
        organisation = await self.repository.organisation(self.org_id)
        if organisation is None:
            raise NotFound("organisation not found")
        return organisation

    async def save_organisation(self, data: schemas.OrganisationIn) -> tuple[Organisation, bool]:
        """Create the caller's organisation, or update it. Returns it and whether it is new."""
        codes = [commune.insee_code for commune in data.communes]
        if len(set(codes)) != len(codes):
            raise UnprocessableEntity("a commune is listed twice", field="body.communes")
        taken = await self.repository.communes_of_others(self.org_id, codes)
        if taken:
            raise Conflict(f"communes already served by another organisation: {', '.join(taken)}")
        organisation = await self.repository.organisation(self.org_id)
        created = organisation is None
        if organisation is None:
            organisation = Organisation(id=self.org_id, communes=[])
            self.session.add(organisation)
        before = _organisation_fields(organisation) if not created else {}
        organisation.name = data.name
        organisation.departement = data.departement
        organisation.retention_days = data.retention_days
        organisation.wearer_access = data.wearer_access
        organisation.authorised_cameras = data.authorised_cameras
        organisation.communes = [
            Commune(insee_code=c.insee_code, name=c.name, organisation_id=self.org_id)
            for c in data.communes
        ]
        await flush_or_conflict(self.session, "a commune is already served by another organisation")
        after = _organisation_fields(organisation)
        await self._log(
            AuditAction.directory_change,
            entity="organisation",
            id=str(self.org_id),
            change="created" if created else "updated",
            fields={k: v for k, v in after.items() if before.get(k) != v},
        )
        return organisation, created

    # --- agents -------------------------------------------------------------------------

    async def agent(self, agent_id: uuid.UUID) -> Agent:
        agent = await self.repository.get(Agent, self.org_id, agent_id)
        if agent is None:
            raise NotFound("agent not found")
        return agent

    async def create_agent(self, data: schemas.AgentIn) -> Agent:
        await self.organisation()
        if await self.repository.agent_by_matricule(self.org_id, data.matricule):
            raise Conflict(f"matricule {data.matricule} already exists")
        if data.subject and await self.repository.agent_by_subject(self.org_id, data.subject):
            raise Conflict("another agent already has this identity-provider subject")
        agent = Agent(
            id=uuid.uuid4(),
            organisation_id=self.org_id,
            matricule=data.matricule,
            first_name=data.first_name,
            last_name=data.last_name,
            subject=data.subject,
            roles=sorted(set(data.roles)),
            active=True,
            created_at=utc_now(),
        )
        self.session.add(agent)
        await flush_or_conflict(self.session, "matricule or subject already in use")
        await self._log(
            AuditAction.directory_change,
            entity="agent",
            id=str(agent.id),
            change="created",
            fields={"matricule": agent.matricule, "roles": agent.roles, "subject": agent.subject},
        )
        return agent

    async def update_agent(self, agent_id: uuid.UUID, data: schemas.AgentPatch) -> Agent:
        agent = await self.agent(agent_id)
        changes = data.model_dump(exclude_unset=True)
        if changes.get("subject") and changes["subject"] != agent.subject:
            other = await self.repository.agent_by_subject(self.org_id, changes["subject"])
            if other is not None:
                raise Conflict("another agent already has this identity-provider subject")
        if "roles" in changes and changes["roles"] is not None:
            changes["roles"] = sorted(set(changes["roles"]))
        for name, value in changes.items():
            if value is None and name != "subject":
                raise UnprocessableEntity(f"{name} cannot be null", field=f"body.{name}")
            setattr(agent, name, value)
        await flush_or_conflict(self.session, "subject already in use")
        await self._log(
            AuditAction.directory_change,
            entity="agent",
            id=str(agent.id),
            change="updated",
            fields=changes,
        )
        return agent

    # --- habilitations (R241-12) --------------------------------------------------------

    async def grant_habilitation(
        self, agent_id: uuid.UUID, data: schemas.HabilitationIn
    ) -> Habilitation:
        agent = await self.agent(agent_id)
        if not agent.active:
            raise Conflict("an inactive agent cannot be habilité")
        if await self.repository.active_habilitation(agent.id):
            raise Conflict("this agent already has an active habilitation")
        habilitation = Habilitation(
            id=uuid.uuid4(),
            organisation_id=self.org_id,
            agent_id=agent.id,
            granted_by=self.access.subject,
            granted_at=utc_now(),
            note=data.note,
        )
        self.session.add(habilitation)
        await flush_or_conflict(self.session, "this agent already has an active habilitation")
        await self._log(
            AuditAction.habilitation_granted,
            habilitation_id=str(habilitation.id),
            agent_id=str(agent.id),
            matricule=agent.matricule,
            granted_at=habilitation.granted_at.isoformat(),
        )
        return habilitation

    async def withdraw_habilitation(
        self, habilitation_id: uuid.UUID, data: schemas.Withdrawal
    ) -> Habilitation:
        habilitation = await self.repository.get(Habilitation, self.org_id, habilitation_id)
        if habilitation is None:
            raise NotFound("habilitation not found")
        if habilitation.withdrawn_at is not None:
            raise Conflict("this habilitation is already withdrawn")
        habilitation.withdrawn_at = utc_now()
        habilitation.withdrawn_by = self.access.subject
        habilitation.withdrawal_reason = data.reason
        await self.session.flush()
        await self._log(
            AuditAction.habilitation_withdrawn,
            habilitation_id=str(habilitation.id),
            agent_id=str(habilitation.agent_id),
            reason=data.reason,
            withdrawn_at=habilitation.withdrawn_at.isoformat(),
        )
        return habilitation

    # --- cameras ------------------------------------------------------------------------

    async def camera(self, camera_id: uuid.UUID) -> Camera:
        camera = await self.repository.get(Camera, self.org_id, camera_id)
        if camera is None:
            raise NotFound("camera not found")
        return camera

    async def _check_authorised_cameras(self) -> None:
        # R241-8: the préfet's authorisation fixes how many cameras the service may use.
        organisation = await self.organisation()
        if organisation.authorised_cameras is None:
            return
        in_service = (
            await self.session.execute(
                select(func.count())
                .select_from(Camera)
                .where(
                    Camera.organisation_id == self.org_id,
                    Camera.status == CameraStatus.active.value,
                )
            )
        ).scalar_one()
        if in_service >= organisation.authorised_cameras:
            raise Conflict(
                f"the préfet's authorisation allows {organisation.authorised_cameras} cameras "
                "in service; retire one first"
            )

    async def create_camera(self, data: schemas.CameraIn) -> Camera:
        await self._check_authorised_cameras()
        if await self.repository.camera_by_serial(self.org_id, data.serial):
            raise Conflict(f"camera {data.serial} already exists")
        camera = Camera(
            id=uuid.uuid4(),
            organisation_id=self.org_id,
            serial=data.serial,
            model=data.model,
            status=CameraStatus.active.value,
            created_at=utc_now(),
        )
        self.session.add(camera)
        await flush_or_conflict(self.session, f"camera {data.serial} already exists")
        await self._log(
            AuditAction.directory_change,
            entity="camera",
            id=str(camera.id),
            change="created",
            fields={"serial": camera.serial, "model": camera.model},
        )
        return camera

    async def update_camera(self, camera_id: uuid.UUID, data: schemas.CameraPatch) -> Camera:
        camera = await self.camera(camera_id)
        changes = data.model_dump(exclude_unset=True, mode="json")
        if changes.get("status") == CameraStatus.active.value != camera.status:
            await self._check_authorised_cameras()
        for name, value in changes.items():
            if value is None:
                raise UnprocessableEntity(f"{name} cannot be null", field=f"body.{name}")
            setattr(camera, name, value)
        await self.session.flush()
        await self._log(
            AuditAction.directory_change,
            entity="camera",
            id=str(camera.id),
            change="updated",
            fields=changes,
        )
        return camera

    # --- camera assignments (R241-10: the wearer of every recording) --------------------

    async def assign_camera(
        self, camera_id: uuid.UUID, data: schemas.AssignmentIn
    ) -> CameraAssignment:
        camera = await self.camera(camera_id)
        agent = await self.repository.get(Agent, self.org_id, data.agent_id)
        if agent is None:
            raise UnprocessableEntity("no such agent in this organisation", field="body.agent_id")
        if not agent.active:
            raise UnprocessableEntity("this agent is inactive", field="body.agent_id")
        if camera.status != CameraStatus.active.value:
            raise Conflict(f"camera {camera.serial} is {camera.status}")
        if data.ends_at is not None and data.ends_at <= data.starts_at:
            raise UnprocessableEntity("ends_at must be after starts_at", field="body.ends_at")
        if await self.repository.overlapping_assignment(camera.id, data.starts_at, data.ends_at):
            raise Conflict("the camera is already assigned over part of this period")
        assignment = CameraAssignment(
            id=uuid.uuid4(),
            organisation_id=self.org_id,
            camera_id=camera.id,
            agent_id=agent.id,
            starts_at=data.starts_at,
            ends_at=data.ends_at,
            assigned_by=self.access.subject,
        )
        self.session.add(assignment)
        await flush_or_conflict(
            self.session, "the camera is already assigned over part of this period"
        )
        await self._log(
            AuditAction.directory_change,
            entity="camera_assignment",
            id=str(assignment.id),
            change="created",
            fields={
                "camera": camera.serial,
                "agent": agent.matricule,
                "starts_at": data.starts_at.isoformat(),
                "ends_at": data.ends_at.isoformat() if data.ends_at else None,
            },
        )
        return assignment

    async def end_assignment(
        self, assignment_id: uuid.UUID, data: schemas.AssignmentEnd
    ) -> CameraAssignment:
        assignment = await self.repository.get(CameraAssignment, self.org_id, assignment_id)
        if assignment is None:
            raise NotFound("assignment not found")
        if assignment.ends_at is not None:
            raise Conflict("this assignment has already ended")
        if data.ends_at <= assignment.starts_at:
            raise UnprocessableEntity("ends_at must be after starts_at", field="body.ends_at")
        assignment.ends_at = data.ends_at
        await flush_or_conflict(self.session, "the new end overlaps a later assignment")
        await self._log(
            AuditAction.directory_change,
            entity="camera_assignment",
            id=str(assignment.id),
            change="ended",
            fields={"ends_at": data.ends_at.isoformat()},
        )
        return assignment

    # --- docking stations ---------------------------------------------------------------

    async def station(self, station_id: uuid.UUID) -> Station:
        station = await self.repository.get(Station, self.org_id, station_id)
        if station is None:
            raise NotFound("station not found")
        return station

    async def register_station(self, data: schemas.StationIn) -> Station:
        await self.organisation()
        if await self.repository.station_by_key(data.public_key):
            raise Conflict("this public key is already registered")
        station = Station(
            id=uuid.uuid4(),
            organisation_id=self.org_id,
            name=data.name,
            public_key=data.public_key,
            status=StationStatus.active.value,
            registered_by=self.access.subject,
            created_at=utc_now(),
        )
        self.session.add(station)
        await flush_or_conflict(self.session, "this public key is already registered")
        await self._log(
            AuditAction.station_registered,
            station_id=str(station.id),
            name=station.name,
            public_key=station.public_key,
        )
        return station

    async def revoke_station(self, station_id: uuid.UUID, data: schemas.Withdrawal) -> Station:
        station = await self.station(station_id)
        if station.status == StationStatus.revoked.value:
            raise Conflict("this station is already revoked")
        station.status = StationStatus.revoked.value
        station.revoked_at = utc_now()
        station.revoked_by = self.access.subject
        station.revocation_reason = data.reason
        await self.session.flush()
        await self._log(AuditAction.station_revoked, station_id=str(station.id), reason=data.reason)
        return station


def _organisation_fields(organisation: Organisation) -> dict[str, Any]:
    return {
        "name": organisation.name,
        "departement": organisation.departement,
        "retention_days": organisation.retention_days,
        "wearer_access": organisation.wearer_access,
        "authorised_cameras": organisation.authorised_cameras,
        "communes": sorted(c.insee_code for c in organisation.communes),
    }
