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

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Exists, exists, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.audit.registry import (
    Attestor,
    Unattested,
    awaiting_the_log,
    histories,
    recording_differences,
)
from services.vault.audit.service import AuditLog, LogKeys
from services.vault.derivatives.models import (
    ACTIVE,
    DERIVATIVES_PREFIX,
    Derivative,
    DerivativeStatus,
)
from services.vault.derivatives.repository import DerivativeRepository
from services.vault.directory.models import Organisation
from services.vault.procedures.models import Procedure, ProcedureRecording
from services.vault.recordings.attested import note_divergence
from services.vault.recordings.models import Recording, RecordingStatus, UploadSession, UploadStatus
from services.vault.recordings.service import RECORDINGS_PREFIX
from shared import audit
from shared.audit import AuditAction, AuditEntry, Outcome, entries
from shared.db import try_job_lock, utc_now
from shared.signatures import public_key_of
from shared.storage import ObjectStore

ACTOR = "temoin-vault:erasure"
_logger = logging.getLogger("temoin.vault.erasure")


@dataclass
class ErasureReport:
    erased: list[uuid.UUID] = field(default_factory=list)
    held: list[uuid.UUID] = field(default_factory=list)  # past retention, kept for a procedure
    objects_deleted: list[uuid.UUID] = field(default_factory=list)
    objects_locked: list[uuid.UUID] = field(default_factory=list)  # key gone, lock not yet
    orphans_deleted: list[str] = field(default_factory=list)  # object keys
    orphans_locked: list[str] = field(default_factory=list)
    # The row said due (or erased), the log did not: kept, and alerted once.
    refused: list[uuid.UUID] = field(default_factory=list)
    derivatives_erased: list[uuid.UUID] = field(default_factory=list)  # anonymised copies
    derivative_objects_deleted: list[uuid.UUID] = field(default_factory=list)


def held_by_open_procedure() -> Exists:
    """Whether an open procedure holds the recording (a correlated EXISTS)."""
    return exists().where(
        ProcedureRecording.recording_id == Recording.id,
        ProcedureRecording.procedure_id == Procedure.id,
        Procedure.closed_at.is_(None),
    )


