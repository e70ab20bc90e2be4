"""Fixity (issue on the read path): every sealed object is re-read from time to time, every
chunk authenticated, the clip's SHA-256 recomputed and compared with the registry. A damaged
or missing object is flagged (status `damaged`, a metric, a `fixity_failure` audit entry, and
`GET .../recordings?status=damaged`) and from then on never served as valid."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from prometheus_client import Counter
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.vault.recordings.models import Recording, RecordingStatus
from services.vault.recordings.reading import Damaged, SealedReader
from services.vault.recordings.service import CollecteService
from services.vault.settings import VaultSettings
from shared import audit, sealing
from shared.audit import AuditAction, AuditEntry, Outcome
from shared.db import utc_now
from shared.storage import ObjectStore, StorageError

DAMAGED = Counter(
    "temoin_recordings_damaged_total", "Sealed recordings found damaged or missing by the scrub"
)
_logger = logging.getLogger("temoin.vault.fixity")


@dataclass
class FixityReport:
    checked: int = 0
    damaged: list[uuid.UUID] = field(default_factory=list)


class FixityService:
    def __init__(self, session: AsyncSession, store: ObjectStore, settings: VaultSettings) -> None:
        self.session = session
        self.store = store
        self.settings = settings

    async def problem(self, recording: Recording) -> str | None:
        """What is wrong with the recording's sealed object, or None."""
        assert recording.wrapped_key is not None
        expected_header = sealing.Header(recording.chunk_size, recording.id).to_bytes()
        try:
            header = await self.store.read_head(
                recording.object_key, recording.object_version, sealing.HEADER_SIZE
            )
        except StorageError as exc:
            return f"the sealed object cannot be read: {exc}"
        if header != expected_header:
            return "the sealed object's header is not this recording's"
        key = CollecteService(self.session, self.store, self.settings).unwrap(
            recording.wrapped_key, recording.kek_id, recording.id
        )
        digest = hashlib.sha256()
        size = 0
        try:
            async for piece in SealedReader(self.store, recording, key).chunks(0, recording.size):
                digest.update(piece)
                size += len(piece)
        except Damaged as exc:
            return str(exc)
        if size != recording.size or digest.hexdigest() != recording.sha256:
            return "the clip read back does not match the registry's SHA-256"
        return None

    async def scrub(
        self,
        *,
        checked_before: datetime | None = None,
        recording_ids: Sequence[uuid.UUID] | None = None,
        limit: int = 100,
    ) -> FixityReport:
        """Check sealed recordings not checked since ``checked_before`` (all, by default;
        or just ``recording_ids``), least recently checked first (the caller commits)."""
        now = utc_now()
        statement = select(Recording).where(Recording.status == RecordingStatus.sealed.value)
        if recording_ids is not None:
            statement = statement.where(Recording.id.in_(recording_ids))
        if checked_before is not None:
            statement = statement.where(
                or_(Recording.checked_at.is_(None), Recording.checked_at < checked_before)
            )
        statement = statement.order_by(Recording.checked_at.asc().nulls_first()).limit(limit)
        report = FixityReport()
        for recording in await self.session.scalars(statement):
            problem = await self.problem(recording)
            recording.checked_at = now
            report.checked += 1
            if problem is not None:
                await self._flag(recording, problem)
                report.damaged.append(recording.id)
        await self.session.flush()
        return report

    async def _flag(self, recording: Recording, problem: str) -> None:
        _logger.error("recording %s is damaged: %s", recording.id, problem)
        DAMAGED.inc()
        recording.status = RecordingStatus.damaged.value
        await audit.append(
            self.session,
            AuditEntry(
                action=AuditAction.fixity_failure,
                service="vault",
                actor_subject="temoin-vault:scrub",
                actor_role="system",
                organisation_id=recording.organisation_id,
                recording_ids=[recording.id],
                outcome=Outcome.failed,
                details={"problem": problem, "sha256": recording.sha256},
            ),
        )


def due_before(settings: VaultSettings) -> datetime:
    return utc_now() - timedelta(seconds=settings.scrub_interval_s)
