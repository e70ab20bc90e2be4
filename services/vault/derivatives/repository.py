"""Every query on derivatives (services/vault/derivatives/)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.derivatives.models import ACTIVE, Derivative, DerivativeStatus
from services.vault.recordings.models import Consultation, Recording, RecordingStatus
from shared.db import page


class DerivativeRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, organisation_id: uuid.UUID, derivative_id: uuid.UUID) -> Derivative | None:
        derivative = await self.session.get(Derivative, derivative_id)
        if derivative is None or derivative.organisation_id != organisation_id:
            return None
        return derivative

    async def for_update(self, derivative_id: uuid.UUID) -> Derivative | None:
        return await self.session.scalar(
            select(Derivative)
            .where(Derivative.id == derivative_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )

    async def recording_of(self, derivative_id: uuid.UUID) -> uuid.UUID | None:
        return await self.session.scalar(
            select(Derivative.recording_id).where(Derivative.id == derivative_id)
        )

    async def active_for(self, recording_id: uuid.UUID) -> Derivative | None:
        return await self.session.scalar(
            select(Derivative).where(
                Derivative.recording_id == recording_id, Derivative.status.in_(ACTIVE)
            )
        )

    async def search(
        self,
        organisation_id: uuid.UUID,
        *,
        recording_id: uuid.UUID | None,
        procedure_id: uuid.UUID | None,
        limit: int,
        offset: int,
    ) -> tuple[list[Derivative], int]:
        where: list[ColumnElement[bool]] = [Derivative.organisation_id == organisation_id]
        if recording_id is not None:
            where.append(Derivative.recording_id == recording_id)
        if procedure_id is not None:
            where.append(Derivative.procedure_id == procedure_id)
        return await page(
            self.session,
            Derivative,
            where,
            limit=limit,
            offset=offset,
            order_by=[Derivative.created_at.desc()],
        )

    async def consulted_by(self, derivative_id: uuid.UUID, subject: str) -> bool:
        found = await self.session.scalar(
            select(Consultation.id)
            .where(Consultation.derivative_id == derivative_id, Consultation.subject == subject)
            .limit(1)
        )
        return found is not None

    async def claim(self, stale_before: datetime) -> Derivative | None:
        """One job to run: waiting, or running under a worker whose heartbeat stopped (it
        died, or the vault restarted). Locked SKIP LOCKED: two workers never take one job."""
        return await self.session.scalar(
            select(Derivative)
            .where(
                or_(
                    Derivative.status == DerivativeStatus.en_attente.value,
                    and_(
                        Derivative.status == DerivativeStatus.en_cours.value,
                        or_(
                            Derivative.heartbeat_at.is_(None),
                            Derivative.heartbeat_at < stale_before,
                        ),
                    ),
                )
            )
            .order_by(Derivative.created_at)
            .limit(1)
            .with_for_update(skip_locked=True)
        )

    async def beat(
        self, derivative_id: uuid.UUID, attempt: int, now: datetime, done: int, total: int | None
    ) -> bool | None:
        """The worker's heartbeat and progress. None: the job is no longer this attempt's
        (another worker took it over, or it was erased); else whether a cancel was asked."""
        row = (
            await self.session.execute(
                update(Derivative)
                .where(
                    Derivative.id == derivative_id,
                    Derivative.attempt == attempt,
                    Derivative.status == DerivativeStatus.en_cours.value,
                )
                .values(heartbeat_at=now, frames_done=done, frames_total=total)
                .returning(Derivative.cancel_requested)
            )
        ).one_or_none()
        return None if row is None else bool(row[0])

    async def of_recording(self, recording_id: uuid.UUID) -> list[Derivative]:
        """A recording's copies that still hold a key or a job, locked (its erasure)."""
        rows = await self.session.scalars(
            select(Derivative)
            .where(Derivative.recording_id == recording_id, Derivative.erased_at.is_(None))
            .with_for_update()
        )
        return list(rows)

    async def of_erased_recordings(self, limit: int = 500) -> list[Derivative]:
        """Derivatives whose original was erased but which still hold a key or a job."""
        rows = await self.session.scalars(
            select(Derivative)
            .join(Recording, Recording.id == Derivative.recording_id)
            .where(
                Recording.status == RecordingStatus.erased.value,
                Derivative.erased_at.is_(None),
            )
            .limit(limit)
            .with_for_update(of=Derivative, skip_locked=True)
        )
        return list(rows)

    async def awaiting_object_deletion(self, limit: int = 500) -> list[Derivative]:
        rows = await self.session.scalars(
            select(Derivative)
            .where(
                Derivative.status == DerivativeStatus.efface.value,
                Derivative.object_key.is_not(None),
                Derivative.object_deleted_at.is_(None),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(rows)

    async def object_keys(self, keys: set[str]) -> set[str]:
        """Those of ``keys`` a derivative row names (registered, or its job's attempt)."""
        if not keys:
            return set()
        return set(
            await self.session.scalars(
                select(Derivative.object_key).where(Derivative.object_key.in_(keys))
            )
        )
