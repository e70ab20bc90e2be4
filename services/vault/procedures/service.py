"""Procedures and the recordings they hold (R241-13: a recording used in a procedure follows
that procedure's rules, not the one-month erasure). While an open procedure holds a recording
its S3 object carries a legal hold, so not even the storage's owner can delete it; once no
open procedure holds it, the hold is lifted and its retention applies again."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.procedures import schemas
from services.vault.procedures.models import Procedure, ProcedureRecording
from services.vault.recordings.holds import HoldService
from services.vault.recordings.models import Recording, RecordingStatus
from services.vault.settings import VaultSettings
from shared import audit
from shared.access import OrgAccess
from shared.audit import AuditAction, AuditEntry
from shared.db import flush_or_conflict, page, utc_now
from shared.errors import Conflict, Gone, NotFound
from shared.storage import ObjectStore


class ProcedureService:
    def __init__(
        self,
        session: AsyncSession,
        store: ObjectStore,
        access: OrgAccess,
        settings: VaultSettings,
    ) -> None:
        self.session = session
        self.store = store
        self.access = access
        self.settings = settings
        self.org_id = access.organisation_id

    async def procedure(self, procedure_id: uuid.UUID) -> Procedure:
        procedure = await self.session.get(Procedure, procedure_id)
        if procedure is None or procedure.organisation_id != self.org_id:
            raise NotFound("no such procedure")
        return procedure

    async def recording(self, recording_id: uuid.UUID) -> Recording:
        recording = await self.session.get(Recording, recording_id)
        if recording is None or recording.organisation_id != self.org_id:
            raise NotFound("no such recording")
        return recording

    async def recording_ids(self, procedure_id: uuid.UUID) -> list[uuid.UUID]:
        rows = await self.session.scalars(
            select(ProcedureRecording.recording_id).where(
                ProcedureRecording.procedure_id == procedure_id
            )
        )
        return list(rows)

    async def recording_ids_of(
        self, procedure_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, list[uuid.UUID]]:
        """The recordings each procedure holds, for a whole page of procedures in one query."""
        found: dict[uuid.UUID, list[uuid.UUID]] = {p: [] for p in procedure_ids}
        if procedure_ids:
            rows = await self.session.execute(
                select(ProcedureRecording.procedure_id, ProcedureRecording.recording_id).where(
                    ProcedureRecording.procedure_id.in_(procedure_ids)
                )
            )
            for procedure_id, recording_id in rows:
                found[procedure_id].append(recording_id)
        return found

    async def holds(self, procedure_id: uuid.UUID, recording_id: uuid.UUID) -> bool:
        return (
            await self.session.get(ProcedureRecording, (procedure_id, recording_id))
        ) is not None

    async def search(
        self, *, open_only: bool, limit: int, offset: int
    ) -> tuple[list[Procedure], int]:
        where = [Procedure.organisation_id == self.org_id]
        if open_only:
            where.append(Procedure.closed_at.is_(None))
        return await page(
            self.session,
            Procedure,
            where,
            limit=limit,
            offset=offset,
            order_by=[Procedure.created_at.desc()],
        )

    async def open(self, data: schemas.ProcedureIn) -> Procedure:
        procedure = Procedure(
            id=uuid.uuid4(),
            organisation_id=self.org_id,
            type=data.type.value,
            reference=data.reference,
            description=data.description,
            opened_by=self.access.subject,
        )
        self.session.add(procedure)
        await flush_or_conflict(self.session, "a procedure of that type and reference exists")
        await self._log(procedure, [], event="opened")
        return procedure

    async def attach(self, procedure_id: uuid.UUID, data: schemas.AttachIn) -> Procedure:
        """Qualify a recording for the procedure: it is held (legal hold) from now on."""
        procedure = await self._for_update(procedure_id)
        if not procedure.is_open:
            raise Conflict("this procedure is closed")
        recording = await self.recording(data.recording_id)
        # Locked against the erasure job, which skips locked rows: a recording is either
        # erased before it is attached (410) or held from then on, never both.
        await self.session.refresh(recording, with_for_update=True)
        if recording.status == RecordingStatus.erased.value:
            raise Gone("this recording was erased at the end of its retention")
        if await self.holds(procedure.id, recording.id):
            raise Conflict("this recording is already attached to the procedure")
        # Held by the store itself: legal hold on, and its lock kept ahead (holds.py).
        await HoldService(self.session, self.store, self.settings).protect(recording)
        self.session.add(
            ProcedureRecording(
                procedure_id=procedure.id,
                recording_id=recording.id,
                qualification=data.qualification,
                attached_by=self.access.subject,
            )
        )
        await self.session.flush()
        await self._log(
            procedure, [recording.id], event="attached", qualification=data.qualification
        )
        return procedure

    async def detach(
        self, procedure_id: uuid.UUID, recording_id: uuid.UUID, data: schemas.DetachIn
    ) -> Procedure:
        """Detach a recording attached by mistake, or one the procedure no longer needs: its
        hold is lifted unless another open procedure holds it, and from then on it follows
        its retention again. A recording past its retention is not refused: it is erased by
        the next run of the erasure job, as it would be once the procedure closed: keeping it
        beyond the retention L241-2 sets, for a procedure that says it does not need it, has
        no ground. Its extractions stay what they were (logged, and counted in the report).
        A closed procedure's recordings cannot be detached: its history is frozen."""
        procedure = await self._for_update(procedure_id)
        if not procedure.is_open:
            raise Conflict("this procedure is closed")
        recording = await self.recording(recording_id)
        removed = await self.session.execute(
            delete(ProcedureRecording).where(
                ProcedureRecording.procedure_id == procedure.id,
                ProcedureRecording.recording_id == recording.id,
            )
        )
        if not removed.rowcount:  # type: ignore[attr-defined]
            raise NotFound("this recording is not attached to the procedure")
        released = await HoldService(self.session, self.store, self.settings).release(recording)
        await self._log(
            procedure,
            [recording.id],
            motif=data.motif,
            event="detached",
            released=released,
        )
        return procedure

    async def close(self, procedure_id: uuid.UUID) -> Procedure:
        """Close it, lifting the hold of each recording no other open procedure holds."""
        procedure = await self._for_update(procedure_id)
        if not procedure.is_open:
            raise Conflict("this procedure is already closed")
        procedure.closed_at = utc_now()
        procedure.closed_by = self.access.subject
        await self.session.flush()
        holds = HoldService(self.session, self.store, self.settings)
        released = []
        # In a steady order, so that two closings sharing recordings lock them alike.
        for recording_id in sorted(await self.recording_ids(procedure.id)):
            if await holds.release(await self.recording(recording_id)):
                released.append(recording_id)
        await self._log(procedure, released, event="closed")
        return procedure

    async def _for_update(self, procedure_id: uuid.UUID) -> Procedure:
        """The procedure, locked until the end of the transaction: its closing and a detach
        do not interleave (a closed procedure's history is frozen)."""
        procedure = await self.procedure(procedure_id)
        await self.session.refresh(procedure, with_for_update=True)
        return procedure

    async def _log(
        self,
        procedure: Procedure,
        recording_ids: list[uuid.UUID],
        motif: str | None = None,
        **details: Any,
    ) -> None:
        # Qualifying recordings for a procedure is a « modification » of their record.
        await audit.append(
            self.session,
            AuditEntry(
                action=AuditAction.modification,
                service="vault",
                actor_subject=self.access.subject,
                actor_role=self.access.role.value,
                organisation_id=self.org_id,
                recording_ids=recording_ids,
                motif=motif,
                procedure_ref=procedure.reference,
                details={"procedure": str(procedure.id), "type": procedure.type, **details},
            ),
        )
