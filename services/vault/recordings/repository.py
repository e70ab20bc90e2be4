from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.directory.models import Agent, CameraAssignment, Organisation, Station
from services.vault.recordings.models import Consultation, Recording
from shared.access import PersonRecord, people_view


@dataclass(frozen=True)
class Consulted:
    """A consultation and its recording, with what decides whether its viewer may still view:
    the person as the directory has them now, and the service's wearer access."""

    recording: Recording
    consultation: Consultation
    person: PersonRecord | None
    wearer_access: bool


# Built once rather than per request: a player sends a request per seek, and building the
# statement cost about as much as running it.
_CONSULTED = (
    select(
        Recording,
        Consultation,
        Organisation.wearer_access,
        people_view.c.agent_id,
        people_view.c.active,
        people_view.c.roles,
        people_view.c.habilitation_active,
    )
    .join(Consultation, Consultation.recording_id == Recording.id)
    .join(Organisation, Organisation.id == Recording.organisation_id)
    .outerjoin(
        people_view,
        and_(
            people_view.c.organisation_id == Consultation.organisation_id,
            people_view.c.subject == Consultation.subject,
        ),
    )
    .where(
        Consultation.id == bindparam("consultation_id"),
        Consultation.subject == bindparam("subject"),
        Recording.id == bindparam("recording_id"),
    )
)


class RecordingRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def station(self, station_id: uuid.UUID) -> Station | None:
        return await self.session.get(Station, station_id)

    async def organisation(self, organisation_id: uuid.UUID) -> Organisation | None:
        return await self.session.get(Organisation, organisation_id)

    async def wearer_at(self, camera_id: uuid.UUID, moment: datetime) -> Agent | None:
        """The agent the camera was assigned to at ``moment``."""
        statement = (
            select(Agent)
            .join(CameraAssignment, CameraAssignment.agent_id == Agent.id)
            .where(
                CameraAssignment.camera_id == camera_id,
                CameraAssignment.starts_at <= moment,
                or_(CameraAssignment.ends_at.is_(None), CameraAssignment.ends_at > moment),
            )
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def consulted(
        self, consultation_id: uuid.UUID, subject: str, recording_id: uuid.UUID
    ) -> Consulted | None:
        """That person's consultation of the recording, in one round trip."""
        params = {"consultation_id": consultation_id, "subject": subject,
                  "recording_id": recording_id}  # fmt: skip
        row = (await self.session.execute(_CONSULTED, params)).one_or_none()
        if row is None:
            return None
        recording, consultation, wearer_access, agent_id, active, roles, habilitation = row
        person = None
        if agent_id is not None:
            person = PersonRecord(agent_id, bool(active), frozenset(roles), bool(habilitation))
        return Consulted(recording, consultation, person, bool(wearer_access))

    async def issued_receipt(self, recording_id: uuid.UUID) -> dict[str, Any] | None:
        """The receipt ingest signed for the recording, as ingest keeps it (the view of
        migration 0006 lets the vault read it); None when none is on file."""
        receipt: dict[str, Any] | None = await self.session.scalar(
            text("SELECT receipt FROM ingest.issued_receipts WHERE recording_id = :id"),
            {"id": recording_id},
        )
        return receipt

    async def by_content(self, camera_id: uuid.UUID, sha256: str) -> Recording | None:
        statement = select(Recording).where(
            Recording.camera_id == camera_id, Recording.sha256 == sha256
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def lock_content(self, camera_id: uuid.UUID, sha256: str) -> None:
        """Serialise uploads of the same clip (released at the end of the transaction)."""
        key = func.hashtextextended(f"{camera_id}:{sha256}", 0)
        await self.session.execute(select(func.pg_advisory_xact_lock(key)))
