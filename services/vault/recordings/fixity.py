"""Fixity: every sealed object is re-read from time to time, every chunk authenticated, the
clip's SHA-256 recomputed and compared with the registry.

Only evidence of damage flags a recording (status `damaged`, a metric, a `fixity_failure`
audit entry, `GET .../recordings?status=damaged`; never served as valid from then on): a
failed authentication tag (a chunk's or the wrapped data key's), a header that is not the
recording's, a missing or short object, a SHA-256 or size that differs. A store that does not
answer, or cuts a read, says nothing about the evidence: the recording is "not checked"
(a metric and a log line) and is tried again at a later pass. A recording flagged `damaged`
is checked again at every pass; once it checks, it returns to `sealed` with a
`fixity_restored` entry (a store that served a bad copy for a while, since repaired).

Work is claimed in the database (a lease on each recording, taken with `FOR UPDATE SKIP
LOCKED`), so several vault processes and `temoin scrub` share a pass without reading an
object twice, and no transaction stays open while objects are read.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum

from prometheus_client import Counter
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.vault.recordings.holds import HoldService
from services.vault.recordings.keys import unwrap_data_key
from services.vault.recordings.models import Recording, RecordingStatus
from services.vault.recordings.reading import Damaged, SealedReader
from services.vault.settings import VaultSettings
from shared import audit, sealing
from shared.audit import AuditAction, AuditEntry, Outcome
from shared.db import session_scope, utc_now
from shared.errors import ServiceUnavailable
from shared.storage import ObjectMissing, ObjectStore, StorageError

DAMAGED = Counter(
    "temoin_recordings_damaged_total", "Sealed recordings found damaged or missing by the scrub"
)
UNCHECKED = Counter(
    "temoin_fixity_unchecked_total",
    "Recordings the scrub could not check because the store failed (tried again later)",
)
_logger = logging.getLogger("temoin.vault.fixity")
ACTOR = "temoin-vault:scrub"
# Longer than a batch takes to read (20 clips of a few GiB); a process that dies holding a
# lease only delays those recordings to a later pass.
LEASE = timedelta(hours=1)
BATCH = 20


class Verdict(StrEnum):
    intact = "intact"
    damaged = "damaged"
    unchecked = "unchecked"  # the store failed: says nothing about the recording


@dataclass(frozen=True)
class Finding:
    recording_id: uuid.UUID
    verdict: Verdict
    problem: str = ""


@dataclass
class FixityReport:
    checked: int = 0  # read through, intact or damaged
    damaged: list[uuid.UUID] = field(default_factory=list)  # found damaged (flagged once)
    restored: list[uuid.UUID] = field(default_factory=list)  # flagged before, intact now
    unchecked: list[uuid.UUID] = field(default_factory=list)

    def add(self, other: FixityReport) -> None:
        self.checked += other.checked
        self.damaged += other.damaged
        self.restored += other.restored
        self.unchecked += other.unchecked


class FixityChecker:
    """Reads a recording's sealed object through: no database, no transaction."""

    def __init__(self, store: ObjectStore, settings: VaultSettings) -> None:
        self.store = store
        self.settings = settings

    async def check(self, recording: Recording) -> Finding:
        try:
            problem = await self._problem(recording)
        except Damaged as exc:
            problem = exc.problem
        except (StorageError, ServiceUnavailable) as exc:
            # The store failed (or the key-encryption key is not configured): not checked.
            return Finding(recording.id, Verdict.unchecked, str(exc))
        if problem is None:
            return Finding(recording.id, Verdict.intact)
        return Finding(recording.id, Verdict.damaged, problem)

    async def _problem(self, recording: Recording) -> str | None:
        """What is wrong with the recording's sealed object, or None."""
        if recording.wrapped_key is None:
            return None  # erased meanwhile: nothing to check
        expected_header = sealing.Header(recording.chunk_size, recording.id).to_bytes()
        try:
            header = await self.store.read_head(
                recording.object_key, recording.object_version, sealing.HEADER_SIZE
            )
        except ObjectMissing as exc:
            return f"the sealed object is missing: {exc}"
        if header != expected_header:
            return "the sealed object's header is not this recording's"
        key = unwrap_data_key(self.settings, recording.wrapped_key, recording.kek_id, recording.id)
        digest = hashlib.sha256()
        size = 0
        async for piece in SealedReader(self.store, recording, key).chunks(0, recording.size):
            digest.update(piece)
            size += len(piece)
        if size != recording.size or digest.hexdigest() != recording.sha256:
            return "the clip read back does not match the registry's SHA-256"
        return None


