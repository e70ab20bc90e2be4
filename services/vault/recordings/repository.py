from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import bindparam, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.directory.models import Agent, CameraAssignment, Organisation, Station
from services.vault.recordings.models import Consultation, Recording

# Built once rather than per request: a player sends a request per seek, and building the
# statement cost about as much as running it.
_CONSULTED = (
    select(Recording)
    .join(Consultation, Consultation.recording_id == Recording.id)
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
    ) -> Recording | None:
        """The recording of that person's consultation, in one round trip."""
        params = {"consultation_id": consultation_id, "subject": subject,
                  "recording_id": recording_id}  # fmt: skip
        return await self.session.scalar(_CONSULTED, params)

    async def by_content(self, camera_id: uuid.UUID, sha256: str) -> Recording | None:
        statement = select(Recording).where(
            Recording.camera_id == camera_id, Recording.sha256 == sha256
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def lock_content(self, camera_id: uuid.UUID, sha256: str) -> None:
        """Serialise uploads of the same clip (released at the end of the transaction)."""
        key = func.hashtextextended(f"{camera_id}:{sha256}", 0)
        await self.session.execute(select(func.pg_advisory_xact_lock(key)))