class ErasureService:
    """``log_keys``: the audit log's keys. Nothing is erased on the word of one column:
    before a key is destroyed or an object deleted, the log must attest that it may be
    (docs/threat-model.md), under a tree head this service signs and checks first."""

    # Recordings a pass claims at most (erased, objects deleted); replicas claim theirs apart.
    batch = 500

    def __init__(self, session: AsyncSession, store: ObjectStore, log_keys: LogKeys) -> None:
        self.session = session
        self.store = store
        self.log_keys = log_keys

    async def due(self, now: datetime) -> list[Recording]:
        rows = await self.session.scalars(
            select(Recording)
            .where(
                Recording.retain_until <= now,
                Recording.status != RecordingStatus.erased.value,
                ~held_by_open_procedure(),
            )
            .order_by(Recording.retain_until)
            .limit(self.batch)
            .with_for_update(of=Recording, skip_locked=True)
        )
        return list(rows)

    async def held(self, now: datetime, *, not_yet_logged: bool) -> list[Recording]:
        statement = select(Recording).where(
            Recording.retain_until <= now,
            Recording.status != RecordingStatus.erased.value,
            held_by_open_procedure(),
        )
        if not_yet_logged:
            statement = statement.where(Recording.erasure_refused_at.is_(None))
        statement = statement.with_for_update(of=Recording, skip_locked=True)
        return list(await self.session.scalars(statement))

    async def awaiting_object_deletion(self) -> list[Recording]:
        rows = await self.session.scalars(
            select(Recording)
            .where(
                Recording.status == RecordingStatus.erased.value,
                Recording.object_deleted_at.is_(None),
            )
            .limit(self.batch)
            .with_for_update(skip_locked=True)
        )
        return list(rows)

    async def erase_due(self, now: datetime | None = None) -> ErasureReport:
        """Destroy the keys of every recording due, log each erasure and each new refusal
        (the caller commits: all of it or none)."""
        now = now or utc_now()
        report = ErasureReport()
        copies = DerivativeRepository(self.session)
        for recording in await self.attested(await self.due(now), now, report):
            recording.wrapped_key = None
            recording.status = RecordingStatus.erased.value
            recording.erased_at = now
            details: dict[str, Any] = {"retain_until": _iso(recording)}
            erased_copies = self._erase_copies(await copies.of_recording(recording.id), now, report)
            if erased_copies:
                details["derivatives"] = erased_copies
            await self._log(recording, Outcome.success, details)
            report.erased.append(recording.id)
        # Any copy of a recording erased earlier that still holds its key (a crash between
        # the two is impossible, they share the transaction: this is a backstop).
        self._erase_copies(await copies.of_erased_recordings(), now, report)
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

    async def attested(
        self,
        candidates: list[Recording],
        now: datetime,
        report: ErasureReport,
        *,
        erased: bool = False,
    ) -> list[Recording]:
        """Those of ``candidates`` the log says may go: their facts as their `collecte` entry
        has them, their retention over by the log's date, no procedure holding them by the log
        (and, with ``erased``, their `effacement` entry in the log). Any other is refused,
        alerted once and kept (its key, its object)."""
        if not candidates:
            return []
        log = AuditLog(self.session, self.log_keys)
        await log.sequence_all()
        await log.sign_head()
        attestor = Attestor(self.session, public_key_of(self.log_keys.signing_key))
        try:
            await attestor.head()
        except Unattested as exc:
            _logger.error("erasure: nothing erased, the log cannot vouch for it: %s", exc)
            report.refused += [recording.id for recording in candidates]
            return []
        # A row ahead of the log (erased, released, by a transaction the log has not taken in
        # yet) is no divergence: a later pass decides.
        waiting = await awaiting_the_log(self.session, [r.id for r in candidates])
        candidates = [r for r in candidates if r.id not in waiting]
        logged = await histories(self.session, [r.id for r in candidates], attestor)
        retention = {
            organisation.id: organisation.retention_days
            for organisation in await self.session.scalars(
                select(Organisation).where(
                    Organisation.id.in_({r.organisation_id for r in candidates})
                )
            )
        }
        allowed = []
        for recording in candidates:
            history = logged[recording.id]
            # With ``erased``, the row says erased: the differences hold the log to it too.
            problems = recording_differences(recording, history, held_in_registry=False)
            until = history.retain_until(retention.get(recording.organisation_id, 30))
            if not erased and until is not None and until > now:
                problems.append(f"the log's retention runs until {until.isoformat()}")
            if problems:
                await note_divergence(
                    self.session, recording, "; ".join(problems), by=ACTOR, decision="kept"
                )
                report.refused.append(recording.id)
            else:
                allowed.append(recording)
        return allowed

    async def delete_objects(self, now: datetime | None = None) -> ErasureReport:
        """Delete the sealed objects of erased recordings whose lock has expired (erased by
        the log's word, not only the row's)."""
        report = ErasureReport()
        waiting = await self.awaiting_object_deletion()
        for recording in await self.attested(waiting, now or utc_now(), report, erased=True):
            if await self.store.delete_version(recording.object_key, recording.object_version):
                recording.object_deleted_at = now or utc_now()
                report.objects_deleted.append(recording.id)
            else:
                report.objects_locked.append(recording.id)
        for derivative in await DerivativeRepository(self.session).awaiting_object_deletion():
            assert derivative.object_key is not None
            if await self.store.delete_version(derivative.object_key, derivative.object_version):
                derivative.object_deleted_at = now or utc_now()
                report.derivative_objects_deleted.append(derivative.id)
        await self.session.flush()
        return report

    async def orphans(self) -> list[tuple[str, str | None]]:
        """The versions of sealed objects that no recording and no open upload refers to."""
        versions = await self.store.list_versions(RECORDINGS_PREFIX)
        # An anonymised copy's object, completed by a job that could not register it (it died,
        # or was cancelled at the last moment), is an orphan too.
        versions += await self.store.list_versions(DERIVATIVES_PREFIX)
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
        # A key the log saw collected is a recording's, even if its row is gone (deleted by
        # SQL): never an orphan (`temoin audit verify --registry` reports the missing row).
        collected = set(
            await self.session.scalars(
                select(entries.c.details["object_key"].astext).where(
                    entries.c.action == AuditAction.collecte.value,
                    entries.c.details["object_key"].astext.in_(keys),
                )
            )
        )
        derived = await DerivativeRepository(self.session).object_keys(keys)
        known = registered | uploading | collected | derived
        return [(k, v) for k, v in versions if k not in known]

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

    def _erase_copies(
        self, derivatives: list[Derivative], now: datetime, report: ErasureReport
    ) -> list[str]:
        """Never a copy left behind (R241-12, R241-13): an anonymised copy goes with its
        original, its key destroyed in the original's transaction (a job still making one is
        told to stop, and registers nothing: the runner finds the original erased)."""
        erased = []
        for derivative in derivatives:
            derivative.wrapped_key = None
            derivative.erased_at = now
            erased.append(str(derivative.id))
            if derivative.status in ACTIVE:
                derivative.cancel_requested = True
                continue
            derivative.status = DerivativeStatus.efface.value
            report.derivatives_erased.append(derivative.id)
        return erased

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