class FixityService:
    """The scrub's bookkeeping in the database (the caller commits)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def claim(
        self,
        *,
        checked_before: datetime | None,
        recording_ids: Sequence[uuid.UUID] | None = None,
        limit: int = BATCH,
    ) -> list[Recording]:
        """Take a lease on up to ``limit`` recordings due for a check (sealed or damaged, neither
        checked nor received since ``checked_before``, the longest unchecked first) that no
        other scrub holds."""
        now = utc_now()
        statement = select(Recording).where(
            Recording.status.in_([RecordingStatus.sealed.value, RecordingStatus.damaged.value]),
            or_(Recording.scrub_claimed_until.is_(None), Recording.scrub_claimed_until < now),
        )
        if recording_ids is not None:
            statement = statement.where(Recording.id.in_(recording_ids))
        # A recording never checked counts from its reception: its sealing already checked
        # every part (the store's CRC32C) and the clip's SHA-256, so its first re-read is due
        # an interval later. Counted from never, a vault started or scaled out at the end of
        # a shift would re-read every clip of the day while the docks upload (the first pass
        # after a start took the vault from 3.3 to 6.0 CPU-s per GiB in `make bench-scale`).
        last = func.coalesce(Recording.checked_at, Recording.received_at)
        if checked_before is not None:
            statement = statement.where(last < checked_before)
        statement = statement.order_by(last.asc()).limit(limit).with_for_update(skip_locked=True)
        claimed = list(await self.session.scalars(statement))
        for recording in claimed:
            recording.scrub_claimed_until = now + LEASE
        await self.session.flush()
        return claimed

    async def record(self, findings: Sequence[Finding]) -> FixityReport:
        """What the checks found: flag the damaged, restore the intact, release the leases."""
        report = FixityReport()
        if not findings:
            return report
        now = utc_now()
        rows = await self.session.scalars(
            select(Recording)
            .where(Recording.id.in_([f.recording_id for f in findings]))
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        by_id = {recording.id: recording for recording in rows}
        for finding in findings:
            recording = by_id.get(finding.recording_id)
            if recording is None:
                continue
            recording.scrub_claimed_until = None
            if recording.status == RecordingStatus.erased.value:
                continue  # erased while it was read
            if finding.verdict == Verdict.unchecked:
                report.unchecked.append(recording.id)
                continue
            recording.checked_at = now
            report.checked += 1
            if finding.verdict == Verdict.damaged:
                report.damaged.append(recording.id)
                if recording.status != RecordingStatus.damaged.value:
                    await self._flag(recording, finding.problem)
            elif (
                finding.verdict == Verdict.intact
                and recording.status == RecordingStatus.damaged.value
            ):
                await self._restore(recording)
                report.restored.append(recording.id)
        if report.unchecked:
            UNCHECKED.inc(len(report.unchecked))
            problem = next(f.problem for f in findings if f.verdict == Verdict.unchecked)
            _logger.warning(
                "fixity scrub: %d recording(s) not checked, the store could not be read (%s); "
                "they will be checked at a later pass",
                len(report.unchecked),
                problem,
            )
        await self.session.flush()
        return report

    async def _flag(self, recording: Recording, problem: str) -> None:
        _logger.error("recording %s is damaged: %s", recording.id, problem)
        DAMAGED.inc()
        recording.status = RecordingStatus.damaged.value
        await self._log(recording, AuditAction.fixity_failure, Outcome.failed, problem)

    async def _restore(self, recording: Recording) -> None:
        _logger.warning("recording %s, flagged damaged, checks again: restored", recording.id)
        recording.status = RecordingStatus.sealed.value
        await self._log(recording, AuditAction.fixity_restored, Outcome.success, None)

    async def _log(
        self, recording: Recording, action: AuditAction, outcome: Outcome, problem: str | None
    ) -> None:
        details = {"sha256": recording.sha256}
        if problem is not None:
            details["problem"] = problem
        await audit.append(
            self.session,
            AuditEntry(
                action=action,
                service="vault",
                actor_subject=ACTOR,
                actor_role="system",
                organisation_id=recording.organisation_id,
                recording_ids=[recording.id],
                outcome=outcome,
                details=details,
            ),
        )


async def scrub(
    sessionmaker: async_sessionmaker[AsyncSession],
    store: ObjectStore,
    settings: VaultSettings,
    *,
    checked_before: datetime | None,
    recording_ids: Sequence[uuid.UUID] | None = None,
    batch_size: int = BATCH,
) -> FixityReport:
    """One pass: claim a batch, read it with no transaction open, record what was found; until
    nothing is due, or the store fails (the rest waits for a later pass)."""
    checker = FixityChecker(store, settings)
    report = FixityReport()
    while True:
        async with session_scope(sessionmaker) as session:
            batch = await FixityService(session).claim(
                checked_before=checked_before, recording_ids=recording_ids, limit=batch_size
            )
        if not batch:
            return report
        findings = [await checker.check(recording) for recording in batch]
        async with session_scope(sessionmaker) as session:
            found = await FixityService(session).record(findings)
        report.add(found)
        if found.unchecked:
            return report
        # The row and the store's protection of each, held to the log (holds.py).
        try:
            async with session_scope(sessionmaker) as session:
                rows = await session.scalars(
                    select(Recording)
                    .where(Recording.id.in_([r.id for r in batch]))
                    .with_for_update()
                )
                await HoldService(session, store, settings).check(list(rows), by=ACTOR)
        except StorageError as exc:
            _logger.warning("fixity scrub: protections not checked, the store failed: %s", exc)
            return report


def due_before(settings: VaultSettings) -> datetime:
    return utc_now() - timedelta(seconds=settings.scrub_interval_s)
