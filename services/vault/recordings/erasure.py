"""Automatic erasure at the end of the retention (L241-2, R241-13).

A recording past its `retain_until` that no open procedure holds is erased in one
transaction: its wrapped data key is destroyed (every copy of the sealed object becomes
unreadable at once), its registry row becomes a tombstone (metadata kept, status `erased`),
and its `effacement` entry is appended. The sealed object itself is deleted afterwards, as
soon as its S3 lock has expired; until then it is ciphertext nobody can open. A crash at any
point leaves each recording either untouched or erased with its entry; running the job again
only finishes what is left.

A recording past its retention but held by an open procedure is not erased: the refusal is
logged once (`effacement`, outcome `refused`), and it is erased once released.

Several erasers may run at once (the job of each vault process, `temoin erase`): each claims
the rows it acts on with `FOR UPDATE SKIP LOCKED`, so a recording is erased once, with one
entry, and the orphan sweep runs in one process at a time.

The job also deletes orphans: sealed objects for which no recording was ever registered, left
by a crash between the store's completion of an upload and the database's commit. Their data
key died with the request (or lies in an upload session that can no longer complete), the
dock kept the clip for want of a receipt and uploaded it again, so they hold nothing the
registry needs. Each is deleted once its lock allows. A fresh object is never taken for one:
every object is locked for at least `VAULT_MINIMUM_LOCK_S`, far longer than a registration.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Exists, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.procedures.models import Procedure, ProcedureRecording
from services.vault.recordings.models import Recording, RecordingStatus, UploadSession, UploadStatus
from services.vault.recordings.service import RECORDINGS_PREFIX
from shared import audit
from shared.audit import AuditAction, AuditEntry, Outcome
from shared.db import try_job_lock, utc_now
from shared.storage import ObjectStore

ACTOR = "temoin-vault:erasure"


@dataclass
class ErasureReport:
    erased: list[uuid.UUID] = field(default_factory=list)
    held: list[uuid.UUID] = field(default_factory=list)  # past retention, kept for a procedure
    objects_deleted: list[uuid.UUID] = field(default_factory=list)
    objects_locked: list[uuid.UUID] = field(default_factory=list)  # key gone, lock not yet
    orphans_deleted: list[str] = field(default_factory=list)  # object keys
    orphans_locked: list[str] = field(default_factory=list)


def _held() -> Exists:
    """Whether an open procedure holds the recording (a correlated EXISTS)."""
    return exists().where(
        ProcedureRecording.recording_id == Recording.id,
        ProcedureRecording.procedure_id == Procedure.id,
        Procedure.closed_at.is_(None),
    )


class ErasureService:
    def __init__(self, session: AsyncSession, store: ObjectStore) -> None:
        self.session = session
        self.store = store

    async def due(self, now: datetime, limit: int = 500) -> list[Recording]:
        rows = await self.session.scalars(
            select(Recording)
            .where(
                Recording.retain_until <= now,
                Recording.status != RecordingStatus.erased.value,
                ~_held(),
            )
            .order_by(Recording.retain_until)
            .limit(limit)
            .with_for_update(of=Recording, skip_locked=True)
        )
        return list(rows)

    async def held(self, now: datetime, *, not_yet_logged: bool) -> list[Recording]:
        statement = select(Recording).where(
            Recording.retain_until <= now,
            Recording.status != RecordingStatus.erased.value,
            _held(),
        )
        if not_yet_logged:
            statement = statement.where(Recording.erasure_refused_at.is_(None))
        statement = statement.with_for_update(of=Recording, skip_locked=True)
        return list(await self.session.scalars(statement))

    async def awaiting_object_deletion(self, limit: int = 500) -> list[Recording]:
        rows = await self.session.scalars(
            select(Recording)
            .where(
                Recording.status == RecordingStatus.erased.value,
                Recording.object_deleted_at.is_(None),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return list(rows)

    async def erase_due(self, now: datetime | None = None) -> ErasureReport:
        """Destroy the keys of every recording due, log each erasure and each new refusal
        (the caller commits: all of it or none)."""
        now = now or utc_now()
        report = ErasureReport()
        for recording in await self.due(now):
            recording.wrapped_key = None
            recording.status = RecordingStatus.erased.value
            recording.erased_at = now
            await self._log(recording, Outcome.success, {"retain_until": _iso(recording)})
            report.erased.append(recording.id)
        for recording in await self.held(now, not_yet_logged=True):
            recording.erasure_refused_at = now
            await self._log(
                recording,
                Outcome.refused,
                {"retain_until": _iso(recording), "reason": "held by an open procedure"},
            )
            report.held.append(recording.id)
        await self.session.flush()
        return report

    async def delete_objects(self, now: datetime | None = None) -> ErasureReport:
        """Delete the sealed objects of erased recordings whose lock has expired."""
        report = ErasureReport()
        for recording in await self.awaiting_object_deletion():
            if await self.store.delete_version(recording.object_key, recording.object_version):
                recording.object_deleted_at = now or utc_now()
                report.objects_deleted.append(recording.id)
            else:
                report.objects_locked.append(recording.id)
        await self.session.flush()
        return report

    async def orphans(self) -> list[tuple[str, str | None]]:
        """The versions of sealed objects that no recording and no open upload refers to."""
        versions = await self.store.list_versions(RECORDINGS_PREFIX)
        keys = {key for key, _ in versions}
        if not keys:
            return []
        registered = set(
            await self.session.scalars(
                select(Recording.object_key).where(Recording.object_key.in_(keys))
            )
        )
        uploading = set(
            await self.session.scalars(
                select(UploadSession.object_key).where(
                    UploadSession.object_key.in_(keys),
                    UploadSession.status.in_(
                        [UploadStatus.open.value, UploadStatus.completing.value]
                    ),
                )
            )
        )
        return [(k, v) for k, v in versions if k not in registered and k not in uploading]

    async def delete_orphans(self) -> ErasureReport:
        """Delete the orphans whose lock has expired (the others wait for a later run); one
        process at a time."""
        report = ErasureReport()
        if not await try_job_lock(self.session, "vault:orphan-sweep"):
            return report
        for key, version in await self.orphans():
            if await self.store.delete_version(key, version):
                report.orphans_deleted.append(key)
            else:
                report.orphans_locked.append(key)
        return report

    async def _log(self, recording: Recording, outcome: Outcome, details: dict[str, Any]) -> None:
        await audit.append(
            self.session,
            AuditEntry(
                action=AuditAction.effacement,
                service="vault",
                actor_subject=ACTOR,
                actor_role="system",
                organisation_id=recording.organisation_id,
                recording_ids=[recording.id],
                outcome=outcome,
                details={"sha256": recording.sha256, **details},
            ),
        )


def _iso(recording: Recording) -> str:
    return recording.retain_until.isoformat()
