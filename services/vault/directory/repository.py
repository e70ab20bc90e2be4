"""Every directory query, each scoped to one organisation."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from services.vault.directory.models import (
    Agent,
    Camera,
    CameraAssignment,
    Commune,
    Habilitation,
    Organisation,
    Station,
    StationStatus,
)
from services.vault.recordings.models import Recording
from shared.db import page

T = TypeVar("T", Agent, Camera, CameraAssignment, Habilitation, Station)


class DirectoryRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def organisation(self, organisation_id: uuid.UUID) -> Organisation | None:
        statement = (
            select(Organisation)
            .where(Organisation.id == organisation_id)
            .options(selectinload(Organisation.communes))
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def communes_of_others(
        self, organisation_id: uuid.UUID, insee_codes: Sequence[str]
    ) -> list[str]:
        statement = select(Commune.insee_code).where(
            Commune.insee_code.in_(insee_codes), Commune.organisation_id != organisation_id
        )
        return list((await self.session.execute(statement)).scalars())

    async def get(
        self, model: type[T], organisation_id: uuid.UUID, entity_id: uuid.UUID
    ) -> T | None:
        statement = select(model).where(
            model.id == entity_id, model.organisation_id == organisation_id
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def page(
        self,
        model: type[T],
        organisation_id: uuid.UUID,
        *,
        limit: int,
        offset: int,
        filters: Sequence[ColumnElement[bool]] = (),
        order_by: Sequence[Any] = (),
    ) -> tuple[list[T], int]:
        where = [model.organisation_id == organisation_id, *filters]
        return await page(self.session, model, where, limit=limit, offset=offset, order_by=order_by)

    async def agent_by_matricule(self, organisation_id: uuid.UUID, matricule: str) -> Agent | None:
        statement = select(Agent).where(
            Agent.organisation_id == organisation_id, Agent.matricule == matricule
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def agent_by_subject(self, organisation_id: uuid.UUID, subject: str) -> Agent | None:
        statement = select(Agent).where(
            Agent.organisation_id == organisation_id, Agent.subject == subject
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def camera_by_serial(self, organisation_id: uuid.UUID, serial: str) -> Camera | None:
        statement = select(Camera).where(
            Camera.organisation_id == organisation_id, Camera.serial == serial
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def station_by_key(self, public_key: str) -> Station | None:
        statement = select(Station).where(Station.public_key == public_key)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def active_habilitation(self, agent_id: uuid.UUID) -> Habilitation | None:
        statement = select(Habilitation).where(
            Habilitation.agent_id == agent_id, Habilitation.withdrawn_at.is_(None)
        )
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def overlapping_assignment(
        self, camera_id: uuid.UUID, starts_at: datetime, ends_at: datetime | None
    ) -> CameraAssignment | None:
        """An assignment of the camera whose period meets [starts_at, ends_at)."""
        conditions = [
            CameraAssignment.camera_id == camera_id,
            or_(CameraAssignment.ends_at.is_(None), CameraAssignment.ends_at > starts_at),
        ]
        if ends_at is not None:
            conditions.append(CameraAssignment.starts_at < ends_at)
        statement = select(CameraAssignment).where(*conditions).limit(1)
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def stations(
        self,
        organisation_id: uuid.UUID,
        *,
        limit: int,
        offset: int,
        silent_since: datetime | None = None,
    ) -> tuple[list[tuple[Station, datetime | None]], int]:
        """A page of the stations by name, each with its last upload; ``silent_since``: only
        the active ones with no upload since then (never uploaded included)."""
        where: list[ColumnElement[bool]] = [Station.organisation_id == organisation_id]
        if silent_since is not None:
            where += [
                Station.status == StationStatus.active.value,
                ~exists().where(
                    Recording.station_id == Station.id, Recording.received_at >= silent_since
                ),
            ]
        total = (
            await self.session.execute(select(func.count()).select_from(Station).where(*where))
        ).scalar_one()
        statement = (
            select(Station, _LAST_UPLOAD)
            .where(*where)
            .order_by(Station.name, Station.id)
            .limit(limit)
            .offset(offset)
        )
        rows = (await self.session.execute(statement)).all()
        return [(station, last) for station, last in rows], total

    async def last_upload(self, station_id: uuid.UUID) -> datetime | None:
        statement = select(func.max(Recording.received_at)).where(
            Recording.station_id == station_id
        )
        return (await self.session.execute(statement)).scalar_one()


# Per station, a max that PostgreSQL reads from the end of the (station_id, received_at) index:
# one index probe each, however many clips the station sent.
_LAST_UPLOAD = (
    select(func.max(Recording.received_at))
    .where(Recording.station_id == Station.id)
    .correlate(Station)
    .scalar_subquery()
    .label("last_upload_at")
)
