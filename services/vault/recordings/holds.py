"""A hold the store itself keeps (issue 15). A procedure sets a legal hold on each recording it
holds, but whoever holds the storage credentials may lift a legal hold; once the clip's own
retention has ended, the clip would then be deletable while the registry still says « held ».
So, while a procedure holds a recording, its COMPLIANCE retention is also kept at least
`VAULT_HOLD_LOCK_DAYS` ahead, renewed `VAULT_HOLD_RENEW_DAYS` before it ends (lengthening a
COMPLIANCE retention is always allowed, shortening never).

The scrub then holds each recording's row and its object's protection in the store to the log:
a row that differs from its `collecte` entry (issue 15's registry check) and a store whose lock
or hold is not what the log says are alerted (once), and the protection restored."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.audit.registry import Authenticated, histories, recording_differences
from services.vault.procedures.models import Procedure, ProcedureRecording
from services.vault.recordings.attested import note_divergence
from services.vault.recordings.models import Recording, RecordingStatus
from services.vault.settings import VaultSettings
from shared import audit
from shared.audit import AuditAction, AuditEntry, Outcome
from shared.db import utc_now
from shared.storage import ObjectStore

MISMATCHES = Counter(
    "temoin_store_protection_mismatches_total",
    "Recordings whose lock or legal hold in the store was not what the log says (restored)",
)
_logger = logging.getLogger("temoin.vault.holds")


def _held_in_registry() -> object:
    return exists().where(
        ProcedureRecording.recording_id == Recording.id,
        ProcedureRecording.procedure_id == Procedure.id,
        Procedure.closed_at.is_(None),
    )


async def held_by_open_procedure(session: AsyncSession, recording_id: uuid.UUID) -> bool:
    row = await session.scalar(
        select(ProcedureRecording.procedure_id)
        .join(Procedure, Procedure.id == ProcedureRecording.procedure_id)
        .where(ProcedureRecording.recording_id == recording_id, Procedure.closed_at.is_(None))
        .limit(1)
    )
    return row is not None


class HoldService:
    def __init__(self, session: AsyncSession, store: ObjectStore, settings: VaultSettings) -> None:
        self.session = session
        self.store = store
        self.settings = settings

    def _lock_wanted(self, now: datetime) -> datetime:
        return now + timedelta(days=self.settings.hold_lock_days)

    def _lock_short(self, recording: Recording, now: datetime) -> bool:
        margin = now + timedelta(days=self.settings.hold_renew_days)
        return recording.locked_until is None or recording.locked_until < margin

    async def protect(self, recording: Recording, now: datetime | None = None) -> None:
        """What holding a recording takes in the store: its legal hold on, and its lock far
        enough ahead."""
        now = now or utc_now()
        if not recording.legal_hold:
            await self.store.set_legal_hold(recording.object_key, recording.object_version, True)
            recording.legal_hold = True
        if self._lock_short(recording, now):
            until = self._lock_wanted(now)
            await self.store.extend_retention(recording.object_key, recording.object_version, until)
            recording.locked_until = until

    async def release(self, recording: Recording) -> bool:
        """Lift the legal hold of a recording once no open procedure holds it any more (a
        procedure closed, or the recording detached from one); whether it was released. Call
        it after the change that ends the holding is flushed. Its COMPLIANCE lock stays as
        it was (it can only be lengthened): the key is destroyed when its retention ends,
        and the object deleted once the lock runs out (erasure.py)."""
        # Locked like attach locks it: an attach to another procedure committing meanwhile
        # would otherwise see the hold on and leave the store without it.
        await self.session.refresh(recording, with_for_update=True)
        if await held_by_open_procedure(self.session, recording.id):
            return False
        if recording.legal_hold and recording.status != RecordingStatus.erased.value:
            await self.store.set_legal_hold(recording.object_key, recording.object_version, False)
        recording.legal_hold = False
        return True

    async def renew(self, now: datetime | None = None, limit: int = 500) -> list[uuid.UUID]:
        """Lengthen the lock of every held recording whose lock ends within the margin."""
        now = now or utc_now()
        margin = now + timedelta(days=self.settings.hold_renew_days)
        rows = await self.session.scalars(
            select(Recording)
            .where(
                Recording.status != RecordingStatus.erased.value,
                _held_in_registry(),  # type: ignore[arg-type]
                (Recording.locked_until.is_(None)) | (Recording.locked_until < margin),
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        renewed = []
        for recording in rows:
            await self.protect(recording, now)
            renewed.append(recording.id)
        await self.session.flush()
        return renewed

    async def check(self, recordings: list[Recording], *, by: str) -> None:
        """Hold each recording's row and its protection in the store to the log."""
        live = [r for r in recordings if r.status != RecordingStatus.erased.value]
        if not live:
            return
        # From the entries the vault wrote only (their authenticators, as the extraction).
        authenticated = Authenticated(self.session, self.settings.writer_keys())
        logged = await histories(self.session, [r.id for r in live], authenticated)
        held = set(
            await self.session.scalars(
                select(ProcedureRecording.recording_id)
                .join(Procedure, Procedure.id == ProcedureRecording.procedure_id)
                .where(
                    Procedure.closed_at.is_(None),
                    ProcedureRecording.recording_id.in_([r.id for r in live]),
                )
            )
        )
        now = utc_now()
        for recording in live:
            history = logged[recording.id]
            differences = recording_differences(recording, history, recording.id in held)
            if differences:
                await note_divergence(
                    self.session, recording, "; ".join(differences), by=by, decision="reported"
                )
            else:
                recording.divergence_noted_at = None
            await self._check_store(recording, bool(history.holders), now, by)

    async def _check_store(self, recording: Recording, held: bool, now: datetime, by: str) -> None:
        until, legal_hold = await self.store.protection(
            recording.object_key, recording.object_version
        )
        problems = []
        if held and not legal_hold:
            problems.append("a procedure holds it, the store's legal hold is off")
        # S3 keeps retention dates to the second (SeaweedFS drops the fraction the vault set).
        wanted = recording.locked_until and recording.locked_until.replace(microsecond=0)
        if until is None or (wanted and until < wanted):
            problems.append(f"its lock ends {until}, the vault set {recording.locked_until}")
        elif held and until <= now:
            problems.append(f"a procedure holds it, its lock ended {until}")
        if not problems:
            return
        MISMATCHES.inc()
        _logger.error("recording %s: %s; restoring", recording.id, "; ".join(problems))
        if held:
            recording.legal_hold = False  # set again below, whatever the row said
            await self.protect(recording, now)
        elif recording.locked_until is not None and recording.locked_until > now:
            await self.store.extend_retention(
                recording.object_key, recording.object_version, recording.locked_until
            )
        await audit.append(
            self.session,
            AuditEntry(
                action=AuditAction.protection_mismatch,
                service="vault",
                actor_subject=by,
                actor_role="system",
                organisation_id=recording.organisation_id,
                recording_ids=[recording.id],
                outcome=Outcome.failed,
                details={"problems": problems},
            ),
        )
